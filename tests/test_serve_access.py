"""What a client sees of the service beyond scoring: browser formats and bad audio (issue
cases 1, 3, 5, 6), text as learners type it (case 4), API keys, rate limit and CORS (case
8), the metrics, the learner's page and the API docs without a CDN."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import audio_inputs  # noqa: E402
from serve_helpers import FakeModel, LiveServer, wav_bytes  # noqa: E402

KEY = "k" * 24


@pytest.fixture(scope="module")
def live(tiny_processor):
    from apa.serve import create_app

    app = create_app(None, tiny_processor, model_name="fake", score_fn=FakeModel(calls_per_word=1), max_wait_ms=5)
    with LiveServer(app) as server:
        yield server


def score(url, text, data, name="a.wav", **kwargs):
    return httpx.post(url + "/score", data={"text": text}, files={"audio": (name, data)}, timeout=30, **kwargs)


@pytest.mark.parametrize("name", ["webm_opus_live", "mp4_aac_fragmented", "ogg_opus", "mp3", "flac"])
def test_browser_and_phone_recordings_are_scored(live, name):
    response = score(live.url, "We call it bear.", audio_inputs.recording(name), name=f"rec.{name}")
    assert response.status_code == 200, response.text
    assert response.json()["text"] == "WE CALL IT BEAR"


@pytest.mark.parametrize("data, status, message", [
    (b"not audio at all" * 20, 415, "cannot decode a.wav: invalid data found when processing input"),
    (audio_inputs.wav_claiming_rate(1), 422, "sample rate of 1 Hz; at least 8000 Hz is needed"),
    (audio_inputs.without_length(audio_inputs.flac_silence(600)), 422, "longer than 30 s"),
    (audio_inputs.float_wav(np.full(16000, np.nan)), 422, "holds NaN or infinite samples"),
    (wav_bytes(0.3 * np.sin(np.arange(800) / 5)), 422, "is 0.05 s long; at least 0.2 s is needed"),
    (wav_bytes(np.zeros(16000)), 422, "is silent"),
])
def test_bad_audio_is_refused_with_its_reason(live, data, status, message):
    response = score(live.url, "the book", data)
    assert response.status_code == status and message in response.json()["error"], response.text
    assert "0x" not in response.text and "BytesIO" not in response.text


def test_text_as_learners_type_it(live, make_sine):
    clip = wav_bytes(make_sine(1.0))
    result = score(live.url, "Hello,world! I have 3 cats \u2014 Lynda\u2019s, and Zelenskyy's.", clip).json()
    assert result["text"] == "HELLO WORLD I HAVE THREE CATS LYNDA'S AND ZELENSKYY'S"
    assert result["input_text"].startswith("Hello,world!")
    guessed = {w["word"]: w["guessed"] for w in result["words"]}
    assert guessed["LYNDA'S"] is False  # LYNDA from CMUdict + Z
    assert guessed["ZELENSKYY'S"] is True and guessed["CATS"] is False
    for text, message in [("", "missing or empty form field 'text'"), ("  ", "the text is empty"),
                          ("the 你好", "no pronunciation is known for: 你好; check the spelling or use other words")]:
        response = score(live.url, text, clip)
        assert response.status_code == 422 and message in response.json()["error"], response.text
        assert "--lexicon" not in response.text  # a server option the client cannot set
    response = httpx.post(live.url + "/score", files={"audio": ("a.wav", clip)})
    assert response.status_code == 422 and "missing or empty form field 'text'" in response.json()["error"]


def test_so762_test_texts_are_all_pronounced():
    """17 of the 2,500 SO762 test texts (LYNDA'S ...) were refused with CMUdict alone."""
    root = Path(__file__).resolve().parents[2] / "shared" / "so762" / "test" / "text"
    if not root.is_file():
        pytest.skip("speechocean762 is not at ../shared/so762")
    from apa.inference.score import text_to_reference

    guessed = set()
    for line in root.read_text().splitlines():
        reference = text_to_reference(line.split(maxsplit=1)[1])
        guessed |= {w.text for w, g in zip(reference.utt.words, reference.guessed) if g}
    assert "LYNDA'S" not in guessed  # a possessive of a CMUdict word is not a guess
    assert len(guessed) < 17


def test_api_keys_rate_limit_and_cors(tiny_processor, make_sine):
    from apa.serve import create_app

    app = create_app(None, tiny_processor, score_fn=FakeModel(calls_per_word=1), max_wait_ms=5,
                     api_keys={KEY: "school"}, rate_limit=2, cors_origins=["https://app.example.org"])
    clip = wav_bytes(make_sine(1.0))
    with LiveServer(app) as live:
        assert score(live.url, "the book", clip).status_code == 401
        wrong = score(live.url, "the book", clip, headers={"Authorization": "Bearer " + "x" * 24})
        assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]
        assert score(live.url, "the book", clip, headers={"X-API-Key": KEY}).status_code == 200
        assert score(live.url, "the book", clip, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        limited = score(live.url, "the book", clip, headers={"X-API-Key": KEY})
        assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 30
        assert httpx.get(live.url + "/metrics").status_code == 401
        assert httpx.get(live.url + "/metrics", headers={"X-API-Key": KEY}).status_code == 200
        assert httpx.get(live.url + "/health").status_code == 200 and httpx.get(live.url + "/").status_code == 200
        preflight = {"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization"}
        allowed = httpx.options(live.url + "/score", headers=preflight)
        assert allowed.headers.get("access-control-allow-origin") == "https://app.example.org"
        other = httpx.options(live.url + "/score", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_api_keys_from_a_file_and_the_environment(tmp_path):
    from apa.errors import ApaError
    from apa.serve.access import load_api_keys

    path = tmp_path / "keys.txt"
    path.write_text(f"# who key\nschool {KEY}\n{'z' * 20}\n")
    assert load_api_keys(path, {"APA_API_KEYS": f"{'e' * 16}, "}) == {KEY: "school", "z" * 20: "key3",
                                                                      "e" * 16: "env1"}
    assert load_api_keys(None, {}) == {}
    with pytest.raises(ApaError, match="at least 16"):
        load_api_keys(None, {"APA_API_KEYS": "short"})


def test_metrics_in_the_prometheus_format(live, make_sine):
    score(live.url, "the book", wav_bytes(make_sine(1.0)))
    score(live.url, "the book", b"junk" * 10)
    text = httpx.get(live.url + "/metrics").text
    for name in ["apa_http_requests_total{route=\"/score\",status=\"200\"}", "apa_http_request_duration_seconds_bucket",
                 "apa_batch_size_bucket{lane=\"short\"", "apa_batch_model_calls_bucket", "apa_queue_depth{lane=\"long\"}",
                 "apa_refusals_total{reason=\"audio_format\"}", "process_resident_memory_bytes"]:
        assert name in text, name
    from prometheus_client.parser import text_string_to_metric_families

    assert {f.name for f in text_string_to_metric_families(text)} >= {"apa_http_requests", "apa_batch_size"}


def test_the_page_and_the_docs_load_nothing_from_outside(live):
    page = httpx.get(live.url + "/")
    assert page.status_code == 200 and "Pronunciation practice" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert httpx.get(live.url + asset).status_code == 200
    docs = httpx.get(live.url + "/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in docs
    assert httpx.get(live.url + "/docs-assets/swagger-ui-bundle.js").status_code == 200
    for text in (page.text, docs, httpx.get(live.url + "/static/app.js").text):
        assert "cdn" not in text.lower() and "https://" not in text

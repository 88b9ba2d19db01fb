"""The service's second round (issue 17): no 5xx from any input and a 500 that is counted,
access and limits that cannot be dodged, an exact contract (codes, schema, security
headers), a slow body answered 408, and the model pronunciation at ``GET /speak``."""

from __future__ import annotations

import io
import logging
import socket
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serve_helpers import FakeModel, LiveServer, wav_bytes  # noqa: E402

KEY = "k" * 24


def app_with(processor, **kwargs):
    from apa.serve import create_app

    return create_app(None, processor, model_name="/srv/models/private-path", max_wait_ms=1,
                      score_fn=FakeModel(calls_per_word=1), **kwargs)


def post(url, text, data, headers=None):
    return httpx.post(url + "/score", data={"text": text}, files={"audio": ("a.wav", data)}, headers=headers,
                      timeout=30)


def test_an_unexpected_error_is_a_500_counted_in_metrics_and_logged_once(tiny_processor, make_sine, monkeypatch,
                                                                         caplog):
    import apa.serve.app

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    app = app_with(tiny_processor)
    monkeypatch.setattr(apa.serve.app, "Recording", broken)  # a bug after the checks, before the model
    with LiveServer(app) as live, caplog.at_level(logging.INFO):
        response = post(live.url, "the book", wav_bytes(make_sine(0.5)))
        metrics = httpx.get(live.url + "/metrics").text
    assert response.status_code == 500 and response.json()["code"] == "internal", response.text
    assert "RuntimeError" not in response.text  # the log has the traceback, the client a message
    assert 'apa_http_requests_total{route="/score",status="500"} 1.0' in metrics
    assert 'apa_refusals_total{reason="internal"} 1.0' in metrics
    logged = [r for r in caplog.records if r.exc_info or "Exception in ASGI" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]


def test_refused_requests_give_their_token_back_and_wrong_keys_are_limited(tiny_processor, make_sine):
    from apa.serve.access import FAILED_KEYS_PER_MINUTE

    clip = wav_bytes(make_sine(0.5))
    with LiveServer(app_with(tiny_processor, api_keys={KEY: "alice"}, rate_limit=2)) as live:
        good = {"Authorization": f"Bearer {KEY}"}
        for _ in range(4):  # refused for their content: no token spent
            assert post(live.url, "  ", clip, good).status_code == 422
        assert [post(live.url, "the book", clip, good).status_code for _ in range(3)] == [200, 200, 429]
        health = httpx.get(live.url + "/health").json()
        assert health["model"] is None  # a path says where the server's files are
        wrong = {"X-API-Key": "w" * 24}
        statuses = [post(live.url, "the book", clip, wrong).status_code for _ in range(FAILED_KEYS_PER_MINUTE + 1)]
        assert statuses == [401] * FAILED_KEYS_PER_MINUTE + [429]
        refused = post(live.url, "the book", clip, good)  # guessing stopped: even the right key waits
        assert refused.status_code == 429 and refused.json()["code"] == "key_attempts"
        assert int(refused.headers["Retry-After"]) >= 1


def test_rate_limit_zero_is_an_error_not_off(tiny_processor):
    from apa.errors import ApaError

    with pytest.raises(ApaError, match="--rate-limit must be positive, got 0"):
        app_with(tiny_processor, rate_limit=0)


def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(tiny_processor, make_sine):
    from apa.serve.server import make_server

    clip = wav_bytes(make_sine(0.5))
    for trusted, second in (((), 429), (("127.0.0.1",), 200)):
        app = app_with(tiny_processor, rate_limit=1)
        with LiveServer(app, make_server(app, log_level="warning", trusted_proxies=trusted)) as live:
            assert post(live.url, "the book", clip, {"X-Forwarded-For": "203.0.113.1"}).status_code == 200
            assert post(live.url, "the book", clip, {"X-Forwarded-For": "203.0.113.2"}).status_code == second


def test_contract_schema_codes_and_security_headers(tiny_processor):
    from apa.serve.answers import ERROR_CODES
    from apa.tasks import TASKS

    with LiveServer(app_with(tiny_processor)) as live:
        schema = httpx.get(live.url + "/openapi.json").json()
        page = httpx.get(live.url + "/")
        health = httpx.get(live.url + "/health")
        script = httpx.get(live.url + "/static/app.js")
    body = schema["components"]["schemas"]["Body_score_score_post"]
    assert set(body["required"]) == {"audio", "text"}
    task = body["properties"]["task"]["anyOf"][0]
    assert task["enum"] == list(TASKS)
    assert schema["components"]["schemas"]["ErrorResponse"]["properties"]["code"]["enum"] == list(ERROR_CODES)
    assert set(schema["components"]["schemas"]["ErrorResponse"]["required"]) == {"error", "code"}
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert "<script>" not in page.text and "style=" not in page.text and "onclick" not in page.text
    for response in (page, health, script):
        assert response.headers["x-content-type-options"] == "nosniff"


def test_a_full_queue_answers_before_the_upload_is_decoded(tiny_processor):
    app = app_with(tiny_processor)
    with LiveServer(app) as live:
        app.state.scheduler.max_queue = 0
        response = post(live.url, "the book", b"not audio at all" * 100)  # would be 415 once decoded
    assert response.status_code == 503 and response.json()["code"] == "busy"


def test_a_slow_body_gets_408(tiny_processor):
    from apa.serve.server import make_server

    app = app_with(tiny_processor)
    with LiveServer(app, make_server(app, read_timeout_s=1.0, log_level="warning")) as live:
        with socket.create_connection(("127.0.0.1", live.port)) as sock:
            sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=z\r\n"
                         b"Content-Length: 100000\r\n\r\n--z\r\n")
            sock.settimeout(10)
            started = time.monotonic()
            received = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
    assert received.startswith(b"HTTP/1.1 408"), received[:120]
    assert time.monotonic() - started < 5


def test_speak_says_the_text_as_speech_length_audio(tiny_processor):
    pytest.importorskip("espeakng_loader")
    import soundfile as sf

    with LiveServer(app_with(tiny_processor)) as live:
        sentence = httpx.get(live.url + "/speak", params={"text": "I like to read books in the morning."})
        word = httpx.get(live.url + "/speak", params={"text": "morning"})
        nothing = httpx.get(live.url + "/speak", params={"text": "  ,  "})
        number = httpx.get(live.url + "/speak", params={"text": "9" * 100})
    assert sentence.status_code == 200 and sentence.headers["content-type"] == "audio/wav"
    samples, rate = sf.read(io.BytesIO(sentence.content))
    seconds = len(samples) / rate
    # eight words at 140 words a minute is 3.4 s; eSpeak's pauses and word lengths vary it
    assert 1.5 < seconds < 6.0, seconds
    frames = samples[: len(samples) // 400 * 400].reshape(-1, 400)
    voiced = (np.sqrt((frames ** 2).mean(axis=1)) > 0.02).mean()
    assert voiced > 0.4, voiced  # speech, not a click or silence
    word_seconds = len(sf.read(io.BytesIO(word.content))[0]) / rate
    assert 0.2 < word_seconds < seconds / 3
    assert nothing.status_code == 422 and nothing.json()["code"] == "text_empty"
    assert number.status_code == 422 and number.json()["code"] == "text"


def test_every_error_code_is_documented():
    from pathlib import Path

    from apa.serve.answers import ERROR_CODES

    method = (Path(__file__).resolve().parents[1] / "docs" / "method.md").read_text(encoding="utf-8")
    for code, (status, _) in ERROR_CODES.items():
        assert f"| `{code}` | {status} |" in method, code

"""The HTTP service (apa.serve): a real uvicorn server on 127.0.0.1 with the tiny model,
hit by concurrent clients; batching, isolation of failures, limits, error messages."""

from __future__ import annotations

import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from apa.inference.score import score_prepared, score_recordings  # noqa: E402
from serve_helpers import LiveServer, wav_bytes  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import audio_inputs  # noqa: E402

FAILING_TEXT = "I SEE A ZEBRA"  # the test scorer raises on it, as a model error would
MAX_UPLOAD_MB = 0.25


@pytest.fixture(scope="module")
def live(tiny_model):
    from apa.serve import create_app

    model, processor = tiny_model

    def scorer(recordings, task, between_calls=None):
        if any(r.utt.text == FAILING_TEXT for r in recordings):
            raise RuntimeError("simulated model failure")
        return score_prepared(model, processor, recordings, task, "constrained", between_calls=between_calls)

    app = create_app(model, processor, model_name="tiny", max_batch=8, max_wait_ms=100,
                     max_upload_mb=MAX_UPLOAD_MB, score_fn=scorer)
    with LiveServer(app) as server:
        yield server


def test_concurrent_requests_batched_isolated_and_identical(live, tiny_model, make_sine):
    model, processor = tiny_model
    # (audio, text, task) cases; the last one fails inside the model call
    cases = [(make_sine(0.8, 220.0), "The book.", None), (make_sine(0.5, 330.0), "I like it", None),
             (make_sine(0.6, 440.0), "We see", "word_accuracy"), (make_sine(0.5, 250.0), "I see a zebra", None)]
    uploads = [wav_bytes(audio) for audio, _, _ in cases]
    from apa.data.audio import decode_audio_bytes

    # one-by-one results on exactly what the server decodes (16-bit WAV, not the float clip)
    expected = [score_recordings(model, processor, [(decode_audio_bytes(upload), text)], task=task or "multi")[0]
                for upload, (_, text, task) in zip(uploads, cases[:3])]

    def post(i: int):
        k = i % len(cases)
        data = {"text": cases[k][1]}
        if cases[k][2]:
            data["task"] = cases[k][2]
        with httpx.Client(base_url=live.url, timeout=60) as client:
            response = client.post("/score", data=data, files={"audio": (f"clip{k}.wav", uploads[k], "audio/wav")})
        return k, response

    before = httpx.get(live.url + "/health").json()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(post, range(24)))
    assert len(answers) == 24  # none lost
    for k, response in answers:
        if k == 3:
            assert response.status_code == 500
            assert "simulated model failure" in response.json()["error"]
            continue
        assert response.status_code == 200, response.text
        result = response.json()
        # the batch gives what one-by-one scoring gives (expected scores up to float summation order)
        assert _same(result, expected[k])
        assert result["problems"] == []
    health = httpx.get(live.url + "/health").json()
    assert health["ok"] is True and health["queue_size"] == 0
    assert health["scored"] - before["scored"] == 18
    assert health["batches"] - before["batches"] < 24  # requests were gathered into batches


def test_bad_requests_get_4xx_with_messages(live, make_sine):
    ok = wav_bytes(make_sine(0.5))
    big = wav_bytes(np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 10))  # ~320 KB > 0.25 MiB
    bad = [  # (fields, upload, status, message, code)
        ({"text": "the book"}, None, 422, "missing form field 'audio'", "missing_field"),
        ({}, ("a.wav", ok), 422, "missing or empty form field 'text'", "text_missing"),
        ({"text": ""}, ("a.wav", ok), 422, "missing or empty form field 'text'", "text_missing"),
        ({"text": "the 你好 book and ЖЖЖ"}, ("a.wav", ok), 422,
         "no pronunciation is known for: 你好, ЖЖЖ; check the spelling or use other words", "unknown_words"),
        ({"text": "the book", "task": "poetry"}, ("a.wav", ok), 422, "unknown task 'poetry'", "task"),
        ({"text": "   "}, ("a.wav", ok), 422, "the text is empty", "text_empty"),
        ({"text": "I owe " + "9" * 400}, ("a.wav", ok), 422, "a 400-digit number", "text"),
        ({"text": " ".join(["internationalization"] * 60)}, ("a.wav", ok), 422,
         "scores under the multi task; at most 500 are given in one request (the cost limit", "too_costly"),
        ({"text": "the book"}, ("a.wav", b""), 422, "empty (0 bytes)", "audio_empty"),
        ({"text": "the book"}, ("a.wav", b"definitely not audio" * 50), 415,
         "cannot decode a.wav: invalid data found when processing input; give WAV, FLAC", "audio_format"),
        ({"text": "the book"}, ("tag.wav", audio_inputs.wav_with_format(0x1234)), 415, "unknown encoding",
         "audio_format"),
        ({"text": "the book"}, ("bits.wav", audio_inputs.wav_with_format(1, 0)), 415, "unknown encoding",
         "audio_format"),
        ({"text": "the book"}, ("loud.wav", audio_inputs.float_wav(make_sine(0.5) * 1e19)), 422,
         "times full scale", "audio_out_of_range"),
        ({"text": "the book"}, ("s.wav", wav_bytes(np.zeros(16000))), 422, "silent", "audio_silent"),
        ({"text": "the book"}, ("long.flac", wav_bytes(make_sine(31.0), fmt="FLAC")), 422,
         "is 31.0 s long; the model hears at most 30 s", "audio_too_long"),
        ({"text": "the book"}, ("big.wav", big), 413, "big.wav is larger than 0.25 MiB", "too_large"),
        ({"text": "the book"}, ("huge.wav", big + big), 413, "request body is larger than", "too_large"),
    ]
    with httpx.Client(base_url=live.url, timeout=30) as client:
        for data, upload, status, message, code in bad:
            files = {"audio": (upload[0], upload[1], "application/octet-stream")} if upload else None
            response = client.post("/score", data=data, files=files)
            assert response.status_code == status, (data, response.text)
            assert message in response.json()["error"] and response.json()["code"] == code, response.json()
        # not multipart at all; a body without Content-Length that grows past the limit
        response = client.post("/score", json={"text": "the book"})
        assert response.status_code == 422 and "multipart/form-data" in response.json()["error"]

        def chunks():  # a well-formed multipart body, streamed (chunked: no Content-Length)
            yield (b'--zzz\r\nContent-Disposition: form-data; name="text"\r\n\r\nthe book\r\n'
                   b'--zzz\r\nContent-Disposition: form-data; name="audio"; filename="big.wav"\r\n'
                   b"Content-Type: audio/wav\r\n\r\n")
            for start in range(0, 2 * len(big), 16384):  # twice the limit
                yield (big + big)[start:start + 16384]
            yield b"\r\n--zzz--\r\n"

        response = client.post("/score", content=chunks(),
                               headers={"content-type": "multipart/form-data; boundary=zzz"})
        assert response.status_code == 413 and "request body is larger than" in response.json()["error"]
        assert client.get("/nowhere").json() == {"error": "Not Found", "code": "not_found"}
        # a cut upload is scored, and the result says so
        cut = audio_inputs.truncated(wav_bytes(make_sine(2.0), fmt="FLAC"))
        response = client.post("/score", data={"text": "the book"}, files={"audio": ("cut.flac", cut)})
        assert response.status_code == 200 and "the recording ends early" in response.json()["problems"][0]

        # still alive and correct afterwards
        assert client.get("/health").json()["ok"] is True
        response = client.post("/score", data={"text": "the book"}, files={"audio": ("a.wav", ok)})
        assert response.status_code == 200 and response.json()["text"] == "THE BOOK"


def test_health_and_openapi(live):
    health = httpx.get(live.url + "/health").json()
    assert health["ok"] is True and health["model"] == "tiny"
    assert "multi" in health["tasks"] and health["default_task"] == "multi"
    assert health["decoding"] == "constrained" and health["max_batch"] == 8
    schema = httpx.get(live.url + "/openapi.json").json()
    assert "post" in schema["paths"]["/score"] and "get" in schema["paths"]["/health"]
    ok = schema["paths"]["/score"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/ScoreResult"}
    components = schema["components"]["schemas"]
    assert {"ScoreResult", "WordResult", "AspectScore", "PhoneScore", "Practice", "ErrorResponse"} <= set(components)
    assert components["AspectScore"]["properties"]["expected"]["description"].startswith("Expected score")


def test_create_app_rejects_bad_settings(tiny_model):
    from apa.errors import ApaError
    from apa.serve import create_app

    model, processor = tiny_model
    for kwargs, message in [({"max_batch": 0}, "--max-batch"), ({"max_seconds": 60}, "--max-seconds"),
                            ({"decoding": "beam"}, "unknown decoding mode"), ({"task": "poetry"}, "unknown task")]:
        with pytest.raises(ApaError, match=message):
            create_app(model, processor, **kwargs)


def test_serve_cli_port_in_use_is_one_line(tmp_path, capsys):
    from apa import cli

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        original = cli.COMMANDS
        cli.COMMANDS = {"serve": original["serve"]}
        try:  # checked before the model loads: a model path that does not exist proves it
            code = cli.main(["serve", "--model", str(tmp_path / "no-model"), "--port", str(port)])
        finally:
            cli.COMMANDS = original
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use; " \
                          "choose another --port or --host"


def _same(a, b) -> bool:
    """Equal structures; floats (expected scores, rounded to 3 decimals) within 0.002."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 2e-3
    return a == b


@pytest.mark.parametrize("decoding", ["constrained", "constrained-sequential"])
def test_a_six_word_request_costs_a_handful_of_model_calls_and_the_log_says_how_many(
        tiny_model, make_sine, caplog, decoding):
    """Issue 11: the service decodes with the parallel decoder by default; its batch log line
    counts the sequential model calls: a handful, against 2 x slots + 1 slot by slot."""
    import logging
    import re

    from fastapi.testclient import TestClient

    from apa.inference.slots import TemplateTokens
    from apa.inference.score import text_to_utterance
    from apa.serve import create_app
    from apa.tasks import TASKS

    model, processor = tiny_model
    text = "the cat sat on the mat"
    slots = len(TemplateTokens(processor.tokenizer, processor.end_of_turn_id)
                .plan(text_to_utterance(text), TASKS["multi"]).slots)
    caplog.set_level(logging.INFO, logger="apa.serve")
    with TestClient(create_app(model, processor, decoding=decoding, max_wait_ms=0)) as client:
        response = client.post("/score", data={"text": text},
                               files={"audio": ("a.wav", wav_bytes(make_sine(1.5)), "audio/wav")})
    assert response.status_code == 200, response.text
    calls = [int(m) for m in re.findall(r"model_calls=(\d+)", caplog.text)]
    assert len(calls) == 1
    if decoding == "constrained":
        assert calls[0] <= slots + 2 < 2 * slots + 1
    else:
        assert slots + 1 < calls[0] <= 2 * slots + 1

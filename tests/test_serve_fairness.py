"""Fair latency (issue case 2 and 7): short requests are not held behind long ones, a
deadline answers 504 and stops the work, a departed client's work is dropped, a full
queue answers 503 with Retry-After, slow connections are closed, SIGTERM drains within its
deadline. A fake model (tests/serve_helpers.py) makes one call per step and honours the
scheduler's between-calls hook exactly as the real decoder does."""

from __future__ import annotations

import asyncio
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serve_helpers import FakeModel, LiveServer, wav_bytes  # noqa: E402

SHORT = "the cat sat on the mat"                                 # 6 words
LONG = " ".join(["the quick brown fox jumps over a lazy dog"] * 6)  # 54 words


def post(url: str, text: str, clip: bytes, timeout: float = 60, **headers):
    with httpx.Client(base_url=url, timeout=timeout) as client:
        return client.post("/score", data={"text": text}, files={"audio": ("a.wav", clip, "audio/wav")},
                           headers=headers)


@pytest.fixture(scope="module")
def clip(make_sine):
    return wav_bytes(make_sine(1.0))


def app_with(tiny_processor, fake, **kwargs):
    from apa.serve import create_app

    return create_app(None, tiny_processor, model_name="fake", score_fn=fake, max_wait_ms=5, **kwargs)


def metric(url: str, line_start: str) -> float:
    text = httpx.get(url + "/metrics").text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


def test_a_short_request_overtakes_a_running_long_one(tiny_processor, clip):
    fake = FakeModel(calls_per_word=10, seconds_per_call=0.005)  # long: 540 calls (~3 s), short: 60
    with LiveServer(app_with(tiny_processor, fake)) as live, ThreadPoolExecutor(2) as pool:
        long = pool.submit(post, live.url, LONG, clip)
        while not any(event == "start" for event, _, _ in fake.events):
            time.sleep(0.01)
        short = pool.submit(post, live.url, SHORT, clip)
        assert short.result().status_code == 200 and long.result().status_code == 200
        # the short one finished while the long batch was still running: it gave way between calls
        assert fake.finished(SHORT.upper()) < fake.finished(LONG.upper())
        assert metric(live.url, 'apa_batches_total{lane="long",outcome="ok"}') == 1
        assert metric(live.url, 'apa_batches_total{lane="short",outcome="ok"}') == 1


def test_batches_hold_requests_of_similar_cost(tiny_processor):
    from apa.inference.score import Recording, text_to_reference
    from apa.serve.scheduler import Job, Lane, Scheduler

    async def take():
        scheduler = Scheduler(lambda *a: [], max_batch=8)
        lane = Lane("short", True)
        for cost in (40, 90, 30, 70, 21, 19):
            lane.waiting.append(Job(Recording(np.zeros(1), text_to_reference("a").utt), "multi", cost,
                                    asyncio.get_running_loop().create_future()))
        return [job.cost for job in scheduler._take_batch(lane)], [job.cost for job in lane.waiting]

    batch, left = asyncio.run(take())
    assert batch == [40, 30, 70, 21]  # within a factor 2 of the oldest (40)
    assert left == [90, 19]


def test_a_deadline_answers_504_and_stops_the_work(tiny_processor, clip):
    fake = FakeModel(calls_per_word=100, seconds_per_call=0.005)  # the long text: 5,400 calls, 27 s
    with LiveServer(app_with(tiny_processor, fake, deadline_s=0.5)) as live:
        started = time.monotonic()
        response = post(live.url, LONG, clip)
        assert response.status_code == 504
        assert "not scored within 0.5 s" in response.json()["error"]
        deadline = time.monotonic() + 10
        while not any(event == "stopped" for event, _, _ in fake.events) and time.monotonic() < deadline:
            time.sleep(0.02)
        stopped = [t for event, _, t in fake.events if event == "stopped"]
        assert stopped and stopped[0] - started < 5  # stopped within a call of the deadline, not after 27 s
        assert fake.calls < 5400
        assert metric(live.url, 'apa_refusals_total{reason="deadline"}') == 1
        assert metric(live.url, 'apa_batches_total{lane="long",outcome="cancelled"}') == 1


def test_a_client_that_leaves_has_its_work_dropped(tiny_processor, clip):
    fake = FakeModel(calls_per_word=100, seconds_per_call=0.005)
    with LiveServer(app_with(tiny_processor, fake)) as live:
        with pytest.raises(httpx.ReadTimeout):
            post(live.url, LONG, clip, timeout=0.5)
        deadline = time.monotonic() + 10
        while not any(event == "stopped" for event, _, _ in fake.events) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert any(event == "stopped" for event, _, _ in fake.events)
        assert fake.calls < 5400
        assert metric(live.url, 'apa_refusals_total{reason="client_left"}') == 1


def test_a_full_queue_answers_503_with_retry_after(tiny_processor, clip):
    fake = FakeModel(calls_per_word=20, seconds_per_call=0.005)
    with LiveServer(app_with(tiny_processor, fake, max_queue=1)) as live, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: post(live.url, LONG, clip), range(6)))
    busy = [r for r in answers if r.status_code == 503]
    assert busy and all(r.headers["Retry-After"].isdigit() and int(r.headers["Retry-After"]) >= 1 for r in busy)
    assert "retry shortly" in busy[0].json()["error"]
    assert all(r.status_code in (200, 503) for r in answers)


def test_the_word_limit(tiny_processor, clip):
    with LiveServer(app_with(tiny_processor, FakeModel(), max_words=60)) as live:
        response = post(live.url, " ".join(["cat"] * 61), clip)
        assert response.status_code == 422
        assert response.json()["error"].startswith("the text has 61 words; at most 60 are scored in one request")
        assert post(live.url, " ".join(["cat"] * 60), clip).status_code == 200


def test_slow_and_idle_connections_are_closed(tiny_processor):
    from apa.serve.server import make_server

    app = app_with(tiny_processor, FakeModel())
    with LiveServer(app, make_server(app, read_timeout_s=1.0, log_level="warning")) as live:
        idle = socket.create_connection(("127.0.0.1", live.port))
        slow = socket.create_connection(("127.0.0.1", live.port))
        slow.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nX-a: ")
        started = time.monotonic()
        for sock, trickle in ((slow, True), (idle, False)):
            sock.settimeout(0.3)
            received = b""
            while time.monotonic() - started < 8:
                try:
                    if trickle:
                        sock.sendall(b"a")  # one header byte at a time: the read deadline still holds
                    chunk = sock.recv(4096)
                except socket.timeout:
                    continue
                except OSError:  # closed while we were sending
                    break
                if not chunk:
                    break
                received += chunk
            # the idle one reads the 408; the trickling one may be reset while it sends
            assert received.startswith(b"HTTP/1.1 408") or (trickle and received == b""), received[:80]
            sock.close()
        assert time.monotonic() - started < 8  # closed at the 1 s deadline, not held open
        assert httpx.get(live.url + "/health").status_code == 200  # others still served


def test_draining_refuses_new_work_with_retry_after(tiny_processor, clip):
    app = app_with(tiny_processor, FakeModel())
    with LiveServer(app) as live:
        app.state.draining = True
        response = post(live.url, SHORT, clip)
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert httpx.get(live.url + "/health").json()["ok"] is False


def test_sigterm_stops_a_long_batch_within_the_drain_deadline(tiny_model_dir, clip, tmp_path):
    """The real CLI and the tiny model: a 180-word request decoded slot by slot takes well over
    ten seconds (about 1,800 model calls); SIGTERM with --drain 1 ends the process within
    seconds, its batch stopped between model calls."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "apa.cli", "serve", "--model", str(tiny_model_dir), "--port",
                             str(port), "--device", "cpu", "--dtype", "fp32", "--drain", "1",
                             "--decoding", "constrained-sequential", "--max-words", "200", "--max-cost", "5000"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(lambda: post(url, " ".join((LONG.split() * 4)[:180]), clip))
            time.sleep(2)  # the batch is running
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            proc.wait(timeout=30)
            exited = time.monotonic() - sent
            with pytest.raises(httpx.HTTPError):  # cancelled at the drain deadline: no answer
                answer.result().raise_for_status()
    finally:
        if proc.poll() is None:
            proc.kill()
    log.seek(0)
    output = log.read()
    assert exited < 10, output  # 1 s of drain and a model call, not the 40 s of the batch
    assert "outcome=cancelled" in output, output
    assert "Traceback" not in output, output

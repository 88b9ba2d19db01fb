"""Helpers for the service tests: a live uvicorn server in a thread, uploads, and a fake
model whose cost grows with the words and that honours ``between_calls`` like the real
decoder does (one call per step), so scheduling is tested in seconds, not minutes."""

from __future__ import annotations

import io
import socket
import threading
import time

import numpy as np


def wav_bytes(samples, rate: int = 16000, fmt: str = "WAV") -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(samples, dtype=np.float32), rate, format=fmt)
    return buffer.getvalue()


class LiveServer:
    """``server`` (a uvicorn.Server, default: plain uvicorn for ``app``) on a free 127.0.0.1
    port in a background thread."""

    def __init__(self, app, server=None):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = server or uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


class FakeModel:
    """score_fn with ``calls_per_word`` model calls of ``seconds_per_call`` each; records
    (event, text, time) so tests can check what ran when; every score 5."""

    def __init__(self, calls_per_word: int = 10, seconds_per_call: float = 0.005):
        self.calls_per_word = calls_per_word
        self.seconds_per_call = seconds_per_call
        self.events: list[tuple[str, str, float]] = []
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, recordings, task_name, between_calls=None):
        from apa.inference.score import build_result
        from apa.tasks import get_task

        task = get_task(task_name)
        texts = "|".join(r.utt.text for r in recordings)
        self.events.append(("start", texts, time.monotonic()))
        steps = self.calls_per_word * max(len(r.utt.words) for r in recordings)
        try:
            for _ in range(steps):
                if between_calls is not None:
                    between_calls()
                with self.lock:
                    self.calls += 1
                time.sleep(self.seconds_per_call)
        except BaseException:
            self.events.append(("stopped", texts, time.monotonic()))
            raise
        self.events.append(("end", texts, time.monotonic()))
        results = []
        for r in recordings:
            record = {"scores": {"sentence": {a: 5 for a in task.sentence},
                                 "words": [{a: 5 for a in task.word} for _ in r.utt.words],
                                 "phones": [[5] * len(w.phones) for w in r.utt.words]}, "problems": []}
            results.append(build_result(r.utt, task, record, "constrained", guessed=r.guessed,
                                        input_text=r.input_text))
        return results

    def finished(self, text: str) -> float:
        return next(t for event, texts, t in self.events if event == "end" and text in texts.split("|"))

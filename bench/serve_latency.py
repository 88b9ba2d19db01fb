"""Latency of short scoring requests while long ones arrive: the service's two cost lanes
(long batches give way between model calls) against one FIFO lane, the naive design.

    python bench/serve_latency.py [--seconds 60] [--short-clients 2] [--long-clients 1]

A live ``apa serve`` app (uvicorn, 127.0.0.1) with the tiny random model (or ``--model
DIR``): short clients post 6-word texts back to back, long clients 60-word texts; the
table gives p50/p95 of the short requests alone, then with the long ones, for both
schedulers. Real model calls, real decoding; only the weights are random.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from inputs import speech_like_clip  # noqa: E402
from measure import markdown_table  # noqa: E402

SHORT_TEXT = "the cat sat on the mat"                                    # 6 words
LONG_TEXT = " ".join(["we read a short story about a cat and a dog"] * 5 + ["at home with my mother"])  # 60 words
NAIVE_SHORT_COST = 10**9  # every request in one lane: FIFO, no giving way


def wav(seconds: float) -> bytes:
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, speech_like_clip(seconds), 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def serve(app):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def client(url: str, text: str, clip: bytes, until: float, latencies: list, errors: list) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=600) as http:
        while True:
            started = time.monotonic()
            response = http.post("/score", data={"text": text}, files={"audio": ("a.wav", clip, "audio/wav")})
            if response.status_code == 200:
                latencies.append(time.monotonic() - started)
            else:
                errors.append(response.status_code)
            if time.monotonic() >= until:
                return


def scenario(model, processor, short_cost: int, args, with_long: bool) -> dict:
    from apa.serve import create_app

    app = create_app(model, processor, model_name="bench", short_cost=short_cost, max_wait_ms=10,
                     deadline_s=3600)
    server, thread, url = serve(app)
    client(url, SHORT_TEXT, wav(2.0), 0, [], [])  # warm-up: one request (each client sends at least one)
    short, long, errors = [], [], []
    until = time.monotonic() + args.seconds
    threads = [threading.Thread(target=client, args=(url, SHORT_TEXT, wav(2.0), until, short, errors))
               for _ in range(args.short_clients)]
    if with_long:
        threads += [threading.Thread(target=client, args=(url, LONG_TEXT, wav(20.0), until, long, errors))
                    for _ in range(args.long_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.should_exit = True
    thread.join()
    ms = sorted(1000 * x for x in short)
    return {"n": len(ms), "p50": statistics.median(ms) if ms else float("nan"),
            "p95": ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))] if ms else float("nan"),
            "long": len(long), "errors": len(errors)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: a tiny random model)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each scenario (default 60)")
    parser.add_argument("--short-clients", type=int, default=2)
    parser.add_argument("--long-clients", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    import torch

    from apa.backbones.loading import load_model_and_processor
    from apa.backbones.qwen2_audio import Qwen2Audio

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = args.model or Qwen2Audio.build_tiny(Path(tempfile.mkdtemp()) / "tiny", seed=0)
    model, processor = load_model_and_processor(model_dir, dtype="float32", device="cpu")
    print(f"model {model_dir}; short: {len(SHORT_TEXT.split())} words x {args.short_clients} clients; long: "
          f"{len(LONG_TEXT.split())} words x {args.long_clients} clients; {args.seconds:g} s per scenario",
          flush=True)
    alone = scenario(model, processor, 150, args, with_long=False)
    rows = [["short only", "-", alone["n"], f"{alone['p50']:.0f}", f"{alone['p95']:.0f}", "-", alone["errors"]]]
    for name, cost in [("naive (one FIFO lane)", NAIVE_SHORT_COST), ("ours (cost lanes, give way)", 150)]:
        result = scenario(model, processor, cost, args, with_long=True)
        rows.append(["short + long", name, result["n"], f"{result['p50']:.0f}", f"{result['p95']:.0f}",
                     result["long"], result["errors"]])
        print(f"  {name}: done", flush=True)
    print(markdown_table(["load", "scheduler", "short requests", "short p50 ms", "short p95 ms", "long done",
                          "errors"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

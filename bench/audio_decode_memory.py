"""Memory and time of decoding hostile uploads: apa's bounded decoder (apa.data.decode:
libsndfile for WAV, FLAC, Ogg, MP3, PyAV for WebM and MP4, the container's facts checked
before any sample is decoded) against the naive path it replaced (libsndfile reads
everything, then resampling, then the length check).

    python bench/audio_decode_memory.py

Each case runs in a fresh process (peak RSS is per process); "rss+" is the growth of the
peak resident memory during the call.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))


def naive(data: bytes):
    import io

    import soundfile as sf
    import soxr

    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    samples = samples.mean(axis=1) if samples.ndim == 2 else samples
    return soxr.resample(samples, rate, 16000, quality="HQ")


def ours(data: bytes):
    from apa.data.audio import decode_audio_bytes

    return decode_audio_bytes(data, "upload", max_seconds=30)


def one_case(name: str, decoder: str) -> dict:
    import audio_inputs

    data = audio_inputs.hostile_files()[name]
    fn = {"naive": naive, "ours": ours}[decoder]
    fn(audio_inputs.wav_claiming_rate(16000))  # libraries loaded before the baseline
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        fn(data)
        outcome = "decoded"
    except Exception as e:  # noqa: BLE001 - the outcome is what the table reports
        outcome = f"{type(e).__name__}: {str(e)[:60]}"
    seconds = time.perf_counter() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return {"bytes": len(data), "ms": 1000 * seconds, "rss_mb": grown / 1024, "outcome": outcome}


def main() -> int:
    if len(sys.argv) == 3:
        print(json.dumps(one_case(sys.argv[1], sys.argv[2])))
        return 0
    import audio_inputs
    from measure import markdown_table

    rows = []
    for name in audio_inputs.hostile_files():
        for decoder in ("naive", "ours"):
            proc = subprocess.run([sys.executable, __file__, name, decoder], capture_output=True, text=True,
                                  timeout=600)
            r = json.loads(proc.stdout) if proc.returncode == 0 else \
                {"bytes": "-", "ms": float("nan"), "rss_mb": float("nan"), "outcome": f"crashed ({proc.returncode})"}
            rows.append([name, decoder, r["bytes"], f"{r['ms']:.0f}", f"{r['rss_mb']:.0f}", r["outcome"]])
    print(markdown_table(["upload", "decoder", "bytes", "ms", "rss+ MiB", "outcome"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

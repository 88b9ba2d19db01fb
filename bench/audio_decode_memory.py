"""Memory and time of decoding hostile uploads: apa's bounded decoder (apa.data.decode:
libsndfile for WAV, FLAC, Ogg, MP3, PyAV for WebM and MP4, the container's facts checked
before any sample is decoded) against the naive path it replaced (libsndfile reads
everything, then resampling, then the length check).

    python bench/audio_decode_memory.py

Each case runs in a fresh process (peak RSS is per process); "rss+" is the growth of the
process's peak resident memory (VmHWM) during the call, "traced" the peak of Python and numpy allocations during it
(tracemalloc: the decoded arrays, not the libraries' own buffers). Beside the hostile headers: an 8-channel 192 kHz FLAC
of 29 s against the mono file of the same length (the channels are mixed while decoding, so
the two should cost the same), and the whole ``apa score`` process refusing a FLAC with no
length field (peak RSS of the process: it must refuse before torch is imported).
"""

from __future__ import annotations

import json
import re
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


CHANNEL_CASES = {"flac_mono_192k_29s": 1, "flac_8ch_192k_29s": 8}


def case_names() -> list[str]:
    import audio_inputs

    return list(audio_inputs.hostile_files()) + list(CHANNEL_CASES)


def peak_rss_kib() -> int:
    """This process's peak resident memory (VmHWM): ru_maxrss would start from the parent's
    peak, carried over fork and exec, and hide growth under it."""
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def case_bytes(name: str) -> bytes:
    import audio_inputs

    return audio_inputs.multichannel_flac(CHANNEL_CASES[name]) if name in CHANNEL_CASES \
        else audio_inputs.hostile_files()[name]


def one_case(path: str, decoder: str) -> dict:
    """Decode the file at ``path`` (written by the parent, so that building it does not
    raise this process's peak before the baseline)."""
    import audio_inputs

    data = Path(path).read_bytes()
    fn = {"naive": naive, "ours": ours}[decoder]
    fn(audio_inputs.wav_claiming_rate(16000))  # libraries loaded before the baseline
    import tracemalloc

    before = peak_rss_kib()
    started = time.perf_counter()
    tracemalloc.start()  # numpy's buffers are traced; libsndfile's and FFmpeg's own are not (RSS has them)
    try:
        fn(data)
        outcome = "decoded"
    except Exception as e:  # noqa: BLE001 - the outcome is what the table reports
        outcome = f"{type(e).__name__}: {str(e)[:60]}"
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    seconds = time.perf_counter() - started
    grown = peak_rss_kib() - before
    return {"bytes": len(data), "ms": 1000 * seconds, "rss_mb": grown / 1024, "traced_mb": traced / 2**20,
            "outcome": outcome}


def score_cli_refusal() -> list:
    """Peak RSS of the whole `apa score` process given the hour of FLAC with no length field."""
    import os
    import tempfile

    import audio_inputs

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "no_length.flac"
        path.write_bytes(audio_inputs.without_length(audio_inputs.flac_silence(3600)))
        started = time.perf_counter()
        # VmHWM, the peak of this process's memory: ru_maxrss would carry the parent's peak over fork + exec
        proc = subprocess.run([sys.executable, "-c", "import re, sys; from apa import cli; code = cli.main("
                               "sys.argv[1:]); print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status')"
                               ".read()).group(1), file=sys.stderr); sys.exit(code)", "score", "--model", str(Path(tmp) / "no-model"),
                               "--audio", str(path), "--text", "hello"], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT / "src")), timeout=600)
        seconds = time.perf_counter() - started
        lines = proc.stderr.strip().splitlines()
    return ["apa score, 1 h FLAC without length (656 KB)", f"{1000 * seconds:.0f}", f"{int(lines[-1]) / 1024:.0f}",
            f"exit {proc.returncode}: {lines[0][:70]}"]


def main() -> int:
    if len(sys.argv) == 3:
        print(json.dumps(one_case(sys.argv[1], sys.argv[2])))
        return 0
    import tempfile

    from measure import markdown_table

    rows = []
    for name in case_names():
        with tempfile.NamedTemporaryFile(suffix=".audio") as file:
            file.write(case_bytes(name))
            file.flush()
            procs = {decoder: subprocess.run([sys.executable, __file__, file.name, decoder], capture_output=True,
                                             text=True, timeout=600) for decoder in ("naive", "ours")}
        for decoder, proc in procs.items():
            r = json.loads(proc.stdout) if proc.returncode == 0 else \
                {"bytes": "-", "ms": float("nan"), "rss_mb": float("nan"), "traced_mb": float("nan"),
                 "outcome": f"crashed ({proc.returncode})"}
            rows.append([name, decoder, r["bytes"], f"{r['ms']:.0f}", f"{r['rss_mb']:.0f}", f"{r['traced_mb']:.0f}",
                         r["outcome"]])
    print(markdown_table(["upload", "decoder", "bytes", "ms", "rss+ MiB", "traced MiB", "outcome"], rows))
    print()
    print(markdown_table(["process", "ms", "peak RSS MiB", "outcome"], [score_cli_refusal()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

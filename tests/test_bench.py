"""The benchmark scripts (bench/) run end to end with the tiny model and print their tables.

Timings are not checked (they say nothing on a shared CPU); what is checked is that one run
yields a naive row and an ours row with numbers, that inputs have the requested lengths,
and that running out of memory becomes an "OOM" row instead of a crash.
"""

from __future__ import annotations

import os
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SMALL = ["--shape", "tiny", "--audio-seconds", "1", "--prompt-tokens", "80", "--target-tokens", "40",
         "--threads", "1"]


def run_script(name: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(BENCH / name), *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def table_rows(output: str) -> list[list[str]]:
    """Cells of the markdown table's body rows."""
    lines = [line for line in output.splitlines() if line.startswith("|")]
    assert len(lines) >= 3, output
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def is_number(text: str) -> bool:
    return re.fullmatch(r"\d+(\.\d+)?(e[+-]?\d+)?", text) is not None


def test_train_throughput_prints_naive_and_ours_rows():
    out = run_script("train_throughput.py", *SMALL, "--steps", "2", "--warmup", "1", "--batch-sizes", "2",
                     "--isolate", "never")
    rows = table_rows(out)
    assert [(r[0], r[1]) for r in rows] == [("naive", "1"), ("ours", "2")]
    for row in rows:
        ms, per_second, peak = row[3], row[4], row[5]
        assert is_number(ms) and float(ms) > 0, row
        assert is_number(per_second) and float(per_second) > 0, row
        assert peak.endswith(("MiB", "GiB")), row
    # The sample has the requested lengths: 1 s = 25 audio tokens, 80 prompt text, 40 response.
    assert "145 tokens = 25 audio (1 s) + 80 prompt text + 40 response" in out


def test_inference_throughput_prints_naive_and_both_constrained_rows():
    out = run_script("inference_throughput.py", *SMALL, "--quick", "--naive-batch-sizes", "2",
                     "--batch-sizes", "2", "--isolate", "never")
    rows = table_rows(out)
    assert [(r[0], r[1]) for r in rows] == [("naive generate", "2"), ("ours constrained, sequential", "2"),
                                            ("ours constrained, parallel", "2")]
    for row in rows:
        assert is_number(row[2]) and float(row[2]) > 0, row
        assert row[4].isdigit() and row[5].replace(",", "").isdigit(), row
    naive, sequential, parallel = (int(r[4]) for r in rows)
    match = re.search(r"response template: (\d+) tokens .*?, (\d+) score slots", out)
    # counted, not assumed: one call per token (the first is the prefill), 2 per slot + 1, a handful
    assert match and naive == int(match.group(1))
    assert sequential <= 2 * int(match.group(2)) + 1 and parallel < sequential < naive


# --- helpers, in process --------------------------------------------------------------------
def _bench_module(name):
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def inputs():
    return _bench_module("inputs")


@pytest.fixture(scope="module")
def measure():
    return _bench_module("measure")


def test_sample_row_has_requested_lengths(inputs, tiny_processor):
    from apa.tasks import get_task

    task = get_task("multi")
    utt = inputs.bench_utterance(tiny_processor, task, 60)
    clip = inputs.speech_like_clip(2.0)
    assert clip.shape == (32000,) and abs(clip).max() <= 0.5
    for prompt_tokens, target_tokens in ((60, 20), (700, 300)):  # cut and repeated
        row = inputs.sample_row(tiny_processor, task, clip, utt, prompt_tokens, target_tokens)
        n_audio = inputs.count_audio_tokens(row, tiny_processor)
        n_response = int((row["labels"][0] != -100).sum())
        assert n_audio == 50
        assert n_response == target_tokens
        assert row["input_ids"].shape[1] == n_audio + prompt_tokens + target_tokens
        assert row["prompt_ids"].shape[1] == n_audio + prompt_tokens
        tokenizer = tiny_processor.tokenizer
        text = tokenizer.decode(row["input_ids"][0])
        assert text.startswith("<|im_start|>system") and text.endswith("<|im_end|>")
        assert tokenizer.decode(row["prompt_ids"][0]).endswith("<|im_start|>assistant\n")


def test_out_of_memory_is_a_row_not_a_crash(measure):
    import torch

    def runs_out():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    assert measure.measure(torch.device("cpu"), runs_out)["status"] == "OOM"
    with pytest.raises(ValueError):  # other errors are not swallowed
        measure.measure(torch.device("cpu"), lambda: (_ for _ in ()).throw(ValueError("bug")))


def test_a_killed_worker_is_reported_as_oom(measure, tmp_path):
    script = tmp_path / "killed.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert measure.run_in_subprocess(str(script), [], "case")["status"] == "OOM"


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_seven_b_shape_runs_on_a_gpu():
    """The 7B shape with 2 of its 32 layers, both scripts (the full runs: docs/benchmarks.md)."""
    seven_b = ["--shape", "real", "--layers", "2", "--device", "cuda"]
    out = run_script("train_throughput.py", *seven_b, "--steps", "1", "--warmup", "1", "--batch-sizes", "2")
    assert [r[0] for r in table_rows(out)] == ["naive", "ours"]
    out = run_script("inference_throughput.py", *seven_b, "--naive-batch-sizes", "2", "--batch-sizes", "2",
                     "--warmup", "0")
    assert [r[0] for r in table_rows(out)] == ["naive generate", "ours constrained, sequential",
                                               "ours constrained, parallel"]

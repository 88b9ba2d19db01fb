"""`apa export`: an adapter renamed for the release, or merged into a release-layout model
folder, that plain transformers (+ PEFT) loads to the model apa itself runs."""

from __future__ import annotations

import pytest
import torch

from apa.cli import main
from test_release import load, logits, random_adapter, tensor_names

SERVER_FILES = ("config.json", "generation_config.json", "chat_template.jinja", "tokenizer.json",
                "processor_config.json")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small Qwen2-Audio and an adapter as apa wrote them before the release layout
    (PEFT's in-memory names, base_model.model.model.language_model.*), with a lexicon."""
    from apa.backbones import backbone_class

    root = tmp_path_factory.mktemp("export")
    base = backbone_class("qwen2-audio").build_tiny(root / "base", seed=0, size="small")
    model, processor = load(base)
    random_adapter(model, processor).save_pretrained(str(root / "adapter"))
    (root / "adapter" / "lexicon.txt").write_text("BEAR B EH1 R\n")
    return base, root / "adapter"


def test_a_merged_export_loads_with_plain_transformers_to_apa_s_model(trained, tmp_path, utterance):
    from transformers import Qwen2AudioForConditionalGeneration

    base, adapter = trained
    assert main(["export", "--model", str(base), "--adapter", str(adapter), "--out", str(tmp_path / "m"),
                 "--merge", "--device", "cpu", "--dtype", "float64"]) == 0
    names = tensor_names(tmp_path / "m")
    assert "language_model.model.layers.0.self_attn.q_proj.weight" in names
    assert not [n for n in names if "lora" in n or "model.model.model" in n]
    assert all((tmp_path / "m" / f).is_file() for f in SERVER_FILES + ("lexicon.txt",))
    ours, processor = load(base, adapter=adapter, dtype="float64")
    plain = Qwen2AudioForConditionalGeneration.from_pretrained(str(tmp_path / "m"), dtype=torch.float64).eval()
    # W x + B (A x) against (W + B A) x: the same sums associated differently. In float32 that
    # blurs logits of a few units by ~1e-4 (measured 3e-4 with this adapter); in float64 (the
    # float32 weights exactly, merged exactly enough) the rounding is ~1e-13, far inside 1e-9.
    torch.testing.assert_close(logits(plain, processor, utterance), logits(ours, processor, utterance),
                               rtol=0, atol=1e-9)


def test_an_adapter_export_is_renamed_and_loads_with_plain_peft(trained, tmp_path, utterance):
    from peft import PeftModel
    from transformers import Qwen2AudioForConditionalGeneration

    base, adapter = trained
    assert main(["export", "--model", str(base), "--adapter", str(adapter), "--out", str(tmp_path / "a"),
                 "--device", "cpu"]) == 0
    names = tensor_names(tmp_path / "a", "adapter_model.safetensors")
    assert names and all(n.startswith("base_model.model.language_model.model.layers.") for n in names)
    assert all((tmp_path / "a" / f).is_file() for f in ("adapter_config.json", "generation_config.json",
                                                        "chat_template.jinja", "tokenizer.json", "lexicon.txt"))
    ours, processor = load(base, adapter=adapter)
    plain = Qwen2AudioForConditionalGeneration.from_pretrained(str(base), dtype=torch.float32)
    plain = PeftModel.from_pretrained(plain, str(tmp_path / "a")).eval()
    assert torch.equal(logits(plain, processor, utterance), logits(ours, processor, utterance))


def test_export_refuses_a_folder_that_is_not_empty(trained, tmp_path, capsys):
    base, adapter = trained
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["export", "--model", str(base), "--adapter", str(adapter), "--out", str(tmp_path / "full")]) != 0
    assert "not an empty folder" in capsys.readouterr().err

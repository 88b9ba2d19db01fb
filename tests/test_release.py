"""What apa writes is laid out as each family's release (apa.backbones.release).

The release names are those the released checkpoints carry, as transformers' conversion
mapping (qwen2_audio, granite_speech) and vLLM's loaders (their hf_to_vllm_mapper / the
prefixes load_weights reads: Qwen2-Audio ``language_model.model.``, ``audio_tower.``,
``multi_modal_projector.``; Qwen2.5-Omni ``thinker.``; Granite-Speech ``encoder.``,
``projector.``, ``language_model.``) state them. Adapters load onto the release with plain
PEFT and with an effect; an adapter that would load without one is refused.
"""

from __future__ import annotations

import json

import pytest
import torch

from apa.backbones import backbone_class
from apa.backbones.lora import add_lora
from apa.backbones.release import save_adapter, save_model
from apa.errors import ApaError

# Every tensor of the release starts with one of these (per family), and these names exist.
RELEASE_PREFIXES = {
    "qwen2-audio": ("language_model.model.", "language_model.lm_head.", "audio_tower.", "multi_modal_projector."),
    "qwen2.5-omni": ("thinker.model.", "thinker.lm_head.", "thinker.audio_tower.", "thinker.visual."),
    "granite-speech": ("language_model.model.", "encoder.", "projector."),
    "phi4-mm": ("model.",),
}
RELEASE_LAYER = {
    "qwen2-audio": "language_model.model.layers.0.self_attn.q_proj.weight",
    "qwen2.5-omni": "thinker.model.layers.0.self_attn.q_proj.weight",
    "granite-speech": "language_model.model.layers.0.self_attn.q_proj.weight",
    "phi4-mm": "model.layers.0.self_attn.qkv_proj.weight",
}


def tensor_names(folder, files="model*.safetensors") -> list[str]:
    from safetensors import safe_open

    names = []
    for path in sorted(folder.glob(files)):
        with safe_open(str(path), "pt") as f:
            names += list(f.keys())
    return names


def load(path, adapter=None, dtype="float32"):
    from apa.backbones.loading import load_model_and_processor

    return load_model_and_processor(path, adapter=adapter, dtype=dtype, device="cpu")


def logits(model, processor, utterance):
    from apa.collate import load_audios
    from apa.prompts import instruction
    from apa.tasks import TASKS

    text = processor.render(instruction(TASKS["sentence_total"], utterance))
    batch = processor.encode([text], load_audios([utterance]), padding_side="left")
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def small_dirs(tmp_path_factory):
    built = {}

    def get(name):
        if name not in built:
            built[name] = backbone_class(name).build_tiny(tmp_path_factory.mktemp(name), seed=0, size="small")
        return built[name]

    return get


@pytest.mark.parametrize("name", list(RELEASE_PREFIXES))
def test_tiny_models_carry_the_release_tensor_names(name, small_dirs):
    names = tensor_names(small_dirs(name))
    assert RELEASE_LAYER[name] in names
    assert not [n for n in names if "model.model.model" in n or "language_model.model.model" in n]
    assert [n for n in names if not n.startswith(RELEASE_PREFIXES[name])] == []


def test_the_release_layout_reloads_to_the_weights_in_memory(small_dirs):
    """Qwen2-Audio's folder loads through transformers' own renaming to exactly make_tiny's model."""
    cls = backbone_class("qwen2-audio")
    built, _ = cls.make_tiny(seed=0, size="small")
    loaded, _ = load(small_dirs("qwen2-audio"))
    a, b = built.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_folder_in_apa_s_older_layout_still_loads(small_dirs, tmp_path, utterance):
    """Before the release layout apa wrote transformers 5.17's save_pretrained as it is
    (language_model.model.model.layers.*); such folders still load, to the same model."""
    model, processor = load(small_dirs("qwen2-audio"))
    built, _ = backbone_class("qwen2-audio").make_tiny(seed=0, size="small")
    old = tmp_path / "old"
    built.save_pretrained(old)  # transformers' own save of a model built, not loaded: the doubled names
    processor.save_pretrained(old)
    assert any("language_model.model.model." in n for n in tensor_names(old))
    again, _ = load(old)
    assert torch.equal(logits(model, processor, utterance), logits(again, processor, utterance))


def random_adapter(model, processor, seed=1):
    """A LoRA adapter with random B (a fresh one is the identity and shows nothing)."""
    peft_model = add_lora(model, processor, r=4)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return peft_model.eval()


def test_an_omni_adapter_names_the_thinker_and_loads_onto_the_whole_release(small_dirs, tmp_path, utterance):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration

    folder = small_dirs("qwen2.5-omni")
    model, processor = load(folder)
    base_logits = logits(model, processor, utterance)
    tuned = random_adapter(model, processor)
    expected = logits(tuned, processor, utterance)
    assert not torch.allclose(expected, base_logits)
    save_adapter(tuned, type(processor), tmp_path / "adapter")
    names = tensor_names(tmp_path / "adapter", "adapter_model.safetensors")
    assert names and all(n.startswith("base_model.model.thinker.model.layers.") for n in names)

    ours, _ = load(folder, adapter=tmp_path / "adapter")
    assert torch.equal(logits(ours, processor, utterance), expected)

    # plain transformers + PEFT on the whole model as released (thinker.model.* modules); built
    # from the folder's config and weights by name (from_pretrained of the whole class also wants
    # the talker's voices, spk_dict.pt, which the thinker-only folder does not have)
    config = Qwen2_5OmniConfig.from_pretrained(str(folder))
    release = Qwen2_5OmniForConditionalGeneration(config).float().eval()
    loaded = release.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    assert loaded.unexpected_keys == [] and loaded.missing_keys == []
    adapted = PeftModel.from_pretrained(release, str(tmp_path / "adapter")).eval()
    # the same weights and arithmetic: equal to float32 rounding of a differently ordered sum at most
    torch.testing.assert_close(logits(adapted.base_model.model.thinker, processor, utterance), expected,
                               rtol=0, atol=1e-5)


def test_an_adapter_in_apa_s_older_names_still_loads_with_its_effect(small_dirs, tmp_path, utterance):
    folder = small_dirs("qwen2.5-omni")
    model, processor = load(folder)
    tuned = random_adapter(model, processor)
    expected = logits(tuned, processor, utterance)
    tuned.save_pretrained(str(tmp_path / "old"))  # PEFT's own names: base_model.model.model.layers.*
    assert all(n.startswith("base_model.model.model.") for n in tensor_names(tmp_path / "old", "adapter_model.safetensors"))
    again, _ = load(folder, adapter=tmp_path / "old")
    assert torch.equal(logits(again, processor, utterance), expected)


def test_an_adapter_that_would_load_without_effect_is_refused(small_dirs, tmp_path):
    """Weights named for modules the model does not have: PEFT builds the LoRA layers from
    the config, finds no weights for them, warns, and leaves B = 0 (the base model)."""
    from safetensors.torch import load_file, save_file

    folder = small_dirs("qwen2.5-omni")
    model, processor = load(folder)
    save_adapter(random_adapter(model, processor), type(processor), tmp_path / "adapter")
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    stray = {k.replace("thinker.model.", "talker.model."): v for k, v in load_file(str(weights)).items()}
    save_file(stray, str(weights), metadata={"format": "pt"})
    with pytest.raises(ApaError, match="without effect.*apa export"):
        load(folder, adapter=tmp_path / "adapter")


def test_a_full_fine_tune_of_the_omni_thinker_is_saved_as_the_release(small_dirs, tmp_path, utterance):
    model, processor = load(small_dirs("qwen2.5-omni"))
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight.add_(0.1)  # as a fine-tune changes it
    save_model(model, processor, tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_omni" and "thinker_config" in config
    assert all(n.startswith("thinker.") for n in tensor_names(tmp_path / "model"))
    again, _ = load(tmp_path / "model")
    assert torch.equal(logits(again, processor, utterance), logits(model, processor, utterance))


def test_granite_s_speech_adapter_is_saved_for_the_release_and_still_attaches(small_dirs):
    """The speech adapter beside the weights is named as the hub's (transformers 4.x paths);
    transformers attaches it on load, so the folder loads to exactly make_tiny's model."""
    folder = small_dirs("granite-speech")
    keys = tensor_names(folder, "adapter_model.safetensors")
    assert keys and all(k.startswith("base_model.model.language_model.model.layers.") for k in keys)
    built, _ = backbone_class("granite-speech").make_tiny(seed=0, size="small")
    loaded, _ = load(folder)
    a, b = built.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

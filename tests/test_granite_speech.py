"""Granite-Speech: what is particular to the family (apa.backbones.granite_speech).

The audio front end without torchaudio, the placeholder expansion and token counts, the chat
rendering, the tokenizer, the speech LoRA merged on load, the logits scaling, the LoRA
placement, the tiny builder and the loading errors. What every backbone must do is in
test_backbones.py.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from apa.backbones.granite_speech import (AUDIO_TOKEN, CHAT_TEMPLATE, LEADING_SPECIAL_TOKENS, SYSTEM_PROMPT,
                                          TRAILING_SPECIAL_TOKENS, GraniteSpeech, TorchMelFeatureExtractor,
                                          scale_logits, torchaudio_available)
from apa.backbones.granite_speech_tiny import (REAL_ENCODER_CONFIG, REAL_PROJECTOR_CONFIG, REAL_TEXT_CONFIG,
                                               TINY_SIZES, mup_multipliers, tiny_configs)
from apa.backbones.loading import load_model_and_processor
from apa.errors import ApaError

SAMPLE_RATE = 16000


@pytest.fixture(scope="module")
def granite_dir(tmp_path_factory):
    return GraniteSpeech.build_tiny(tmp_path_factory.mktemp("granite"), seed=0)


@pytest.fixture(scope="module")
def granite(granite_dir):
    return load_model_and_processor(granite_dir, dtype="float64", device="cpu")


def clip(seconds: float, freq: float = 220.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    noise = np.random.default_rng(seed).standard_normal(t.shape)
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * noise).astype(np.float32)


def expected_audio_tokens(samples: int) -> int:
    """Granite's count: mel frames = samples // 160 + 1, stacked in pairs, windows of 15 -> 3."""
    return math.ceil(((samples // 160 + 1) // 2) / 15) * 3


# --- the audio front end ------------------------------------------------------------------------

@pytest.mark.skipif(not torchaudio_available(), reason="torchaudio is not installed (no CPU build for torch 2.13)")
def test_torch_mel_equals_transformers_extractor():
    """Where torchaudio is, the original extractor is the reference. The filter banks differ by
    < 6e-6 (torchaudio builds it in float32, transformers in float64); that moves a log-mel
    feature by < 2e-5 on real speech (measured); 1e-4 leaves room and is far below what
    matters (features span about -0.3 to 1.8; bf16 rounds them to ~4e-3)."""
    from transformers import GraniteSpeechFeatureExtractor

    clips = [clip(1.5), clip(0.37, 300.0, 1), clip(2.01, 180.0, 2)]
    ours, theirs = TorchMelFeatureExtractor()(clips), GraniteSpeechFeatureExtractor()(clips)
    assert ours["input_features"].shape == theirs["input_features"].shape
    assert torch.allclose(ours["input_features"], theirs["input_features"], rtol=0, atol=1e-4)
    assert ours["audio_embed_sizes"] == theirs["audio_embed_sizes"]
    assert torch.equal(ours["input_features_mask"], theirs["input_features_mask"])


def test_torch_mel_equals_a_numpy_spectrogram():
    """Without torchaudio: against transformers' numpy spectrogram (float64) with torchaudio
    MelSpectrogram's settings, then Granite's log10 / floor / scaling / stacking. float32 STFT
    vs float64: ~1e-6 relative on the energies, ~1e-7 on the features; 1e-5 is the bound."""
    from transformers.audio_utils import spectrogram, window_function

    extractor = TorchMelFeatureExtractor()
    audio = clip(1.23, 250.0)
    ours = extractor([audio])["input_features"][0].double().numpy()
    mel = spectrogram(audio.astype(np.float64), window_function(400, "hann", frame_length=512), frame_length=512,
                      hop_length=160, fft_length=512, power=2.0, center=True, pad_mode="reflect",
                      mel_filters=extractor.mel_filters.astype(np.float64)).T  # [frames, 80]
    logmel = np.log10(np.maximum(mel, 1e-10))
    logmel = np.maximum(logmel, logmel.max() - 8.0) / 4 + 1
    logmel = logmel[: len(logmel) // 2 * 2].reshape(-1, 160)
    assert ours.shape == logmel.shape == ((len(audio) // 160 + 1) // 2, 160)
    assert np.abs(ours - logmel).max() < 1e-5


def test_saved_extractor_is_the_transformers_one_by_name(granite_dir):
    saved = json.loads((granite_dir / "processor_config.json").read_text())["audio_processor"]
    assert saved["feature_extractor_type"] == "GraniteSpeechFeatureExtractor"
    assert saved["melspec_kwargs"] == {"sample_rate": 16000, "n_fft": 512, "win_length": 400, "hop_length": 160,
                                       "n_mels": 80}
    assert (saved["projector_window_size"], saved["projector_downsample_rate"]) == (15, 5)
    assert "mel_filters" not in saved


def test_a_hub_style_preprocessor_config_loads(granite_dir, tmp_path):
    """The hub repository keeps the extractor in preprocessor_config.json."""
    folder = tmp_path / "hub"
    shutil.copytree(granite_dir, folder)
    processor_config = json.loads((folder / "processor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps(
        dict(processor_config.pop("audio_processor"), processor_class="GraniteSpeechProcessor")))
    (folder / "processor_config.json").write_text(json.dumps(processor_config))
    _, processor = load_model_and_processor(folder, device="cpu")
    assert processor.feature_extractor.melspec_kwargs["n_fft"] == 512
    assert processor.encode([processor.render("x")], [clip(1.0)], "left")["input_features"].shape == (1, 50, 160)


# --- batches -------------------------------------------------------------------------------------

@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_each_clip_becomes_its_count_of_audio_tokens(granite, padding_side):
    model, processor = granite
    seconds = [0.3, 1.5, 2.0, 4.71]
    clips = [clip(s, 200.0 + 40 * i, i) for i, s in enumerate(seconds)]
    batch = processor.encode([processor.render("Score it.")] * len(clips), clips, padding_side)
    counts = (batch["input_ids"] == processor.audio_token_id).sum(1).tolist()
    assert counts == [expected_audio_tokens(len(c)) for c in clips] == [3, 15, 21, 48]
    assert counts == [processor.audio_token_count(s) for s in seconds]
    assert batch["input_features_mask"].sum(1).tolist() == counts
    assert batch["input_features"].shape == (4, (len(clips[-1]) // 160 + 1) // 2, 160)
    assert "audio_embed_sizes" not in batch
    last_token = -1 if padding_side == "left" else 0  # the text is padded on the other side
    assert batch["attention_mask"][:, last_token].tolist() == [1] * 4
    assert batch["attention_mask"][:, -1 - last_token].tolist() == [0, 0, 0, 1]  # the longest clip fills its row
    with torch.no_grad():
        features = processor.clip_features(model, batch)
        embeds = processor.embed(model, batch["input_ids"], batch)
    assert [int(f.shape[0]) for f in features] == counts
    assert embeds.shape == (*batch["input_ids"].shape, model.config.text_config.hidden_size)
    assert processor.audio_window_seconds is None  # nothing is cut


def test_about_ten_audio_tokens_a_second():
    processor = GraniteSpeech.make_tiny(seed=0)[1]
    # in 0.3 s blocks (15 stacked frames of 20 ms), rounded up
    assert [processor.audio_token_count(s) for s in (0.02, 0.3, 0.31, 1.0, 10.0, 60.0)] == [3, 3, 6, 12, 102, 600]


# --- the chat input and the tokenizer -------------------------------------------------------------

def test_render_is_the_real_template_with_a_fixed_system_message():
    from transformers.utils.chat_template_utils import render_jinja_template

    text = GraniteSpeech.render("Rate it.")
    assert text == ("<|start_of_role|>system<|end_of_role|>Knowledge Cutoff Date: April 2024.\nToday's Date: April 9, "
                    "2025.\nYou are Granite, developed by IBM. You are a helpful AI assistant<|end_of_text|>\n"
                    "<|start_of_role|>user<|end_of_role|><|audio|>Rate it.<|end_of_text|>\n"
                    "<|start_of_role|>assistant<|end_of_role|>")
    # Without a system message the template writes today's date: prompts would change daily.
    default, _ = render_jinja_template(conversations=[[{"role": "user", "content": AUDIO_TOKEN + "Rate it."}]],
                                       chat_template=CHAT_TEMPLATE, add_generation_prompt=True)
    assert "Today's Date: " in default[0] and SYSTEM_PROMPT not in default[0]


def test_special_tokens_sit_where_the_real_vocabulary_has_them(granite):
    model, processor = granite
    tokenizer = processor.tokenizer
    ids = tokenizer.convert_tokens_to_ids(list(LEADING_SPECIAL_TOKENS))
    assert ids == list(range(len(LEADING_SPECIAL_TOKENS)))  # <|end_of_text|> is 0
    tail = tokenizer.convert_tokens_to_ids(list(TRAILING_SPECIAL_TOKENS))
    assert tail == list(range(len(tokenizer) - len(TRAILING_SPECIAL_TOKENS), len(tokenizer)))  # <|audio|> last
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == tokenizer.pad_token_id == processor.end_of_turn_id == 0
    assert model.config.audio_token_index == processor.audio_token_id == len(tokenizer) - 1
    assert model.config.text_config.vocab_size == len(tokenizer)
    assert model.generation_config.eos_token_id == model.generation_config.pad_token_id == 0


def test_digits_are_split_one_by_one(granite):
    tokenizer = granite[1].tokenizer
    tokens = lambda text: tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert tokens("10") == ["1", "0"]
    assert tokens(" 10") == ["Ġ", "1", "0"]
    assert tokens("2024") == ["2", "0", "2", "4"]
    assert tokens("BEAR/10/5<|end_of_text|>")[-1] == "<|end_of_text|>"
    text = "Word Scores: WE/10/10/10 ÉLAN/3\nPhone Scores: W/10 IY0/9"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


# --- the speech adapter and the logits scaling -----------------------------------------------------

def _base_and_merged_by_peft(folder, tmp_path):
    """The saved base weights and PEFT's own merge of the saved speech adapter into them."""
    from peft import PeftModel
    from transformers import GraniteSpeechForConditionalGeneration

    base_only = tmp_path / "base"
    shutil.copytree(folder, base_only, ignore=shutil.ignore_patterns("adapter_*"))
    base = GraniteSpeechForConditionalGeneration.from_pretrained(base_only, dtype=torch.float64)
    saved = {k: v.clone() for k, v in base.state_dict().items()}
    return saved, PeftModel.from_pretrained(base, str(folder)).merge_and_unload().state_dict()


def test_the_speech_adapter_is_merged_on_load(granite, granite_dir, tmp_path):
    model, _ = granite
    assert (granite_dir / "adapter_config.json").is_file()
    assert not any("lora_" in n for n, _ in model.named_modules())
    assert not getattr(model, "_hf_peft_config_loaded", False) and model.config.has_lora_adapter is False
    assert all(p.requires_grad for p in model.parameters())
    base, merged = _base_and_merged_by_peft(granite_dir, tmp_path)
    ours = model.state_dict()
    changed = {k for k in base if not torch.equal(base[k], ours[k])}
    assert changed == {f"model.language_model.layers.{i}.self_attn.{p}_proj.weight"
                       for i in range(model.config.text_config.num_hidden_layers) for p in "qv"}
    assert all(torch.equal(ours[k], merged[k]) for k in base)


def test_the_speech_adapter_in_either_layout_merges_the_same(granite_dir, tmp_path):
    """The tiny model's speech adapter is named as the hub's (saved from transformers 4.x,
    whose module path was language_model.model.layers.N; transformers 5.17 renames its keys on
    load); one with the in-memory names (as apa wrote it before) merges to the same model."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "older"
    shutil.copytree(granite_dir, folder)
    adapter = load_file(str(folder / "adapter_model.safetensors"))
    assert all(k.startswith("base_model.model.language_model.model.layers.") for k in adapter)
    older = {k.replace("base_model.model.language_model.model.", "base_model.model.model.language_model."): v
             for k, v in adapter.items()}
    save_file(older, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    ours, _ = load_model_and_processor(granite_dir, device="cpu")
    hub, _ = load_model_and_processor(folder, device="cpu")
    a, b = ours.state_dict(), hub.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_make_tiny_is_what_load_returns_from_build_tiny(granite_dir):
    built, _ = GraniteSpeech.make_tiny(seed=0)
    loaded, _ = load_model_and_processor(granite_dir, dtype="float32", device="cpu")
    a, b = built.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_missing_speech_adapter_is_a_clear_error(granite_dir, tmp_path):
    folder = tmp_path / "partial"
    shutil.copytree(granite_dir, folder)
    (folder / "adapter_config.json").unlink()
    with pytest.raises(ApaError, match="speech LoRA adapter.*huggingface-cli download ibm-granite/granite-speech"):
        load_model_and_processor(folder, device="cpu")


def test_logits_are_divided_as_granites_language_model_divides_them(granite):
    """The stock forward and the interface's logits equal GraniteForCausalLM's (which divides
    by logits_scaling) on the same weights, in float64; the hook is added once."""
    from transformers import GraniteForCausalLM

    model, processor = granite
    text_model = GraniteForCausalLM(model.config.text_config).double().eval()
    text_model.model.load_state_dict(model.model.language_model.state_dict())
    text_model.lm_head.weight = text_model.model.embed_tokens.weight
    ids = processor.tokenizer("Sentence Scores: 8 9 10", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = text_model(input_ids=ids).logits
        stock = model(input_ids=ids).logits
        hidden = processor.hidden_states(model, processor.token_embeddings(model, ids), torch.ones_like(ids))
        scale_logits(model)  # idempotent
        ours = processor.logits(model, hidden)
    assert model.config.text_config.logits_scaling == 0.25  # the tiny's (muP) value: a x4 a missing hook shows
    assert torch.allclose(stock, expected, rtol=0, atol=1e-10)
    assert torch.allclose(ours, expected, rtol=0, atol=1e-10)


# --- LoRA -------------------------------------------------------------------------------------------

def test_lora_regex_keeps_off_the_encoders_layers_of_the_same_names(granite_dir):
    from apa.backbones.lora import add_lora

    model, processor = load_model_and_processor(granite_dir, device="cpu")
    encoder_names = {n.rsplit(".", 1)[-1] for n, _ in model.model.encoder.named_modules()}
    assert {"up_proj", "down_proj"} <= encoder_names  # what a plain name list would also hit
    adapted = add_lora(model, processor, r=2, alpha=4)
    names = [n for n, _ in adapted.named_modules() if n.endswith("lora_A")]
    assert names and all(".language_model.layers." in n for n in names)
    assert len(names) == 7 * model.config.text_config.num_hidden_layers
    model, processor = load_model_and_processor(granite_dir, device="cpu")
    audio = add_lora(model, processor, r=2, alpha=4, target_modules=("q_proj",), train_audio=True)
    names = [n for n, _ in audio.named_modules() if n.endswith("lora_A")]
    assert {n.split(".")[-2] for n in names if ".encoder." in n} == set(GraniteSpeech.audio_lora_targets)
    assert not any(".projector." in n for n in names)


# --- the tiny builder ---------------------------------------------------------------------------------

def test_tiny_configs_are_the_real_config_with_sizes_shrunk():
    config = tiny_configs("tiny")
    encoder, projector, text = TINY_SIZES["tiny"]
    assert config["encoder_config"] == dict(REAL_ENCODER_CONFIG, **encoder)
    assert config["projector_config"] == dict(REAL_PROJECTOR_CONFIG, **projector)
    widths = mup_multipliers(text["hidden_size"], text["num_attention_heads"])
    assert config["text_config"] == dict(REAL_TEXT_CONFIG, **text, **widths)
    # the width-dependent multipliers follow the rule that gives the real ones at the real width
    assert mup_multipliers(REAL_TEXT_CONFIG["hidden_size"], REAL_TEXT_CONFIG["num_attention_heads"]) == {
        "attention_multiplier": REAL_TEXT_CONFIG["attention_multiplier"],
        "logits_scaling": REAL_TEXT_CONFIG["logits_scaling"]}
    assert (config["audio_token_index"], config["window_size"], config["downsample_rate"]) == (49159, 15, 5)


def test_sizes_grow_and_a_window_or_bad_size_is_refused():
    widths = [tiny_configs(s)["text_config"]["hidden_size"] * tiny_configs(s)["text_config"]["num_hidden_layers"]
              for s in ("tiny", "small", "base")]
    assert widths == sorted(widths)
    with pytest.raises(ApaError, match="unknown model size"):
        tiny_configs("huge")
    with pytest.raises(ApaError, match="no audio window.*leave out --window"):
        tiny_configs("tiny", 10)


def test_tiny_model_is_deterministic():
    a, pa = GraniteSpeech.make_tiny(seed=0)
    b, pb = GraniteSpeech.make_tiny(seed=0)
    c, _ = GraniteSpeech.make_tiny(seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert pa.tokenizer.get_vocab() == pb.tokenizer.get_vocab()
    assert 200_000 < sum(p.numel() for p in a.parameters()) < 400_000


def test_tiny_model_command_refuses_a_window(tmp_path, capsys):
    from apa.cli import main

    assert main(["tiny-model", str(tmp_path / "m"), "--backbone", "granite-speech", "--window", "5"]) != 0
    assert "leave out --window" in capsys.readouterr().err


def test_no_network_is_a_quick_clear_error(monkeypatch):
    from apa.backbones import loading

    monkeypatch.setattr(loading, "in_hub_cache", lambda name: False)
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=5.0: False)
    with pytest.raises(ApaError, match=r"^cannot download ibm-granite/granite-speech-3.3-2b: no network.*"
                                       r"huggingface-cli download ibm-granite/granite-speech-3.3-2b"):
        load_model_and_processor(GraniteSpeech.hub_id, device="cpu")

"""Qwen2-Audio: the tiny model builder, loading errors and LoRA placement (apa.backbones.qwen2_audio)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from apa.cli import main
from apa.data.audio import SAMPLE_RATE
from apa.errors import ApaError
from apa.backbones.base import module_path
from apa.backbones.loading import load_adapter, load_model_and_processor
from apa.backbones.lora import add_lora
from apa.backbones.qwen2_audio import CHAT_TEMPLATE, SPECIAL_TOKENS, TINY_SIZES, Qwen2Audio
from apa.collate import prompt_text
from apa.tasks import TASKS


def _forward_logits(model, processor, clips, texts=None):
    texts = texts or ["<|audio_bos|><|AUDIO|><|audio_eos|>Score this."] * len(clips)
    batch = processor.encode(texts, clips, padding_side="left")
    with torch.no_grad():
        return model(**batch).logits, batch


def test_tiny_model_reloads_with_from_pretrained_and_same_logits(tiny_model_dir, make_sine):
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    built, built_processor = Qwen2Audio.make_tiny(seed=0)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    processor = Qwen2Audio(AutoProcessor.from_pretrained(tiny_model_dir))
    assert type(processor.hf_processor).__name__ == "Qwen2AudioProcessor"
    assert processor.tokenizer.get_vocab() == built_processor.tokenizer.get_vocab()
    clips = [make_sine(0.7), make_sine(1.1, 300.0)]
    expected, _ = _forward_logits(built, built_processor, clips)
    got, _ = _forward_logits(model, processor, clips)
    assert torch.equal(expected, got)
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 1_000_000


def test_tiny_model_is_deterministic():
    a, pa = Qwen2Audio.make_tiny(seed=0)
    b, pb = Qwen2Audio.make_tiny(seed=0)
    c, _ = Qwen2Audio.make_tiny(seed=1)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert pa.tokenizer.get_vocab() == pb.tokenizer.get_vocab()
    assert not all(torch.equal(sa[k], c.state_dict()[k]) for k in sa)


def test_tiny_config_matches_tokenizer(tiny_model):
    model, processor = tiny_model
    tokenizer = processor.tokenizer
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(ids[0], ids[0] + len(SPECIAL_TOKENS)))  # the real model's order
    assert model.config.audio_token_id == tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert model.config.text_config.vocab_size == len(tokenizer)
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id \
        == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert processor.hf_processor.chat_template == CHAT_TEMPLATE
    assert processor.feature_extractor.feature_size == 128 == model.config.audio_config.num_mel_bins
    assert model.dtype == torch.float32


def test_tokenizer_splits_digits_and_keeps_specials(tiny_processor):
    tokenizer = tiny_processor.tokenizer
    ids = tokenizer("10", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["1", "0"]
    tokens = tokenizer.convert_ids_to_tokens(
        tokenizer("BEAR/10/5<|im_end|>", add_special_tokens=False)["input_ids"])
    assert tokens[-1] == "<|im_end|>" and tokens.count("1") == 1 and "10" not in tokens
    text = "Word Scores: WE/10/10/10 ÉLAN/3\nPhone Scores: W/10 IY0/9"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_processor_expands_audio_and_forward_runs_on_two_lengths(tiny_model, make_sine, utterances):
    model, processor = tiny_model
    clips = [make_sine(0.5), make_sine(1.7, 300.0)]
    texts = [prompt_text(processor, TASKS["multi"], utt) for utt in utterances[:2]]
    logits, batch = _forward_logits(model, processor, clips, texts)
    assert batch["input_features"].shape == (2, 128, 3000)  # always the 30 s window
    n_audio = (batch["input_ids"] == model.config.audio_token_id).sum(-1).tolist()
    frames = [len(c) // 160 for c in clips]
    assert n_audio == [(((f - 1) // 2 + 1) - 2) // 2 + 1 for f in frames]  # 25 tokens per second
    assert n_audio[1] > n_audio[0]
    assert logits.shape == (*batch["input_ids"].shape, len(processor.tokenizer))
    assert torch.isfinite(logits).all()


def test_lora_targets_only_language_model_linears(fresh_tiny_model):
    model, processor = fresh_tiny_model
    assert module_path(model, processor.text_model(model)) == "model.language_model"
    peft_model = add_lora(model, processor, r=4, alpha=8)
    lora_modules = {name.rsplit(".lora_A", 1)[0] for name, _ in peft_model.named_modules() if name.endswith("lora_A")}
    assert lora_modules, "no LoRA layer was added"
    assert all(".language_model." in n for n in lora_modules)
    assert not any("audio_tower" in n or "multi_modal_projector" in n for n in lora_modules)
    suffixes = {n.rsplit(".", 1)[1] for n in lora_modules}
    assert suffixes == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert len(lora_modules) == 7 * model.config.text_config.num_hidden_layers
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_lora_train_audio_adds_encoder_layers(fresh_tiny_model):
    model, processor = fresh_tiny_model
    peft_model = add_lora(model, processor, target_modules=("q_proj", "v_proj"), train_audio=True)
    names = [n for n, _ in peft_model.named_modules() if n.endswith("lora_A")]
    assert any("audio_tower" in n for n in names) and any("language_model" in n for n in names)
    assert not any("multi_modal_projector" in n for n in names)
    assert not any(re.search(r"language_model.*(k_proj|gate_proj)", n) for n in names)


def test_saved_adapter_reloads_to_same_logits(fresh_tiny_model, tiny_model_dir, tmp_path, make_sine):
    model, processor = fresh_tiny_model
    peft_model = add_lora(model, processor, r=4, alpha=8, dropout=0.0)
    with torch.no_grad():  # make the adapter do something (B is zero at init)
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft_model.eval()
    peft_model.save_pretrained(tmp_path / "adapter")
    expected, _ = _forward_logits(peft_model, processor, [make_sine(0.8)])
    reloaded, processor2 = load_model_and_processor(tiny_model_dir, adapter=tmp_path / "adapter", device="cpu")
    got, _ = _forward_logits(reloaded, processor2, [make_sine(0.8)])
    assert torch.allclose(expected, got, atol=1e-6)


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ApaError, match="does not exist.*apa tiny-model"):
        load_model_and_processor(tmp_path / "no_such_model")


def test_no_network_is_a_quick_clear_error(monkeypatch):
    from apa.backbones import loading

    monkeypatch.setattr(loading, "in_hub_cache", lambda name: False)
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=5.0: False)
    with pytest.raises(ApaError) as info:
        load_model_and_processor("Qwen/Qwen2-Audio-7B-Instruct", device="cpu")
    message = str(info.value)
    assert message.startswith("cannot download Qwen/Qwen2-Audio-7B-Instruct: no network")
    assert "huggingface-cli download Qwen/Qwen2-Audio-7B-Instruct" in message and "--model DIR" in message
    assert "apa tiny-model" in message and "\n" not in message


def test_failed_download_is_a_clear_error(monkeypatch):
    import transformers

    from apa.backbones import loading

    def fails(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files\nmore lines")

    monkeypatch.setattr(loading, "in_hub_cache", lambda name: False)
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=5.0: True)
    monkeypatch.setattr(transformers.PretrainedConfig, "get_config_dict", fails)
    with pytest.raises(ApaError) as info:
        load_model_and_processor("Qwen/Qwen2-Audio-7B-Instruct", device="cpu")
    message = str(info.value)
    assert "couldn't connect" in message and "--model DIR" in message and "\n" not in message


def test_missing_adapter_is_a_clear_error(tiny_model_dir, tmp_path):
    model, _ = load_model_and_processor(tiny_model_dir, device="cpu")
    with pytest.raises(ApaError, match="adapter_config.json"):
        load_adapter(model, tmp_path)


# --- the audio window -----------------------------------------------------------------

def _audio_batch(processor, seconds: list[float]):
    clips = [np.sin(np.arange(int(s * SAMPLE_RATE)) * 0.05).astype(np.float32) * 0.3 for s in seconds]
    texts = ["Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nscore it"] * len(clips)
    return processor.encode(texts, clips, padding_side="right")


@pytest.mark.parametrize("window", [4, 12])
def test_window_processor_frames_encoder_positions_and_audio_tokens_agree(window):
    model, processor = Qwen2Audio.make_tiny(seed=0, size="tiny", window_seconds=window)
    positions = model.config.audio_config.max_source_positions
    assert positions == window * 50
    assert processor.audio_window_seconds == window
    batch = _audio_batch(processor, [2.0, window + 3.0])  # one short clip, one cut to the window
    assert batch["input_features"].shape[-1] == positions * 2 == window * 100
    audio_id = model.config.audio_token_id
    tokens = (batch["input_ids"] == audio_id).sum(dim=1).tolist()
    assert tokens == [2 * 25, window * 25]
    with torch.no_grad():  # the encoder accepts the frames and its features fill every <|AUDIO|>
        embeds = processor.embed(model, batch["input_ids"], batch)
        logits = model(**batch).logits
    assert embeds.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()


def test_window_survives_save_and_reload(tmp_path):
    from apa.backbones.loading import load_model_and_processor

    out = Qwen2Audio.build_tiny(tmp_path / "m", seed=0, size="tiny", window_seconds=7)
    model, processor = load_model_and_processor(out, device="cpu")
    extractor = processor.feature_extractor
    assert (extractor.chunk_length, extractor.n_samples, extractor.nb_max_frames) == (7, 7 * 16000, 700)
    assert model.config.audio_config.max_source_positions == 350
    assert _audio_batch(processor, [1.0])["input_features"].shape[-1] == 700


def test_tiny_configs_are_the_real_config_with_sizes_shrunk():
    from apa.backbones.qwen2_audio import FULL_WINDOW_SECONDS, REAL_AUDIO_CONFIG, REAL_TEXT_CONFIG

    audio, text = Qwen2Audio.tiny_configs()
    assert FULL_WINDOW_SECONDS == 30 and audio["max_source_positions"] == 1500
    assert audio["d_model"] == 32 and text["hidden_size"] == 64
    sizes = {"d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "max_source_positions",
             "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size"}
    assert {k: v for k, v in audio.items() if k not in sizes} == {k: v for k, v in REAL_AUDIO_CONFIG.items()
                                                                   if k not in sizes}
    assert {k: v for k, v in text.items() if k not in sizes} == {k: v for k, v in REAL_TEXT_CONFIG.items()
                                                                  if k not in sizes}


def test_sizes_grow_and_bad_sizes_or_windows_are_refused():
    counts = []
    for size in ("tiny", "small", "base"):
        audio, text = Qwen2Audio.tiny_configs(size, 10)
        counts.append(audio["d_model"] * audio["encoder_layers"] + text["hidden_size"] * text["num_hidden_layers"])
    assert counts == sorted(counts) and list(TINY_SIZES) == ["tiny", "small", "base"]
    with pytest.raises(ApaError, match="unknown model size"):
        Qwen2Audio.tiny_configs("huge")
    for window in (0, 31, 2.5):
        with pytest.raises(ApaError, match="whole number of seconds"):
            Qwen2Audio.tiny_configs("tiny", window)


def test_tiny_model_command_writes_size_and_window(tmp_path, capsys):
    assert main(["tiny-model", str(tmp_path / "m"), "--size", "tiny", "--window", "5"]) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["audio_config"]["max_source_positions"] == 250
    assert "5 s audio window" in capsys.readouterr().out

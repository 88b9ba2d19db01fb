"""Qwen2.5-Omni (thinker only): what is specific to the family (apa.backbones.qwen2_5_omni).

The batches are built without Qwen2_5OmniProcessor (it needs torchvision for video), so they are
checked here against the real processor, assembled with a do-nothing video processor; the
positions against the model's own get_rope_index (both of its branches); the tiny model against
the release's layout and config; and the loading of a thinker saved alone (what full_finetune
writes) and of the release's preprocessor_config.json.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from apa.backbones.loading import load_model_and_processor
from apa.backbones.qwen2_5_omni import (CHAT_TEMPLATE, REAL_AUDIO_CONFIG, REAL_TEXT_CONFIG, SPECIAL_TOKENS,
                                        TINY_SIZES, Qwen2_5Omni)
from apa.cli import main
from apa.collate import build_generation_batch, build_training_batch, prompt_text
from apa.errors import ApaError
from apa.inference.cached_rows import CachedRows
from apa.tasks import TASKS

SR = 16000


@pytest.fixture(scope="module")
def omni_dir(tmp_path_factory):
    return Qwen2_5Omni.build_tiny(tmp_path_factory.mktemp("omni"), seed=0)


@pytest.fixture(scope="module")
def omni(omni_dir):
    return load_model_and_processor(omni_dir, dtype="float32", device="cpu")


@pytest.fixture
def real_processor(omni, monkeypatch):
    """transformers' Qwen2_5OmniProcessor around the tiny tokenizer and feature extractor, with
    a video processor that does nothing (apa sends no video; transformers' own needs
    torchvision). Without torchvision transformers.BaseVideoProcessor is a placeholder that
    the processor checks its argument against: point it at the real class for the test."""
    import transformers
    from transformers import Qwen2_5OmniProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.video_processing_utils import BaseVideoProcessor

    monkeypatch.setattr(transformers, "BaseVideoProcessor", BaseVideoProcessor)

    class NoVideo(BaseVideoProcessor):
        merge_size = 2
        temporal_patch_size = 2

    _, processor = omni
    return Qwen2_5OmniProcessor(image_processor=Qwen2VLImageProcessorPil(), video_processor=NoVideo(),
                                feature_extractor=processor.feature_extractor, tokenizer=processor.tokenizer,
                                chat_template=CHAT_TEMPLATE)


def noise(seconds: float, seed: int, loud_end: bool = False) -> np.ndarray:
    clip = np.random.default_rng(seed).standard_normal(int(seconds * SR)).astype(np.float32) * 0.05
    if loud_end:  # the loudest frame, which sets Whisper's log-mel floor, at the clip's very end
        clip[-50:] *= 40
    return clip


def test_batches_equal_the_real_processors_at_its_300_s_padding(omni, real_processor, utterances):
    """Token ids, masks and audio-token counts equal; features equal bit for bit on every valid
    frame, although ours are padded to the longest clip (+ one FFT window), not to 300 s."""
    _, processor = omni
    texts = [prompt_text(processor, TASKS["multi"], utt) for utt in utterances[:3]]
    clips = [noise(1.37, 0, loud_end=True), noise(0.41, 1), noise(2.0 + 7 / SR, 2, loud_end=True)]
    for side in ("left", "right"):
        ours = processor.encode(texts, clips, padding_side=side)
        real = real_processor(text=texts, audio=clips, sampling_rate=SR, padding=True, padding_side=side,
                              return_tensors="pt")
        assert real["input_features"].shape[-1] == 30000 and ours["input_features"].shape[-1] < 250
        for key in ("input_ids", "attention_mask", "feature_attention_mask"):
            width = ours[key].shape[-1]
            assert torch.equal(ours[key], real[key][..., :width]) and not real[key][..., width:].any(), key
        for i, frames in enumerate(ours["feature_attention_mask"].sum(-1).tolist()):
            assert torch.equal(ours["input_features"][i, :, :frames], real["input_features"][i, :, :frames])
    tokens = (ours["input_ids"] == processor.audio_token_id).sum(-1).tolist()
    assert tokens == [34, 10, 50]  # 25 per second: ((frames - 1) // 2 + 1 - 2) // 2 + 1 of 137, 41, 201 frames


def test_each_clip_is_encoded_by_the_models_own_method_into_its_token_count(omni, utterances):
    model, processor = omni
    batch = build_training_batch(processor, utterances, TASKS["sentence_total"])
    features = processor.clip_features(model, batch)
    assert [f.shape[0] for f in features] == (batch["input_ids"] == processor.audio_token_id).sum(-1).tolist()
    with torch.no_grad():
        whole = model.get_audio_features(batch["input_features"], batch["feature_attention_mask"]).last_hidden_state
    assert torch.equal(torch.cat(features), whole)
    with pytest.raises(ValueError, match="2 audio placeholders for 1 clips"):
        processor.expand_audio(["<|AUDIO|>a", "<|AUDIO|>b"], [3])


def test_prompt_positions_are_the_models_tmrope_and_continue_one_by_one(omni, utterances):
    """get_rope_index, text branch (what apa uses: no image or video) and the 3-D branch that
    aligns audio with time (forced with an empty image grid), agree on our left-padded prompts:
    every real token at its index among the row's real tokens, on all three axes, delta 0."""
    model, processor = omni
    batch = build_generation_batch(processor, utterances[:3], TASKS["multi"])
    mask = batch["attention_mask"]
    text, text_delta = model.get_rope_index(attention_mask=mask)
    grid, grid_delta = model.get_rope_index(batch["input_ids"], image_grid_thw=torch.zeros((0, 3), dtype=torch.long),
                                            attention_mask=mask,
                                            audio_seqlens=batch["feature_attention_mask"].sum(-1))
    real = mask.bool().expand(3, -1, -1)
    assert torch.equal(text[real], grid[real])
    assert torch.equal(text[real], (mask.cumsum(-1) - 1).expand(3, -1, -1)[real])
    assert text_delta.abs().sum() == 0 and grid_delta.abs().sum() == 0
    assert torch.equal(processor.position_ids(torch.tensor([[7, 8]])), torch.tensor([[[7, 8]]] * 3))


def test_a_chunk_fed_on_the_cache_equals_the_whole_sequence_whatever_the_thinker_cached(omni, utterances):
    """The decoders' path (prefill, then a response chunk at explicit 1-D positions) against the
    stock forward of prompt + chunk, after a stale rope_deltas was left on the thinker."""
    model, processor = omni
    utts = utterances[:2]
    batch = build_generation_batch(processor, utts, TASKS["sentence_total"])
    chunk = processor.tokenizer("Sentence Scores: 10", add_special_tokens=False)["input_ids"]
    model.rope_deltas = torch.tensor([[5], [9]])  # what an earlier call with other inputs may leave
    with torch.no_grad():
        rows = CachedRows(model, processor)
        rows.prefill(batch, [[], []])
        fed = rows.logits(rows.feed([chunk, chunk]))
        for r, utt in enumerate(utts):
            alone = build_generation_batch(processor, [utt], TASKS["sentence_total"])
            ids = torch.cat([alone["input_ids"], torch.tensor([chunk])], dim=1)
            stock = model(**{**alone, "input_ids": ids, "attention_mask": torch.ones_like(ids)}).logits
            assert torch.allclose(fed[r], stock[0, -len(chunk):], atol=1e-4)
    model.rope_deltas = None


def test_batched_free_generation_equals_each_row_alone(omni, utterances):
    """generate on a left-padded batch (transformers' own TMRoPE positions) against one row."""
    from apa.inference.free import greedy_generation_config

    model, processor = omni
    config = greedy_generation_config(processor, 6)
    config.output_logits, config.return_dict_in_generate = True, True
    utts = utterances[:2]
    with torch.no_grad():
        both = model.generate(**build_generation_batch(processor, utts, TASKS["multi"]), generation_config=config)
        alone = model.generate(**build_generation_batch(processor, utts[1:], TASKS["multi"]), generation_config=config)
    assert torch.allclose(torch.stack(both.logits)[:, 1], torch.stack(alone.logits)[:, 0], atol=1e-4)


def test_chat_input_is_the_real_templates(omni):
    """As the release's processor renders it (printed by transformers 5.17 with the hub files):
    the template's default system turn, no "Audio 1:" and no newline around the audio."""
    _, processor = omni
    assert processor.render("Score it.") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|audio_bos|><|AUDIO|><|audio_eos|>Score it.<|im_end|>\n<|im_start|>assistant\n")
    without_system = [m for m in Qwen2_5Omni.messages("Score it.") if m["role"] != "system"]
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[without_system], chat_template=CHAT_TEMPLATE,
                                        add_generation_prompt=True)
    assert rendered[0] == processor.render("Score it.")  # the explicit system prompt is the default


def test_tokenizer_splits_digits_and_keeps_the_real_added_tokens(omni):
    model, processor = omni
    tokenizer = processor.tokenizer
    assert tokenizer.convert_ids_to_tokens(tokenizer(" 10", add_special_tokens=False)["input_ids"]) == ["Ġ", "1", "0"]
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(ids[0], ids[0] + len(SPECIAL_TOKENS))) and ids[-1] == len(tokenizer) - 1
    assert tokenizer.audio_token == "<|AUDIO|>" and tokenizer.pad_token == "<|endoftext|>"
    config = model.config
    assert (config.audio_token_id, config.audio_start_token_id, config.audio_end_token_id, config.image_token_id,
            config.video_token_id, config.vision_start_token_id) == tuple(
        tokenizer.convert_tokens_to_ids(t) for t in ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|IMAGE|>",
                                                     "<|VIDEO|>", "<|vision_bos|>"))
    assert model.generation_config.eos_token_id == processor.end_of_turn_id


def test_tiny_model_is_laid_out_as_the_release_and_deterministic(omni_dir, omni):
    from safetensors import safe_open

    config = json.loads((omni_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_omni" and config["thinker_config"]["model_type"] == "qwen2_5_omni_thinker"
    with safe_open(str(omni_dir / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("thinker.") for k in keys)
    model, _ = omni
    built, _ = Qwen2_5Omni.make_tiny(seed=0)
    other, _ = Qwen2_5Omni.make_tiny(seed=1)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in built.state_dict().items())
    assert not torch.equal(state["lm_head.weight"], other.state_dict()["lm_head.weight"])
    assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()  # untied, as released
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 400_000


def test_tiny_configs_are_the_real_config_with_sizes_shrunk():
    sizes = {"d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "output_dim", "hidden_size",
             "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size", "rope_parameters"}
    for size in TINY_SIZES:
        audio, text = Qwen2_5Omni.tiny_configs(size, 12)
        assert {k: v for k, v in audio.items() if k not in sizes} == {k: v for k, v in REAL_AUDIO_CONFIG.items()
                                                                       if k not in sizes}
        assert {k: v for k, v in text.items() if k not in sizes} == {k: v for k, v in REAL_TEXT_CONFIG.items()
                                                                      if k not in sizes}
        rope = text["rope_parameters"]
        half_head = text["hidden_size"] // text["num_attention_heads"] // 2
        assert sum(rope["mrope_section"]) == half_head and rope["mrope_section"][1] == rope["mrope_section"][0] * 1.5
        assert {k: v for k, v in rope.items() if k != "mrope_section"} == {
            k: v for k, v in REAL_TEXT_CONFIG["rope_parameters"].items() if k != "mrope_section"}
        assert audio["output_dim"] == text["hidden_size"]
    for window in (0, 301, 2.5):
        with pytest.raises(ApaError, match="whole number of seconds"):
            Qwen2_5Omni.tiny_configs("tiny", window)


def test_window_cuts_clips_and_survives_save_and_reload(tmp_path, capsys):
    assert main(["tiny-model", str(tmp_path / "m"), "--backbone", "qwen2.5-omni", "--window", "3"]) == 0
    assert "3 s audio window" in capsys.readouterr().out
    model, processor = load_model_and_processor(tmp_path / "m", device="cpu")
    assert processor.audio_window_seconds == 3 and processor.feature_extractor.n_samples == 3 * SR
    batch = processor.encode(["<|AUDIO|>a", "<|AUDIO|>b"], [noise(1.0, 0), noise(4.5, 1)], padding_side="right")
    assert (batch["input_ids"] == processor.audio_token_id).sum(-1).tolist() == [25, 75]
    assert processor.audio_token_count(4.5) == 75 and processor.audio_token_count(1.0) == 25


def test_a_thinker_saved_alone_reloads(omni, tmp_path, utterances):
    """What `apa train` with full_finetune writes: the thinker's save_pretrained (model_type
    qwen2_5_omni_thinker, no thinker. prefix) and the processor's."""
    model, processor = omni
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "qwen2_5_omni_thinker"
    again, processor2 = load_model_and_processor(tmp_path / "m", dtype="float32", device="cpu")
    batch = build_generation_batch(processor, utterances[:1], TASKS["multi"])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, again(**build_generation_batch(processor2, utterances[:1],
                                                                                TASKS["multi"])).logits)


def test_the_releases_preprocessor_config_gives_its_feature_extractor(tmp_path):
    """Qwen/Qwen2.5-Omni-7B's preprocessor_config.json (Whisper and image settings in one file)."""
    from transformers import WhisperFeatureExtractor

    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "chunk_length": 300, "dither": 0.0, "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 128,
        "hop_length": 160, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "Qwen2VLImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711],
        "max_pixels": 12845056, "merge_size": 2, "min_pixels": 3136, "n_fft": 400, "n_samples": 4800000,
        "nb_max_frames": 30000, "padding_side": "right", "padding_value": 0.0, "patch_size": 14,
        "processor_class": "Qwen2_5OmniProcessor", "return_attention_mask": True, "sampling_rate": 16000,
        "temporal_patch_size": 2}))
    processor = Qwen2_5Omni(None, WhisperFeatureExtractor.from_pretrained(tmp_path))
    assert processor.audio_window_seconds == 300 and processor.feature_extractor.feature_size == 128


def test_a_folder_without_the_tokenizer_is_a_clear_error(omni_dir, tmp_path):
    import shutil

    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        shutil.copy(omni_dir / name, tmp_path / name)
    with pytest.raises(ApaError, match=r"no Qwen2.5-Omni tokenizer .*tokenizer.json"):
        load_model_and_processor(tmp_path, device="cpu")


def test_lora_stays_off_the_audio_and_vision_encoders(omni_dir):
    from apa.backbones.lora import add_lora, lora_parameter_count

    model, processor = load_model_and_processor(omni_dir, device="cpu")
    adapted = [n for n, _ in add_lora(model, processor, train_audio=True).named_modules() if n.endswith("lora_A")]
    assert not any(".visual." in n for n in adapted)
    assert any(".audio_tower." in n for n in adapted) and any(".model.layers." in n for n in adapted)
    model, processor = load_model_and_processor(omni_dir, device="cpu")
    text = model.config.text_config
    kv = text.num_key_value_heads * text.hidden_size // text.num_attention_heads
    per_layer = sum(d_in + d_out for d_in, d_out in [(text.hidden_size, text.hidden_size)] * 2 + [
        (text.hidden_size, kv)] * 2 + [(text.hidden_size, text.intermediate_size)] * 3)
    assert lora_parameter_count(model, processor, r=8) == 8 * per_layer * text.num_hidden_layers

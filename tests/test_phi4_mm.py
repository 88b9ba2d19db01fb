"""Phi-4-multimodal (apa.backbones.phi4_mm): what is specific to the family.

The audio placeholder's expansion and token counts, 1-D positions and the long-rope switch, the
o200k tokenizer's digits ("10" is one token) in the constrained decoders, the chat rendering
against the original template, the speech LoRA merged at load, LoRA kept off the audio encoder
(which shares the text model's layer names), the tiny builder, the real model's sizes, and the
loading errors. Comparisons run in float64: the same sums in another order differ by ~1e-16
relative, so 1e-10 on values of order 1 (1e-12 on audio features of order 0.01) is far above
rounding and far below any real difference (a shifted position, a missing adapter, a padded frame).
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from apa.backbones.phi4_mm import CHAT_TEMPLATE, MERGED_FLAG, SPEECH_LORA, Phi4MM
from apa.backbones.phi4_mm_tiny import (REAL_AUDIO_CONFIG, REAL_ROPE, REAL_TEXT_CONFIG, REAL_VISION_CONFIG,
                                        SPECIAL_TOKENS, TINY_SIZES)
from apa.cli import main
from apa.errors import ApaError

SR = 16000


@pytest.fixture(scope="module")
def phi4_dir(tmp_path_factory):
    return Phi4MM.build_tiny(tmp_path_factory.mktemp("phi4"), seed=0)


def load(path, dtype="float32"):
    from apa.backbones.loading import load_model_and_processor

    return load_model_and_processor(path, dtype=dtype, device="cpu")


@pytest.fixture(scope="module")
def phi4(phi4_dir):
    """(model, processor), float64: shared, do not modify."""
    return load(phi4_dir, dtype="float64")


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.RandomState(seed).randn(int(round(seconds * SR)))).astype(np.float32)


# --- batches: the placeholder's expansion and the audio tokens ------------------------------

def test_encode_equals_the_transformers_processor(phi4):
    """Phi4MultimodalProcessor itself (a stand-in for its torchvision-only image processor, which
    audio never reaches) gives the same batch, key for key, in both padding sides."""
    from transformers import Phi4MultimodalProcessor
    from transformers.image_processing_utils import BaseImageProcessor

    class NoImages(BaseImageProcessor):
        model_input_names = ["image_pixel_values", "image_sizes", "image_attention_mask"]

    _, processor = phi4
    hf = Phi4MultimodalProcessor(image_processor=NoImages(), audio_processor=processor.feature_extractor,
                                 tokenizer=processor.tokenizer)
    clips = [noise(0.5), noise(1.52, 1), noise(1.0, 2)]
    texts = [processor.render(f"Score sentence {i}.") for i in range(3)]
    for side in ("left", "right"):
        ours = processor.encode(texts, clips, padding_side=side)
        theirs = hf(text=texts, audio=clips, sampling_rate=SR, padding=True, padding_side=side, return_tensors="pt")
        assert set(ours) == set(theirs)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), side
    one = processor.encode(texts[:1], clips[:1], padding_side="left")
    theirs = hf(text=texts[:1], audio=clips[:1], sampling_rate=SR, return_tensors="pt")
    assert "audio_attention_mask" not in theirs and one["audio_attention_mask"].all()  # ours always has one
    assert all(torch.equal(one[k], theirs[k]) for k in theirs)


@pytest.mark.parametrize("seconds", [0.3, 1.5, 4.01])
def test_audio_tokens_are_ceil_frames_over_8_and_what_the_encoder_gives(phi4, seconds):
    model, processor = phi4
    clip = noise(seconds)
    batch = processor.encode([processor.render("x")], [clip], padding_side="right")
    frames = (len(clip) - 400) // 160 + 1  # 25 ms windows every 10 ms
    n = -(-frames // 8)
    assert int((batch["input_ids"] == processor.audio_token_id).sum()) == n == int(batch["audio_embed_sizes"][0])
    assert processor.audio_token_count(seconds) == n
    assert batch["audio_input_features"].shape == (1, frames, 80)
    with torch.no_grad():  # the encoder's own output length (subsampling x8) is the token count
        encoded = model.model.embed_tokens_extend.audio_embed.encoder(batch["audio_input_features"].double(), None)
    assert encoded.shape[1] == n and processor.clip_features(model, batch)[0].shape[0] == n


def test_one_clip_with_or_without_its_mask_is_the_same(phi4):
    """The feature extractor gives no mask for a single clip; ours always holds one (all true)."""
    model, processor = phi4
    batch = processor.encode([processor.render("x")], [noise(1.3)], padding_side="left")
    with torch.no_grad():
        with_mask = model(**batch).logits
        without = model(**{k: v for k, v in batch.items() if k != "audio_attention_mask"}).logits
    assert torch.equal(with_mask, without)


def test_a_clip_over_40_s_is_heard_whole_in_encoder_windows(phi4):
    """No audio window: 41 s gives 513 audio tokens; the encoder unfolds them into 500-position
    (40 s) windows and every token gets a feature, also beside another clip (which transformers'
    batched unfold cannot do: clip_features encodes such a batch clip by clip)."""
    from apa.inference.score import LONGEST_RECORDING_SECONDS, clip_limit

    model, processor = phi4
    assert processor.audio_window_seconds is None and clip_limit(processor) == LONGEST_RECORDING_SECONDS
    texts, clips = [processor.render("x")] * 2, [noise(41.0), noise(2.0, 1)]
    batch = processor.encode(texts, clips, padding_side="left")
    assert batch["audio_embed_sizes"].tolist() == [513, 25]
    assert processor.encoder_windows(batch["audio_input_features"]) == 2
    with torch.no_grad():
        features = processor.clip_features(model, batch)
        alone = processor.clip_features(model, processor.encode(texts[:1], clips[:1], padding_side="left"))
    assert [f.shape[0] for f in features] == [513, 25] and torch.isfinite(features[1]).all()
    assert torch.allclose(features[0], alone[0], rtol=0, atol=1e-12)  # the longest clip is not padded
    with pytest.raises(ApaError, match="free decoding cannot batch a clip over 40 s"):
        processor.generate_inputs(batch)


def test_clip_by_clip_encoding_computes_what_the_batched_encoder_does(phi4, monkeypatch):
    """The fallback above, forced on a short batch: the same features as the batched call (the
    encoder treats clips independently; float64, so only summation order differs)."""
    model, processor = phi4
    batch = processor.encode([processor.render("x")] * 3, [noise(0.7), noise(2.3, 1), noise(1.2, 2)], "right")
    with torch.no_grad():
        batched = processor.clip_features(model, batch)
        monkeypatch.setattr(Phi4MM, "encoder_windows", lambda self, features: 2)
        one_by_one = processor.clip_features(model, batch)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(batched, one_by_one))


def test_a_clip_without_a_frame_is_a_clear_error(phi4):
    _, processor = phi4
    with pytest.raises(ApaError, match="shorter than Phi-4's analysis window .400 samples, 25 ms"):
        processor.encode([processor.render("x")], [np.zeros(399, np.float32)], padding_side="left")


# --- positions and the long-rope switch ------------------------------------------------------

def test_left_padded_rows_with_explicit_positions_equal_each_row_alone(phi4):
    """1-D rotary positions: a left-padded row with positions cumsum(mask) - 1, continued on a KV
    cache, gives the hidden states of the row run alone. (Clips of one length: the encoder lets a
    clip's padding shift its features, which is the model's own behaviour, not a position's.)"""
    from transformers import DynamicCache

    model, processor = phi4
    texts, clips = [processor.render("a"), processor.render("a longer instruction")], [noise(1.0), noise(1.0, 1)]
    batch = processor.encode(texts, clips, padding_side="left")
    mask = batch["attention_mask"]
    chunk = torch.tensor([processor.tokenizer("Accuracy: 10", add_special_tokens=False)["input_ids"]] * 2)
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        processor.hidden_states(model, processor.embed(model, batch["input_ids"], batch), mask,
                                mask.cumsum(1) - 1, cache)
        ahead = mask.sum(1, keepdim=True) + torch.arange(chunk.shape[1])
        full_mask = torch.cat([mask, torch.ones_like(chunk)], 1)
        got = processor.hidden_states(model, processor.token_embeddings(model, chunk), full_mask, ahead, cache)
        for r in range(2):
            alone = processor.encode(texts[r:r + 1], clips[r:r + 1], padding_side="left")
            ids = torch.cat([alone["input_ids"], chunk[r:r + 1]], 1)
            expected = model.model(input_ids=ids, **{k: v for k, v in alone.items() if k.startswith("audio")})
            assert torch.allclose(got[r], expected.last_hidden_state[0, -chunk.shape[1]:], rtol=0, atol=1e-10)


def test_positions_past_the_long_rope_switch_are_refused(phi4):
    model, processor = phi4
    switch = model.config.rope_parameters["original_max_position_embeddings"]
    assert switch == 4096 and model.config.rope_parameters["rope_type"] == "longrope"
    embeds = processor.token_embeddings(model, torch.tensor([[5]]))
    ok = processor.hidden_states(model, embeds, torch.ones(1, 1), torch.tensor([[switch - 1]]))
    assert ok.shape == (1, 1, model.config.hidden_size)
    with pytest.raises(ApaError, match="long-rope switch at 4096"):
        processor.hidden_states(model, embeds, torch.ones(1, 1), torch.tensor([[switch]]))


# --- the tokenizer: o200k digits ---------------------------------------------------------------

def test_numbers_are_grouped_up_to_three_digits(phi4):
    tokenizer = phi4[1].tokenizer
    pieces = lambda text: tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert pieces("10") == ["10"] and pieces(" 10") == ["Ġ", "10"]  # the space is never glued to a number
    assert pieces("Accuracy: 10, 7") == pieces("Accuracy:") + ["Ġ", "10", ",", "Ġ", "7"]
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    assert [p for p, _ in pre.pre_tokenize_str("12345")] == ["123", "45"]
    text = "Word Scores: WE/10/10/10 ÉLAN/3\nPhone Scores: W/10 IY0/9<|end|>"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    assert pieces("<|end|>") == ["<|end|>"]


def test_score_values_are_single_tokens_and_both_decoders_equal_brute_force(phi4, utterances):
    """The trie of 0-10 is eleven leaves under the root: one model decision per value, no side
    tokens, so sequential decoding spends one call per slot (Qwen's needs a probe for "1"...)."""
    from apa.inference.decoding import DecodeStats, decode_batch
    from apa.inference.slots import TemplateTokens
    from apa.targets import ScoreSet, parse_scores
    from apa.tasks import TASKS
    from decoding_checks import brute_force, slot_values

    model, processor = phi4
    tokens = TemplateTokens(processor.tokenizer, processor.end_of_turn_id)
    trie = tokens.scores
    assert all(len(ids) == 1 for ids in trie.tokens.values()) and len(set(map(tuple, trie.tokens.values()))) == 11
    assert trie.deciding == [trie.root] and trie.side_paths == []
    assert all(not child.children for child in trie.root.children.values())
    utt, task = utterances[1], TASKS["word_accuracy"]
    values, expected = brute_force(model, processor, utt, task)
    for mode in ("constrained", "constrained-sequential"):
        stats = DecodeStats()
        result = decode_batch(model, processor, [utt], task, decoding=mode, stats=stats)[0]
        assert slot_values(parse_scores(result["output"], utt, task).scores, utt, task) == values, mode
        assert slot_values(ScoreSet.from_dict(result["expected"]), utt, task) == pytest.approx(expected, abs=1e-9)
        if mode == "constrained-sequential":
            assert stats.model_calls == 1 + len(utt.words)  # the prefill, then one call per slot


# --- the chat rendering ----------------------------------------------------------------------------

def test_rendering_equals_the_original_template_and_the_transformers_test_prompt():
    from transformers.utils.chat_template_utils import render_jinja_template

    # The hub main branch's template (tokenizer_config.json of the phi4mm format), verbatim:
    # text only, the audio placeholder typed into the content.
    original = ("{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message and "
                "message['tools'] is not none %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + "
                "message['tools'] + '<|/tool|>' + '<|end|>' }}{% else %}{{ '<|' + message['role'] + '|>' + "
                "message['content'] + '<|end|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}"
                "{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}")
    instruction = "Score the pronunciation from 0 to 10."
    rendered, _ = render_jinja_template(conversations=[[{"role": "user", "content": "<|audio|>" + instruction}]],
                                        chat_template=original, add_generation_prompt=True)
    assert Phi4MM.render(instruction) == rendered[0] == f"<|user|><|audio|>{instruction}<|end|><|assistant|>"
    answered, _ = render_jinja_template(
        conversations=[Phi4MM.messages(instruction) + [{"role": "assistant", "content": "8"}]],
        chat_template=CHAT_TEMPLATE, eos_token="<|endoftext|>")
    assert answered[0].endswith("<|assistant|>8<|end|><|endoftext|>")  # the turn ends with <|end|>


# --- the speech LoRA ------------------------------------------------------------------------------

def test_the_tiny_model_is_laid_out_as_the_real_checkpoint(phi4_dir):
    files = {p.name for p in phi4_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", SPEECH_LORA} <= files
    adapter = json.loads((phi4_dir / SPEECH_LORA / "adapter_config.json").read_text())
    assert adapter["lora_alpha"] / adapter["r"] == 640 / 320 and adapter["lora_dropout"] == 0.01
    config = json.loads((phi4_dir / "config.json").read_text())
    assert config["model_type"] == "phi4_multimodal" and MERGED_FLAG not in config


def test_load_merges_the_speech_lora_into_the_text_model_only(phi4_dir, phi4):
    """Merged = the base with the adapter active (to float64 rounding), and different from the
    base without it; only the text model's four projections change."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import Phi4MultimodalForCausalLM

    merged, processor = phi4
    base = Phi4MultimodalForCausalLM.from_pretrained(phi4_dir, dtype=torch.float64).eval()
    batch = processor.encode([processor.render("Score it.")], [noise(1.1)], padding_side="left")
    with torch.no_grad():
        plain = base(**batch).logits
        active = PeftModel.from_pretrained(base, str(phi4_dir / SPEECH_LORA))(**batch).logits
        ours = merged(**batch).logits
    assert torch.allclose(ours, active, rtol=0, atol=1e-10) and not torch.allclose(ours, plain, atol=1e-3)
    saved = load_file(str(phi4_dir / "model.safetensors"))
    state = merged.state_dict()
    changed = {k for k, v in saved.items() if not torch.equal(v.double(), state[k])}
    assert changed and all(re.fullmatch(r"model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight", k) for k in changed)
    assert len(changed) == 4 * merged.config.num_hidden_layers
    assert getattr(merged.config, MERGED_FLAG) and all(p.requires_grad for p in merged.parameters())


def test_a_saved_merged_model_is_not_merged_again(phi4_dir, tmp_path):
    """A full fine-tune saves the merged weights (no speech-lora/): they reload as they were."""
    model, processor = load(phi4_dir)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert not (tmp_path / SPEECH_LORA).exists()
    again, _ = load(tmp_path)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_folder_without_the_speech_lora_is_refused_before_the_weights_are_read(phi4_dir, tmp_path):
    shutil.copytree(phi4_dir, tmp_path / "m", ignore=shutil.ignore_patterns(SPEECH_LORA, "*.safetensors"))
    with pytest.raises(ApaError, match=r"no speech-lora/adapter_config.json.*--revision refs/pr/70.*--model DIR"):
        load(tmp_path / "m")


# --- LoRA: the text model's fused projections, never the audio encoder -------------------------

def test_lora_lands_on_the_decoder_layers_not_on_the_audio_encoder(phi4_dir):
    from apa.backbones.lora import add_lora, lora_parameter_count

    model, processor = load(phi4_dir)
    audio_names = {n.rsplit(".", 1)[-1] for n, m in processor.audio_encoder(model).named_modules()
                   if isinstance(m, torch.nn.Linear)}
    assert {"o_proj", "gate_up_proj", "down_proj"} <= audio_names  # why a name list would not do
    config = model.config
    h, kv, ffn = config.hidden_size, config.num_key_value_heads * config.hidden_size // config.num_attention_heads, \
        config.intermediate_size
    per_layer = (h + h + 2 * kv) + (h + h) + (h + 2 * ffn) + (ffn + h)  # qkv, o, gate_up, down: in + out
    assert lora_parameter_count(model, processor, r=4) == 4 * per_layer * config.num_hidden_layers
    peft_model = add_lora(model, processor, r=4, alpha=8)
    adapted = [n.rsplit(".lora_A", 1)[0] for n, _ in peft_model.named_modules() if n.endswith("lora_A")]
    assert len(adapted) == 4 * config.num_hidden_layers
    assert all(re.search(r"(^|\.)model\.layers\.\d+\.(self_attn|mlp)\.(qkv|o|gate_up|down)_proj$", n) for n in adapted)
    assert not any("embed_tokens_extend" in n for n in adapted)


def test_lora_with_train_audio_adds_the_encoder_but_not_projector_or_vision(phi4_dir):
    from apa.backbones.lora import add_lora

    model, processor = load(phi4_dir)
    names = [n for n, _ in add_lora(model, processor, train_audio=True).named_modules() if n.endswith("lora_A")]
    assert any(".audio_embed.encoder." in n for n in names) and any(re.search(r"\.model\.layers\.\d", n) for n in names)
    assert not any("_for_speech" in n or "image_embed" in n for n in names)


# --- loading -----------------------------------------------------------------------------------------

def test_the_custom_code_format_is_refused_with_the_native_revision(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "phi4mm", "architectures": ["Phi4MMForCausalLM"]}))
    with pytest.raises(ApaError) as info:
        load(tmp_path)
    message = str(info.value)
    assert "phi4mm" in message and "--revision refs/pr/70" in message and "--model DIR" in message
    assert "\n" not in message


def test_the_tokenizer_keeps_its_split_whatever_class_tokenizer_config_names(phi4_dir, tmp_path):
    """The hub's tokenizer_config.json names GPT2Tokenizer; transformers 5 rebuilds that class with
    GPT-2's pre-tokenizer (" 10" one pre-token). apa loads tokenizer.json as it is."""
    from transformers import AutoTokenizer

    folder = shutil.copytree(phi4_dir, tmp_path / "m")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps(dict(config, tokenizer_class="GPT2Tokenizer")))
    _, processor = load(folder)
    split = lambda tok: [p for p, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(" 10/9")]
    assert split(processor.tokenizer) == ["Ġ", "10", "/", "9"]
    assert split(AutoTokenizer.from_pretrained(folder)) != split(processor.tokenizer)


# --- the tiny builder and the real sizes -----------------------------------------------------------

def test_tiny_configs_are_the_real_config_with_sizes_shrunk():
    audio, text = Phi4MM.tiny_configs("tiny")
    sizes = {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "num_blocks", "ext_pw_out_channel", "depthwise_separable_out_channel", "nemo_conv_channels"}
    assert {k: v for k, v in audio.items() if k not in sizes} == {k: v for k, v in REAL_AUDIO_CONFIG.items()
                                                                   if k not in sizes}
    rope = text.pop("rope_parameters")
    assert {k: v for k, v in text.items() if k not in sizes} == {k: v for k, v in REAL_TEXT_CONFIG.items()
                                                                  if k not in sizes}
    assert {k: rope[k] for k in REAL_ROPE} == REAL_ROPE and len(rope["short_factor"]) == 6  # 16 x 0.75 / 2
    counts = [TINY_SIZES[s][1]["hidden_size"] * TINY_SIZES[s][1]["num_hidden_layers"] for s in TINY_SIZES]
    assert counts == sorted(counts) and list(TINY_SIZES) == ["tiny", "small", "base"]
    with pytest.raises(ApaError, match="no audio window"):
        Phi4MM.tiny_configs("tiny", 12)
    with pytest.raises(ApaError, match="unknown model size"):
        Phi4MM.tiny_configs("huge")


def test_tiny_model_is_deterministic_and_reloads_as_built(phi4_dir):
    built, processor = Phi4MM.make_tiny(seed=0)
    again, _ = Phi4MM.make_tiny(seed=0)
    other, _ = Phi4MM.make_tiny(seed=1)
    loaded, loaded_processor = load(phi4_dir)
    state = built.state_dict()
    assert all(torch.equal(v, again.state_dict()[k]) and torch.equal(v, loaded.state_dict()[k])
               for k, v in state.items())
    assert not all(torch.equal(v, other.state_dict()[k]) for k, v in state.items())
    assert loaded_processor.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    ids = [processor.tokenizer.convert_tokens_to_ids(t) for t, _ in SPECIAL_TOKENS]
    assert ids == list(range(ids[0], ids[0] + len(SPECIAL_TOKENS)))  # the real order, at the end
    assert built.config.audio_config.audio_token_id == processor.audio_token_id
    assert built.generation_config.eos_token_id == [ids[0], processor.end_of_turn_id]
    assert processor.tokenizer.audio_token == "<|audio|>"  # what Phi4MultimodalProcessor reads


def test_tiny_model_command_and_its_window_refusal(tmp_path, capsys):
    assert main(["tiny-model", str(tmp_path / "m"), "--backbone", "phi4-mm"]) == 0
    assert "phi4-mm" in capsys.readouterr().out and (tmp_path / "m" / SPEECH_LORA / "adapter_config.json").is_file()
    assert main(["tiny-model", str(tmp_path / "w"), "--backbone", "phi4-mm", "--window", "5"]) == 2
    assert "no audio window" in capsys.readouterr().err


def test_real_model_sizes_from_the_real_config():
    """A meta-device model from the real config: the README table's numbers, and LoRA (r=8) on
    the 128 fused projections of the 32 decoder layers only."""
    from transformers import Phi4MultimodalConfig, Phi4MultimodalForCausalLM

    from apa.backbones.lora import lora_parameter_count

    config = Phi4MultimodalConfig(**REAL_TEXT_CONFIG, audio_config=REAL_AUDIO_CONFIG, vision_config=REAL_VISION_CONFIG,
                                  rope_parameters=dict(REAL_ROPE, short_factor=[1.0] * 48, long_factor=[1.0] * 48))
    with torch.device("meta"):
        model = Phi4MultimodalForCausalLM(config)
    processor = Phi4MM(None, None)
    audio = sum(p.numel() for p in model.model.embed_tokens_extend.audio_embed.parameters())
    vision = sum(p.numel() for p in model.model.embed_tokens_extend.image_embed.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert (total, total - audio - vision, audio) == (4_743_988_032, 3_836_021_760, 466_416_256)
    pattern = processor.lora_target_regex(model)
    assert sum(1 for n, _ in model.named_modules() if re.fullmatch(pattern, n)) == 128
    assert lora_parameter_count(model, processor, r=8) == 11_534_336
    assert lora_parameter_count(model, processor, r=320) == 461_373_440  # the shipped speech LoRA

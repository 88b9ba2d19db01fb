"""Tiny random Phi-4-multimodal models, laid out as the real native checkpoint (apa.backbones.phi4_mm).

The real config.json with the sizes shrunk (every other setting kept: longrope with partial
rotary 0.75 and the 4096 switch, tied embeddings, RMSNorm eps, SiLU, the conformer's kernel,
activations, subsampling x8, relative-bias distance 500...), the real feature extractor settings,
the real special tokens in the real order (with their rstrip flags), a small byte-level BPE with
the real o200k pre-tokenizer, and a random ``speech-lora/`` PEFT adapter saved beside the base
weights as the real r=320 one is. Sizes: "tiny" (0.22M parameters: tests and demo), "small"
(1.0M, CPU training from scratch), "base" (44M, GPU). The vision encoder, which apa never
feeds, is the same minimal one in every size. Only the 48 longrope factors are not the real
ones (their count follows the head size): short 1.0 and long 1.5 stand in for them.
"""

from __future__ import annotations

from pathlib import Path

from apa.backbones.phi4_mm import CHAT_TEMPLATE, SPEECH_LORA, merged
from apa.backbones.release import save_adapter, save_model
from apa.backbones.tiny import check_size, seeded, tokenizer_corpus, train_byte_level_bpe
from apa.errors import ApaError

# tiktoken's o200k_base split (the GPT-4o vocabulary Phi-4 uses): numbers in groups of up to three
# digits, never glued to the space before them.
O200K_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# (token, rstrip) in the order of their real ids: 199999, 200010, 200011, 200018...200028.
SPECIAL_TOKENS = (("<|endoftext|>", False), ("<|image|>", False), ("<|audio|>", False), ("<|endofprompt|>", False),
                  ("<|assistant|>", True), ("<|end|>", True), ("<|user|>", True), ("<|system|>", True),
                  ("<|tool|>", True), ("<|/tool|>", True), ("<|tool_call|>", True), ("<|/tool_call|>", True),
                  ("<|tool_response|>", True), ("<|tag|>", True))
# The native config.json (hub branch refs/pr/70), less the token ids and the longrope factor lists.
REAL_TEXT_CONFIG = dict(vocab_size=200064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                        num_attention_heads=24, num_key_value_heads=8, resid_pdrop=0.0, embd_pdrop=0.0,
                        attention_dropout=0.0, hidden_act="silu", max_position_embeddings=131072,
                        original_max_position_embeddings=4096, initializer_range=0.02, rms_norm_eps=1e-5,
                        use_cache=True, tie_word_embeddings=True, sliding_window=None)
REAL_ROPE = dict(rope_type="longrope", rope_theta=10000.0, partial_rotary_factor=0.75)
REAL_AUDIO_CONFIG = dict(hidden_size=1024, intermediate_size=1536, num_blocks=24, num_attention_heads=16,
                         activation="swish", chunk_size=-1, left_chunk=18, dropout_rate=0.0, ext_pw_out_channel=1024,
                         depthwise_separable_out_channel=1024, depthwise_multiplier=1, kernel_size=3,
                         conv_activation="swish", input_size=80, conv_glu_type="swish", time_reduction=8,
                         bias_max_distance=500, bias_symmetric=False, nemo_activation="relu", nemo_conv_channels=1024,
                         downsample_rate=1, initializer_range=0.02, feature_layer=-2)
REAL_VISION_CONFIG = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                          num_channels=3, image_size=448, patch_size=14, hidden_act="gelu_pytorch_tanh",
                          layer_norm_eps=1e-6, attention_dropout=0.0, crop_size=448, feature_layer=-2)
# preprocessor_config.json
REAL_FEATURE_EXTRACTOR = dict(feature_size=80, sampling_rate=16000, hop_length=160, n_fft=512, win_length=400,
                              preemphasis=0.97, padding_value=0.0, padding_side="right", audio_compression_rate=8,
                              audio_downsample_rate=1, audio_feat_stride=1, return_attention_mask=True)
# speech-lora/adapter_config.json: r=320, alpha=640 (scale 2), dropout 0.01; the tiny keeps the scale.
TINY_SPEECH_LORA = dict(r=4, lora_alpha=8, lora_dropout=0.01)


def _audio(hidden: int, blocks: int, heads: int) -> dict:
    # the conformer's channels all equal its width (1024 in the real model); FFN 1.5 x width
    return dict(hidden_size=hidden, intermediate_size=hidden * 3 // 2, num_blocks=blocks, num_attention_heads=heads,
                ext_pw_out_channel=hidden, depthwise_separable_out_channel=hidden, nemo_conv_channels=hidden)


# (audio encoder, text model) overrides of the real config per size.
TINY_SIZES: dict[str, tuple[dict, dict]] = {
    "tiny": (_audio(32, 2, 2), dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                    intermediate_size=128)),
    "small": (_audio(96, 2, 4), dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=384)),
    "base": (_audio(384, 6, 6), dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
                                     num_key_value_heads=4, intermediate_size=1536)),
}
TINY_VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)


def with_rope(text: dict) -> dict:
    """``text`` with longrope parameters for its head size (stand-in factors, see above)."""
    rotary = int(text["hidden_size"] // text["num_attention_heads"] * REAL_ROPE["partial_rotary_factor"])
    return dict(text, rope_parameters=dict(REAL_ROPE, short_factor=[1.0] * (rotary // 2),
                                           long_factor=[1.5] * (rotary // 2)))


def tiny_configs(size: str = "tiny", window_seconds: int | None = None) -> tuple[dict, dict]:
    """(audio encoder config, text config) of a tiny model of ``size``. Phi-4 hears any length,
    so there is no window to set."""
    check_size(size)
    if window_seconds is not None:
        raise ApaError(f"phi4-mm has no audio window to set (got {window_seconds!r} s): it hears clips of any "
                       "length, in 40 s windows inside its encoder; leave out --window")
    audio_sizes, text_sizes = TINY_SIZES[size]
    return dict(REAL_AUDIO_CONFIG, **audio_sizes), with_rope(dict(REAL_TEXT_CONFIG, **text_sizes))


def tiny_tokenizer(backbone):
    """A small byte-level BPE with the o200k pre-tokenizer, the real special tokens appended."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import TokenizersBackend

    pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(O200K_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    vocab, merges = train_byte_level_bpe(pre_tokenizer, tokenizer_corpus(backbone.render, backbone.end_of_turn),
                                         [t for t, _ in SPECIAL_TOKENS])
    raw = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False))
    raw.pre_tokenizer = pre_tokenizer
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens([AddedToken(t, rstrip=rstrip, lstrip=False, normalized=False, special=True)
                            for t, rstrip in SPECIAL_TOKENS])
    tokenizer = TokenizersBackend(tokenizer_object=raw, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>", unk_token="<|endoftext|>", model_max_length=131072,
                                  model_specific_special_tokens={"image_token": "<|image|>",
                                                                 "audio_token": "<|audio|>"})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _base(backbone, seed: int, size: str, window_seconds: int | None):
    """(random base model without the speech LoRA, processor)."""
    import torch
    from transformers import Phi4MultimodalFeatureExtractor, Phi4MultimodalForCausalLM

    audio_config, text_config = tiny_configs(size, window_seconds)
    tokenizer = tiny_tokenizer(backbone)
    config = _config(tokenizer, audio_config, dict(text_config, vocab_size=len(tokenizer)),
                     dict(REAL_VISION_CONFIG, **TINY_VISION))
    with seeded(seed):
        model = Phi4MultimodalForCausalLM(config).float().eval()
        # As in Qwen2Audio.make_tiny: a random head of std 0.02 caps the logits near +-1.3, which
        # no LoRA can fit; rows of norm ~2.4 behave more like a pretrained head. (Tied: the input
        # embeddings scale too, which the first RMSNorm absorbs.)
        with torch.no_grad():
            model.lm_head.weight.normal_(0.0, 0.3)
    model.generation_config = _generation_config(tokenizer)
    feature_extractor = Phi4MultimodalFeatureExtractor(**REAL_FEATURE_EXTRACTOR)
    return model, backbone(tokenizer, feature_extractor)


def _config(tokenizer, audio_config: dict, text_config: dict, vision_config: dict):
    """Phi4MultimodalConfig of these parts with ``tokenizer``'s token ids."""
    from transformers import Phi4MultimodalConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t, _ in SPECIAL_TOKENS}
    return Phi4MultimodalConfig(**dict(text_config, bos_token_id=ids["<|endoftext|>"],
                                       eos_token_id=[ids["<|endoftext|>"], ids["<|end|>"]],
                                       pad_token_id=ids["<|endoftext|>"]),
                                audio_config=dict(audio_config, audio_token_id=ids["<|audio|>"]),
                                vision_config=dict(vision_config, image_token_id=ids["<|image|>"]))


def _generation_config(tokenizer):
    from transformers import GenerationConfig

    ids = tokenizer.convert_tokens_to_ids
    return GenerationConfig(bos_token_id=ids("<|endoftext|>"), eos_token_id=[ids("<|endoftext|>"), ids("<|end|>")],
                            pad_token_id=ids("<|endoftext|>"), do_sample=False)


def real_shape_model(processor, layers: int | None, device, dtype, seed: int = 0):
    """Phi-4-multimodal at its real dimensions, speech LoRA merged as ``load`` gives it (so no
    adapter layers), vision encoder included; with ``layers``, every encoder and the text model
    keep their first ``layers`` layers."""
    import torch
    from transformers import Phi4MultimodalForCausalLM

    audio, text, vision = dict(REAL_AUDIO_CONFIG), with_rope(REAL_TEXT_CONFIG), dict(REAL_VISION_CONFIG)
    if layers:
        audio["num_blocks"], text["num_hidden_layers"], vision["num_hidden_layers"] = layers, layers, layers
    config = _config(processor.tokenizer, audio, text, vision)
    torch.manual_seed(seed)
    with torch.device(device):  # built where it runs, in its dtype: no float32 copy in host memory
        model = Phi4MultimodalForCausalLM._from_config(config, dtype=dtype)
    model.generation_config = _generation_config(processor.tokenizer)
    return model.eval()


def _with_speech_lora(processor, model, seed: int):
    """``model`` wrapped in a random speech LoRA shaped like the real one (PEFT, in place): on the
    text model's four projections, as apa's own LoRA."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(**TINY_SPEECH_LORA, target_modules=processor.lora_target_regex(model),
                        init_lora_weights=False)  # random A and B: the adapter changes the outputs
    with seeded(seed):
        return get_peft_model(model, config)


def make_tiny(backbone, seed: int = 0, size: str = "tiny", window_seconds: int | None = None):
    """A random model of ``size`` (speech LoRA merged, as ``load`` gives it) and its processor."""
    model, processor = _base(backbone, seed, size, window_seconds)
    return merged(model, lambda m: _with_speech_lora(processor, m, seed)), processor


def build_tiny(backbone, out_dir, seed: int = 0, size: str = "tiny", window_seconds: int | None = None) -> Path:
    """Write a random Phi-4-multimodal to ``out_dir`` laid out as the real checkpoint: base
    weights, tokenizer, feature extractor, and a small random ``speech-lora/`` PEFT adapter.
    Deterministic for a seed."""
    model, processor = _base(backbone, seed, size, window_seconds)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, processor, out)  # before the adapter is attached: plain base weights
    save_adapter(_with_speech_lora(processor, model, seed), backbone, out / SPEECH_LORA)
    return out

"""Tiny random Granite-Speech models, built offline (apa tiny-model --backbone granite-speech).

The real config.json of ibm-granite/granite-speech-3.3-2b with the sizes shrunk, the Granite 3.x
chat template and special tokens (in the real order: <|end_of_text|> is id 0, <|audio|> last),
a small byte-level BPE with the real pre-tokenizer (every digit on its own, then GPT-2's
byte-level regex), the real feature extractor settings, and a speech LoRA adapter saved beside
the weights as the checkpoint ships its own (``load`` merges it).
"""

from __future__ import annotations

from pathlib import Path

from apa.backbones.granite_speech import (AUDIO_TOKEN, END_OF_TEXT, LEADING_SPECIAL_TOKENS, SPEECH_LORA_TARGETS,
                                          TRAILING_SPECIAL_TOKENS, feature_extractor_class, merged,
                                          scale_logits)
from apa.backbones.release import save_adapter, save_model
from apa.backbones.tiny import TINY_BPE_VOCAB, check_size, seeded, tokenizer_corpus, train_byte_level_bpe
from apa.errors import ApaError

# The checkpoint's config.json (sizes and the settings that change the arithmetic).
REAL_ENCODER_CONFIG = dict(input_dim=160, num_layers=16, hidden_dim=1024, feedforward_mult=4, num_heads=8, dim_head=128,
                           output_dim=348, context_size=200, max_pos_emb=512, dropout=0.1, conv_kernel_size=15,
                           conv_expansion_factor=2)
REAL_PROJECTOR_CONFIG = dict(model_type="blip_2_qformer", hidden_size=1024, num_hidden_layers=2, num_attention_heads=16,
                             intermediate_size=4096, hidden_act="gelu", hidden_dropout_prob=0.1,
                             attention_probs_dropout_prob=0.1, max_position_embeddings=2048, initializer_range=0.02,
                             layer_norm_eps=1e-12, cross_attention_frequency=1, encoder_hidden_size=1024,
                             use_qformer_text_input=False)
REAL_TEXT_CONFIG = dict(model_type="granite", vocab_size=49160, hidden_size=2048, intermediate_size=8192,
                        num_hidden_layers=40, num_attention_heads=32, num_key_value_heads=8, hidden_act="silu",
                        max_position_embeddings=131072, initializer_range=0.02, rms_norm_eps=1e-6,
                        tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000000.0},
                        attention_bias=False, attention_dropout=0.0, mlp_bias=False, embedding_multiplier=12.0,
                        logits_scaling=8.0, residual_multiplier=0.22, attention_multiplier=0.015625)
REAL_CONFIG = dict(audio_token_index=49159, has_lora_adapter=True, downsample_rate=5, window_size=15,
                   tie_word_embeddings=True, initializer_range=0.02)
# The real speech adapter is r=64 on q_proj/v_proj; the tiny one keeps the layers, not the rank.
TINY_SPEECH_LORA = dict(r=4, lora_alpha=8)
# Shrunk sizes: (encoder, projector, text model) overrides of the real config. "tiny" (0.26M
# parameters): tests and the demo; "small" (0.88M) and "base" (47M): training from scratch.
TINY_SIZES: dict[str, tuple[dict, dict, dict]] = {
    "tiny": (dict(num_layers=2, hidden_dim=32, num_heads=2, dim_head=16),
             dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
                  encoder_hidden_size=32),
             dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128)),
    "small": (dict(num_layers=2, hidden_dim=64, num_heads=4, dim_head=16),
              dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=256,
                   encoder_hidden_size=64),
              dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=384)),
    "base": (dict(num_layers=4, hidden_dim=384, num_heads=6, dim_head=64),
             dict(hidden_size=384, num_hidden_layers=2, num_attention_heads=6, intermediate_size=1536,
                  encoder_hidden_size=384),
             dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
                  intermediate_size=1536)),
}


def tiny_configs(size: str = "tiny", window_seconds: int | None = None) -> dict:
    """Keyword arguments of GraniteSpeechConfig for a tiny model of ``size``: the real config
    with the sizes of TINY_SIZES (vocabulary and token ids are the tokenizer's, set later)."""
    check_size(size)
    if window_seconds is not None:
        raise ApaError("granite-speech has no audio window: its encoder hears clips of any length; "
                       "leave out --window")
    encoder, projector, text = TINY_SIZES[size]
    return dict(REAL_CONFIG, encoder_config=dict(REAL_ENCODER_CONFIG, **encoder),
                projector_config=dict(REAL_PROJECTOR_CONFIG, **projector),
                text_config=dict(REAL_TEXT_CONFIG, **text, **mup_multipliers(text["hidden_size"],
                                                                            text["num_attention_heads"])))


def mup_multipliers(hidden_size: int, num_attention_heads: int) -> dict:
    """The two muP multipliers that depend on the width, by Granite 3.x's rules: attention
    scores times 1 / head_dim, logits divided by hidden_size / 256 (the 2B: 1/64 and 8; the 8B:
    1/128 and 16). Kept literally at width 64, the 2B's values make a tiny model's attention 4
    times flatter and its logits 32 times flatter than muP intends, and it barely learns."""
    return dict(attention_multiplier=num_attention_heads / hidden_size, logits_scaling=hidden_size / 256)


def tiny_tokenizer(cls, vocab_size: int = TINY_BPE_VOCAB):
    """A small byte-level BPE with Granite's (StarCoder's) pre-tokenizer: digits one by one,
    then GPT-2's byte-level regex; the special tokens at the real ids' ends of the vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    specials = LEADING_SPECIAL_TOKENS + TRAILING_SPECIAL_TOKENS
    vocab, merges = train_byte_level_bpe(pre_tokenizer, tokenizer_corpus(cls.render, cls.end_of_turn), specials,
                                         vocab_size)
    learnt = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1]) if token not in specials]
    order = list(LEADING_SPECIAL_TOKENS) + learnt + list(TRAILING_SPECIAL_TOKENS)
    raw = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(order)}, merges=merges, unk_token=None,
                               fuse_unk=False, byte_fallback=False))
    raw.pre_tokenizer = pre_tokenizer
    raw.decoder = decoders.ByteLevel()
    raw.post_processor = processors.ByteLevel(trim_offsets=False)
    raw.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                        pad_token=END_OF_TEXT, unk_token=END_OF_TEXT,
                                        model_specific_special_tokens={"audio_token": AUDIO_TOKEN},
                                        padding_side="left", model_max_length=131072)
    tokenizer.chat_template = cls.chat_template
    return tokenizer


def _base(cls, seed: int, size: str, window_seconds: int | None):
    """A random base model (no speech adapter yet) and its processor."""
    from transformers import GenerationConfig, GraniteSpeechConfig, GraniteSpeechForConditionalGeneration, \
        GraniteSpeechProcessor

    kwargs = tiny_configs(size, window_seconds)
    tokenizer = tiny_tokenizer(cls)
    eot = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    kwargs["text_config"].update(vocab_size=len(tokenizer), bos_token_id=eot, eos_token_id=eot, pad_token_id=eot)
    config = GraniteSpeechConfig(**dict(kwargs, audio_token_index=tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)))
    with seeded(seed):
        model = GraniteSpeechForConditionalGeneration(config).float().eval()
    model.generation_config = GenerationConfig(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, do_sample=False)
    # The real extractor's settings are its class defaults.
    hf_processor = GraniteSpeechProcessor(audio_processor=feature_extractor_class()(), tokenizer=tokenizer,
                                          audio_token=AUDIO_TOKEN, chat_template=cls.chat_template)
    return model, cls(hf_processor)


def real_shape_model(processor, layers: int | None, device, dtype, seed: int = 0):
    """Granite-Speech 3.3 2B at its real dimensions, speech adapter merged and logits scaled as
    ``load`` gives it; with ``layers``, the encoder and the text model keep their first
    ``layers`` layers (the projector keeps its two)."""
    import torch
    from transformers import GenerationConfig, GraniteSpeechConfig, GraniteSpeechForConditionalGeneration

    encoder, text = dict(REAL_ENCODER_CONFIG), dict(REAL_TEXT_CONFIG)
    if layers:
        encoder["num_layers"], text["num_hidden_layers"] = layers, layers
    eot = processor.tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    config = GraniteSpeechConfig(**dict(REAL_CONFIG, has_lora_adapter=False, encoder_config=encoder,
                                        projector_config=REAL_PROJECTOR_CONFIG,
                                        text_config=dict(text, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot),
                                        audio_token_index=processor.tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)))
    torch.manual_seed(seed)
    with torch.device(device):  # built where it runs, in its dtype: no float32 copy in host memory
        model = GraniteSpeechForConditionalGeneration._from_config(config, dtype=dtype)
    model.generation_config = GenerationConfig(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, do_sample=False)
    scale_logits(model)
    return model.eval()


def _with_speech_adapter(model, seed: int):
    """``model`` wrapped in a random speech LoRA (a PeftModel; the layers are injected in place)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(**TINY_SPEECH_LORA, lora_dropout=0.0, init_lora_weights=False,
                        target_modules=list(SPEECH_LORA_TARGETS))
    with seeded(seed + 1):
        return get_peft_model(model, config)


def make_tiny(cls, seed: int = 0, size: str = "tiny", window_seconds: int | None = None):
    """A random model of ``size`` and its processor, in memory, as ``load`` returns it from
    ``build_tiny``'s folder: speech adapter merged, logits scaled."""
    model, processor = _base(cls, seed, size, window_seconds)
    model = merged(_with_speech_adapter(model, seed).merge_and_unload())
    scale_logits(model)
    return model.eval(), processor


def build_tiny(cls, out_dir: str | Path, seed: int = 0, size: str = "tiny", window_seconds: int | None = None) -> Path:
    """Write a random Granite-Speech (model, processor and speech adapter) to ``out_dir``.

    ``size="tiny"``: about 0.25M parameters. Deterministic: the same seed gives identical
    weights, adapter and tokenizer. The base weights are saved plain and the adapter with PEFT
    into the same folder (saving a model with the adapter attached would write the base q/v
    weights under PEFT's names, which a reload would not find).
    """
    model, processor = _base(cls, seed, size, window_seconds)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("adapter_config.json", "adapter_model.safetensors"):  # from_pretrained would attach them
        (out / stale).unlink(missing_ok=True)
    save_model(model, processor, out)
    adapted = _with_speech_adapter(model, seed)
    adapted.peft_config["default"].base_model_name_or_path = str(out)
    save_adapter(adapted, cls, out)
    return out

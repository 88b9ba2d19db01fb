"""Qwen2.5-Omni-7B, its thinker only: audio in, text out (no talker, no speech output).

A Whisper-large-v3-like audio encoder (32 layers, d_model 1280, 128 mel bins) that attends
within 2 s chunks of the clip's own frames (the padding is never encoded; the only cut is the
feature extractor's 300 s), a Qwen2.5-7B text model (hidden 3584, 28 layers, 28 heads, 4 KV
heads, FFN 18944, vocabulary 152064) with multimodal rotary positions (TMRoPE), and a vision
encoder that apa loads with the checkpoint but never runs. A clip becomes 25 audio tokens per
second. transformers' class is Qwen2_5OmniThinkerForConditionalGeneration, which reads the
``thinker`` part of the released checkpoint (model_type ``qwen2_5_omni``) and skips the talker.

Qwen2_5OmniProcessor cannot be built here: it requires a video processor even for audio, and
transformers' needs torchvision, which has no CPU build for this torch. apa never sends video,
so batches are built from the processor's two audio-side parts, its WhisperFeatureExtractor
and its tokenizer, with the processor's placeholder expansion (tests compare the result with
the real processor's).

The thinker's forward ignores ``logits_to_keep`` (it computes every position's logits);
apa's economical path never calls it: ``logits`` applies the LM head to the positions picked.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from apa.backbones.base import Processor, unwrap
from apa.backbones.qwen2_audio import TINY_SIZES as QWEN2_AUDIO_SIZES
from apa.backbones.tiny import (TINY_BPE_VOCAB, check_size, check_window, seeded, tokenizer_corpus,
                                train_byte_level_bpe)
from apa.errors import ApaError

SAMPLE_RATE = 16000
FULL_WINDOW_SECONDS = 300     # preprocessor_config.json chunk_length
# Added tokens of the real tokenizer, ids 151643..151656, in order.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
                  "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_bos|>", "<|vision_eos|>",
                  "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>")
# What transformers 5 names on the real tokenizer (the processor reads tokenizer.audio_token...).
NAMED_TOKENS = {"audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
                "image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>", "vision_bos_token": "<|vision_bos|>",
                "vision_eos_token": "<|vision_eos|>"}
# The checkpoint's processor chat_template.json, verbatim (the template apply_chat_template uses).
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}"
    "<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}"
    "Audio {{ audio_count.value }}: {% endif %}"
    "<|audio_bos|><|AUDIO|><|audio_eos|>{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}"
    "<|vision_bos|><|VIDEO|><|vision_eos|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The checkpoint's thinker_config (sizes and every setting that changes the arithmetic).
REAL_AUDIO_CONFIG = dict(num_mel_bins=128, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                         d_model=1280, activation_function="gelu", scale_embedding=False, max_source_positions=1500,
                         n_window=100, output_dim=3584)
REAL_TEXT_CONFIG = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                        num_attention_heads=28, num_key_value_heads=4, hidden_act="silu", max_position_embeddings=32768,
                        rms_norm_eps=1e-6, use_sliding_window=False, tie_word_embeddings=False,
                        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})
REAL_VISION_CONFIG = dict(depth=32, hidden_size=1280, hidden_act="silu", intermediate_size=3420, num_heads=16,
                          in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                          out_hidden_size=3584, fullatt_block_indexes=[7, 15, 23, 31])
REAL_THINKER_SETTINGS = dict(position_id_per_seconds=25, seconds_per_chunk=2, tie_word_embeddings=False)
# Shrunk sizes: Qwen2-Audio's (audio encoder, text model) overrides, so that the real-data
# proof compares the two families at equal size (rms_norm_eps there is 1e-6, as here). The
# rotary sections keep the real 2:3:3 split of head_dim / 2 (temporal, height, width).
TINY_SIZES = QWEN2_AUDIO_SIZES
# The vision encoder is built (the thinker always has one) but never run: smallest at every size.
TINY_VISION = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, fullatt_block_indexes=[0])


def audio_token_counts(mel_frames):
    """Audio tokens of clips of ``mel_frames`` valid frames: Qwen2_5OmniProcessor's arithmetic
    (the encoder's _get_feat_extract_output_lengths): a stride-2 conv, then pooling by 2."""
    after_conv = (mel_frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


@contextmanager
def talker_checks_quiet():
    """Config warnings off: Qwen2_5OmniConfig always builds a talker config, and transformers'
    default one fails its own token-id check (ids of the thinker's vocabulary, 151647 and up,
    against the talker's 8448 codec words): seven warnings about a part apa never builds."""
    import logging

    logger = logging.getLogger("transformers.configuration_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class Qwen2_5Omni(Processor):
    name = "qwen2.5-omni"
    model_types = ("qwen2_5_omni", "qwen2_5_omni_thinker")  # the release; a thinker saved alone (full_finetune)
    hub_id = "Qwen/Qwen2.5-Omni-7B"
    chat_template = CHAT_TEMPLATE
    # The template's own default, given explicitly. The model card's "You are Qwen, a virtual
    # human ... generating text and speech." is what the talker needs for speech output, which
    # apa does not use; the default is what apply_chat_template renders when no system turn is
    # given, and it keeps the system turn the same as Qwen2-Audio's.
    system_prompt = "You are a helpful assistant."
    end_of_turn = "<|im_end|>"
    audio_token = "<|AUDIO|>"
    clip_keys = ("input_features", "feature_attention_mask")
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    audio_lora_targets = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    # apa holds the thinker alone; the release (and vLLM's loader) has it under thinker.
    release_names = (("", "thinker."),)

    # --- batches ------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], audios: Sequence[np.ndarray], padding_side: str) -> dict:
        extractor = self.feature_extractor
        batch: dict[str, Any] = {}
        counts: list[int] = []
        if len(audios):
            # The processor pads every clip to the 300 s chunk_length (~0.7 s of CPU per clip).
            # Padding to the longest clip plus one FFT window gives the same features on every
            # valid frame and the same mask: every frame whose window reaches a clip is computed
            # over the clip and zeros, as with the full padding (tests check it bit for bit).
            longest = max(len(a) for a in audios)
            features = extractor(list(audios), sampling_rate=SAMPLE_RATE, padding="max_length",
                                 max_length=min(longest + extractor.n_fft, extractor.n_samples), truncation=True,
                                 return_attention_mask=True, return_tensors="pt")
            batch = {"input_features": features["input_features"], "feature_attention_mask": features["attention_mask"]}
            counts = audio_token_counts(features["attention_mask"].sum(-1)).tolist()
        tokens = self.tokenizer(self.expand_audio(texts, counts), padding=True, padding_side=padding_side,
                                return_tensors="pt")
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"], **batch}

    def expand_audio(self, texts: Sequence[str], counts: Sequence[int]) -> list[str]:
        """Each audio placeholder, in order across the texts, repeated as many times as its clip
        has audio tokens (Qwen2_5OmniProcessor.replace_multimodal_special_tokens for audio)."""
        pieces = [text.split(self.audio_token) for text in texts]
        if sum(len(p) - 1 for p in pieces) != len(counts):
            raise ValueError(f"{sum(len(p) - 1 for p in pieces)} audio placeholders for {len(counts)} clips")
        clips = iter(counts)
        return ["".join(piece if i == 0 else self.audio_token * next(clips) + piece for i, piece in enumerate(p))
                for p in pieces]

    @property
    def audio_window_seconds(self) -> float:
        return float(self.feature_extractor.chunk_length)  # the processor cuts there; the encoder has no window

    def audio_token_count(self, seconds: float) -> int:
        """Exactly the tokens of a clip of ``seconds`` (its mel frames are ceil(samples / hop))."""
        samples = int(round(min(seconds, self.audio_window_seconds) * self.feature_extractor.sampling_rate))
        return int(audio_token_counts(-(-samples // self.feature_extractor.hop_length)))

    def save_pretrained(self, folder: str | Path) -> None:
        self.tokenizer.save_pretrained(str(folder))
        self.feature_extractor.save_pretrained(str(folder))

    # --- the model ------------------------------------------------------------------------------
    def clip_features(self, model, batch: dict) -> list:
        """The thinker's own get_audio_features (encoder over each clip's valid frames, all
        clips concatenated), split per clip."""
        inner = unwrap(model)
        tower = inner.audio_tower
        mask = batch["feature_attention_mask"].to(tower.device)
        features = inner.get_audio_features(batch["input_features"].to(tower.device), mask,
                                            return_dict=True).last_hidden_state
        _, counts = tower._get_feat_extract_output_lengths(mask.sum(-1))
        return list(features.split(counts.tolist()))

    def text_model(self, model):
        return unwrap(model).model

    def audio_encoder(self, model):
        return unwrap(model).audio_tower

    def hidden_states(self, model, embeds, attention_mask, position_ids=None, cache=None):
        """Without explicit positions (a prompt, or a prompt and its response), the positions are
        the model's own: get_rope_index over the row's mask (past and new tokens), the last
        columns for the new ones. The thinker's forward would also compute them, but it caches
        rope_deltas between calls; the text model is always given positions here."""
        if position_ids is None and attention_mask is not None and attention_mask.ndim == 2:
            # Without image or video, get_rope_index takes its text branch: the index among the
            # row's real tokens on all three axes (TMRoPE gives audio tokens consecutive
            # positions too); input_ids and audio lengths do not enter it.
            position_ids = unwrap(model).get_rope_index(attention_mask=attention_mask)[0][..., -embeds.shape[1]:]
        return super().hidden_states(model, embeds, attention_mask, position_ids, cache)

    def position_ids(self, positions):
        """[3, rows, tokens] as the text model takes them. 1-D positions [rows, tokens] are the
        decoders' continuation of a prompt: text appended after an audio-only prompt continues
        at its index among the row's real tokens on the temporal, height and width axes alike,
        because get_rope_index's delta (max position + 1 - real tokens) is 0 without image or
        video. get_rope_index's own [3, rows, tokens] pass unchanged."""
        return positions if positions.ndim == 3 else positions.unsqueeze(0).expand(3, -1, -1)

    def check_model(self, model, name: str) -> None:
        """Also the audio token and the two around it (get_rope_index finds clips by the first
        of those) must have the ids the model's config names."""
        super().check_model(model, name)
        config = unwrap(model).config
        named = {"audio_token_id": self.audio_token, "audio_start_token_id": "<|audio_bos|>",
                 "audio_end_token_id": "<|audio_eos|>"}
        wrong = [f"{token} is {self.tokenizer.convert_tokens_to_ids(token)}, {key} {getattr(config, key)}"
                 for key, token in named.items() if self.tokenizer.convert_tokens_to_ids(token) != getattr(config, key)]
        if wrong:
            raise ApaError(f"{name}: the tokenizer and the model config disagree ({'; '.join(wrong)}); the model and "
                           "processor do not belong together")

    @classmethod
    def load(cls, path: str, dtype, device: str, local_files_only: bool) -> tuple[Any, "Qwen2_5Omni"]:
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration

        processor = cls._processor(path, local_files_only)
        kwargs = cls.from_pretrained_kwargs(dtype, device, local_files_only)
        # The thinker class reads thinker_config and the thinker.* weights of the full
        # checkpoint (the talker's are skipped; the full class would also demand spk_dict.pt).
        model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(path, **kwargs)
        return model, processor

    @classmethod
    def load_processor_only(cls, path: str) -> "Qwen2_5Omni":
        return cls._processor(path, local_files_only=True)

    @classmethod
    def _processor(cls, path: str, local_files_only: bool) -> "Qwen2_5Omni":
        from transformers import Qwen2Tokenizer, WhisperFeatureExtractor

        # The release's tokenizer_config.json names Qwen2Tokenizer. AutoTokenizer would build the
        # whole config to find that out, and with it transformers' default talker config, whose
        # own token-id check fails (seven warnings about a part apa never builds).
        tokenizer = Qwen2Tokenizer.from_pretrained(path, local_files_only=local_files_only)
        if cls.audio_token not in tokenizer.get_vocab():  # from_pretrained makes an empty one without files
            raise ApaError(f"{path} has no Qwen2.5-Omni tokenizer (no {cls.audio_token} token): copy the checkpoint's "
                           "tokenizer.json and tokenizer_config.json into it")
        extractor = WhisperFeatureExtractor.from_pretrained(path, local_files_only=local_files_only)
        return cls(tokenizer, extractor)

    # --- the tiny model -----------------------------------------------------------------------
    @classmethod
    def tiny_tokenizer(cls, vocab_size: int = TINY_BPE_VOCAB):
        """A small byte-level BPE under Qwen2's pre-tokenizer (every digit its own token), the
        real added tokens after it in their real order and with their transformers names."""
        from tokenizers import Regex, normalizers, pre_tokenizers
        from transformers import Qwen2Tokenizer
        from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

        split = pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False)
        vocab, merges = train_byte_level_bpe(
            pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
            tokenizer_corpus(cls.render, cls.end_of_turn), SPECIAL_TOKENS, vocab_size, normalizer=normalizers.NFC())
        tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", extra_special_tokens=list(SPECIAL_TOKENS[1:]),
                                   model_specific_special_tokens=NAMED_TOKENS, model_max_length=32768,
                                   errors="replace")
        tokenizer.chat_template = CHAT_TEMPLATE
        return tokenizer

    @classmethod
    def tiny_configs(cls, size: str = "tiny", window_seconds: int = FULL_WINDOW_SECONDS) -> tuple[dict, dict]:
        """(audio encoder config, text config) of a tiny model: the real config with the sizes of
        TINY_SIZES. The window is only the feature extractor's chunk_length: the encoder's
        positions restart every 2 s chunk, so no size depends on it."""
        check_size(size)
        check_window(window_seconds, FULL_WINDOW_SECONDS)
        audio_sizes, text_sizes = TINY_SIZES[size]
        text = dict(REAL_TEXT_CONFIG, **text_sizes)
        half_head = text["hidden_size"] // text["num_attention_heads"] // 2
        text["rope_parameters"] = dict(REAL_TEXT_CONFIG["rope_parameters"],
                                       mrope_section=[half_head // 4, half_head * 3 // 8, half_head * 3 // 8])
        return dict(REAL_AUDIO_CONFIG, **audio_sizes, output_dim=text["hidden_size"]), text

    @classmethod
    def release_config(cls, model):
        """The whole model's config around the thinker's, without a talker (as the release
        loads with enable_audio_output off): what transformers, PEFT and vLLM expect."""
        from transformers import Qwen2_5OmniConfig

        with talker_checks_quiet():
            config = Qwen2_5OmniConfig(thinker_config=model.config.to_dict(), enable_audio_output=False)
        config.architectures = ["Qwen2_5OmniForConditionalGeneration"]
        return config

    @classmethod
    def _make_tiny_release(cls, seed: int, size: str, window_seconds: int | None):
        """The full Qwen2_5OmniForConditionalGeneration (thinker only, like the release without
        its talker) and the processor."""
        import torch
        from transformers import (GenerationConfig, Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration,
                                  WhisperFeatureExtractor)

        window_seconds = FULL_WINDOW_SECONDS if window_seconds is None else window_seconds
        audio_config, text_config = cls.tiny_configs(size, window_seconds)
        tokenizer = cls.tiny_tokenizer()
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        # preprocessor_config.json's settings, the window as chunk_length.
        extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=SAMPLE_RATE, hop_length=160,
                                            chunk_length=window_seconds, n_fft=400, padding_value=0.0, dither=0.0,
                                            return_attention_mask=True, padding_side="right")
        text_config.update(vocab_size=len(tokenizer))
        vision_config = dict(REAL_VISION_CONFIG, **TINY_VISION, out_hidden_size=text_config["hidden_size"])
        thinker = cls.thinker_config(tokenizer, audio_config, text_config, vision_config)
        with talker_checks_quiet():  # the release has no talker either when enable_audio_output is off
            config = Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)
        with seeded(seed):
            release = Qwen2_5OmniForConditionalGeneration(config).float().eval()
            with torch.no_grad():  # a random LM head as sharp as a trained one: see Qwen2Audio.make_tiny
                release.thinker.lm_head.weight.normal_(0.0, 0.3)
        generation = GenerationConfig(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                                      do_sample=False)
        release.generation_config = release.thinker.generation_config = generation
        return release, cls(tokenizer, extractor)

    @staticmethod
    def thinker_config(tokenizer, audio_config: dict, text_config: dict, vision_config: dict) -> dict:
        """The release's thinker_config with these parts and ``tokenizer``'s token ids."""
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        return dict(REAL_THINKER_SETTINGS, audio_config=audio_config, text_config=text_config,
                    vision_config=vision_config, audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"],
                    video_token_index=ids["<|VIDEO|>"], audio_start_token_id=ids["<|audio_bos|>"],
                    audio_end_token_id=ids["<|audio_eos|>"], vision_start_token_id=ids["<|vision_bos|>"],
                    vision_end_token_id=ids["<|vision_eos|>"], vision_token_id=ids["<|vision_pad|>"],
                    user_token_id=tokenizer.convert_tokens_to_ids("user"), bos_token_id=ids["<|im_start|>"],
                    eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])

    @classmethod
    def real_shape_model(cls, processor: "Qwen2_5Omni", layers: int | None, device, dtype, seed: int = 0):
        """The thinker at its real dimensions (vision encoder included, as loaded; with ``layers``
        every encoder and the text model keep their first ``layers`` layers)."""
        import torch
        from transformers import GenerationConfig, Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

        audio, text, vision = dict(REAL_AUDIO_CONFIG), dict(REAL_TEXT_CONFIG), dict(REAL_VISION_CONFIG)
        if layers:
            audio["encoder_layers"], text["num_hidden_layers"] = layers, layers
            vision.update(depth=layers, fullatt_block_indexes=[layers - 1])
        config = Qwen2_5OmniThinkerConfig(**cls.thinker_config(processor.tokenizer, audio, text, vision))
        torch.manual_seed(seed)
        with torch.device(device):  # built where it runs, in its dtype: no float32 copy in host memory
            model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(config, dtype=dtype)
        ids = processor.tokenizer.convert_tokens_to_ids
        model.generation_config = GenerationConfig(eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
                                                   do_sample=False)
        return model.eval()

    @classmethod
    def make_tiny(cls, seed: int = 0, size: str = "tiny", window_seconds: int | None = None):
        """A random thinker of ``size`` and its processor, in memory (see build_tiny)."""
        release, processor = cls._make_tiny_release(seed, size, window_seconds)
        return release.thinker, processor

    @classmethod
    def build_tiny(cls, out_dir: str | Path, seed: int = 0, size: str = "tiny",
                   window_seconds: int | None = None) -> Path:
        """Write a random Qwen2.5-Omni to ``out_dir`` as the release is laid out: config.json of
        model_type qwen2_5_omni with a thinker_config, weights under ``thinker.``.

        ``size="tiny"``: about 0.28M parameters, an audio encoder of d_model 32 (2 layers, 2
        heads, 128 mel bins, 2 s chunks), a text model of hidden 64 (2 layers, 4 heads, 2 KV
        heads, FFN 128) and a one-block vision encoder. ``window_seconds`` (whole seconds,
        default 300 as in the real model): clips are cut to it. Deterministic for a seed.
        """
        release, processor = cls._make_tiny_release(seed, size, window_seconds)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        release.save_pretrained(out)
        processor.save_pretrained(out)
        return out

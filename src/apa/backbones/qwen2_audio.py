"""Qwen2-Audio-7B-Instruct, the default backbone (the paper's model).

A Whisper-large-v3-style audio encoder (32 layers, d_model 1280, 128 mel bins) over a fixed
30 s window (3000 mel frames, always encoded whole), a projector, and a Qwen-7B text model
(hidden 4096, 32 layers, 32 heads, 32 KV heads, FFN 11008, vocabulary 156032). A clip
becomes 25 audio tokens per second. The processor is transformers' Qwen2AudioProcessor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from apa.backbones.base import Processor, unwrap
from apa.backbones.release import save_model
from apa.backbones.tiny import (TINY_BPE_VOCAB, check_size, check_window, seeded, sinusoids, tokenizer_corpus,
                                train_byte_level_bpe)
from apa.errors import ApaError

SAMPLE_RATE = 16000
# Whisper's front end: 100 mel frames per second; the encoder's stride-2 conv halves them
# (max_source_positions = 50 per second), pooling halves them again: 25 audio tokens per
# second. The real model's window is 30 s.
ENCODER_POSITIONS_PER_SECOND = 50
AUDIO_TOKENS_PER_SECOND = 25
FULL_WINDOW_SECONDS = 30
# Special tokens in the order (and roles) of the real tokenizer (ids 151643...).
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
# The checkpoint's chat_template.json, verbatim.
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and "
    "message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if 'audio' in content or 'audio_url' in "
    "content or message['type'] == 'audio' %}{% set audio_count.value = audio_count.value + 1 %}Audio "
    "{{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)
# The checkpoint's config.json (sizes and the settings that change the arithmetic).
REAL_AUDIO_CONFIG = dict(num_mel_bins=128, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                         d_model=1280, activation_function="gelu", scale_embedding=False, max_source_positions=1500)
REAL_TEXT_CONFIG = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                        intermediate_size=11008, max_position_embeddings=8192, rope_theta=10000.0, rms_norm_eps=1e-5,
                        sliding_window=32768, use_sliding_window=False, tie_word_embeddings=False,
                        vocab_size=156032)
# Shrunk sizes of the tiny models: (audio encoder, text model) overrides of the real config.
# "tiny" (0.22M parameters): tests and the demo. "small" (1.0M) and "base" (38M): trained from
# scratch in the real-data proof (CPU, GPU), with Whisper's sinusoidal encoder positions; they
# keep rms_norm_eps 1e-6, which they were built with before the tiny models followed the real
# config, so that the proof's numbers stay comparable across versions.
TINY_SIZES: dict[str, tuple[dict, dict]] = {
    "tiny": (dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64),
             dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128)),
    "small": (dict(d_model=128, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=256),
              dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=384, rms_norm_eps=1e-6)),
    "base": (dict(d_model=384, encoder_layers=6, encoder_attention_heads=6, encoder_ffn_dim=1536),
             dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
                  intermediate_size=1536, rms_norm_eps=1e-6)),
}


class Qwen2Audio(Processor):
    name = "qwen2-audio"
    model_types = ("qwen2_audio",)
    hub_id = "Qwen/Qwen2-Audio-7B-Instruct"
    chat_template = CHAT_TEMPLATE
    system_prompt = "You are a helpful assistant."  # the template's default, given explicitly
    end_of_turn = "<|im_end|>"
    audio_token = "<|AUDIO|>"
    clip_keys = ("input_features", "feature_attention_mask")
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    audio_lora_targets = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    # transformers' conversion mapping for qwen2_audio, reversed; vLLM's loader reads these.
    release_names = (("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
                     ("model.audio_tower.", "audio_tower."), ("model.multi_modal_projector.", "multi_modal_projector."))

    def __init__(self, hf_processor):
        super().__init__(hf_processor.tokenizer, hf_processor.feature_extractor)
        self.hf_processor = hf_processor

    def encode(self, texts: Sequence[str], audios: Sequence[np.ndarray], padding_side: str) -> dict:
        batch = self.hf_processor(text=list(texts), audio=list(audios), sampling_rate=SAMPLE_RATE, padding=True,
                                  padding_side=padding_side, return_tensors="pt")
        return dict(batch)

    @property
    def audio_window_seconds(self) -> float:
        return self.feature_extractor.n_samples / self.feature_extractor.sampling_rate

    def audio_token_count(self, seconds: float) -> int:
        return int(round(min(seconds, self.audio_window_seconds) * AUDIO_TOKENS_PER_SECOND))

    def save_pretrained(self, folder: str | Path) -> None:
        self.hf_processor.save_pretrained(str(folder))

    def clip_features(self, model, batch: dict) -> list:
        """Audio tower + projector per clip, as Qwen2AudioModel.forward computes them (same
        mask construction): transformers has no method for this part alone."""
        import torch
        from transformers.masking_utils import create_bidirectional_mask

        inner = unwrap(model).model
        tower = inner.audio_tower
        input_features = batch["input_features"].to(tower.device)
        feature_attention_mask = batch["feature_attention_mask"].to(tower.device)
        feat_lengths, out_lengths = tower._get_feat_extract_output_lengths(feature_attention_mask.sum(-1))
        clips, _, mel_frames = input_features.shape
        max_len = (mel_frames - 2) // 2 + 1
        positions = torch.arange(max_len, device=feat_lengths.device).unsqueeze(0).expand(clips, max_len)
        mask_2d = (positions < feat_lengths.unsqueeze(1)).long()
        dummy = torch.zeros((clips, max_len, 1), dtype=inner.get_input_embeddings().weight.dtype,
                            device=tower.device)
        attention = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=mask_2d)
        hidden = tower(input_features, attention_mask=attention).last_hidden_state
        features = inner.multi_modal_projector(hidden)
        return [features[i, :int(n)] for i, n in enumerate(out_lengths)]

    def text_model(self, model):
        return unwrap(model).model.language_model

    def audio_encoder(self, model):
        return unwrap(model).model.audio_tower

    def check_model(self, model, name: str) -> None:
        super().check_model(model, name)
        expected = unwrap(model).config.audio_token_id
        if self.audio_token_id != expected:
            raise ApaError(f"{name}: the tokenizer's {self.audio_token} id {self.audio_token_id} differs from the "
                           f"model config's audio_token_id {expected}; the model and processor do not belong together")

    @classmethod
    def load(cls, path: str, dtype, device: str, local_files_only: bool) -> tuple[Any, "Qwen2Audio"]:
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        processor = cls(AutoProcessor.from_pretrained(path, local_files_only=local_files_only))
        kwargs = cls.from_pretrained_kwargs(dtype, device, local_files_only)
        model = Qwen2AudioForConditionalGeneration.from_pretrained(path, **kwargs)
        return model, processor

    @classmethod
    def load_processor_only(cls, path: str) -> "Qwen2Audio":
        from transformers import AutoProcessor

        return cls(AutoProcessor.from_pretrained(path, local_files_only=True))

    # --- the tiny model -----------------------------------------------------------------------
    @classmethod
    def tiny_tokenizer(cls, vocab_size: int = TINY_BPE_VOCAB):
        """A small byte-level BPE with Qwen2's pre-tokenizer (every digit its own token)."""
        from tokenizers import Regex, normalizers, pre_tokenizers
        from transformers import Qwen2Tokenizer
        from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

        pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        vocab, merges = train_byte_level_bpe(pre_tokenizer, tokenizer_corpus(cls.render, cls.end_of_turn),
                                             SPECIAL_TOKENS, vocab_size, normalizer=normalizers.NFC())
        tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", bos_token=None,
                                   additional_special_tokens=list(SPECIAL_TOKENS[1:]),
                                   model_max_length=32768, errors="replace")
        tokenizer.chat_template = CHAT_TEMPLATE
        return tokenizer

    @classmethod
    def tiny_configs(cls, size: str = "tiny", window_seconds: int = FULL_WINDOW_SECONDS) -> tuple[dict, dict]:
        """(audio encoder config, text config) of a tiny model of ``size`` and window: the real
        config with the sizes of TINY_SIZES, and the encoder's positions cut to the window."""
        check_size(size)
        check_window(window_seconds, FULL_WINDOW_SECONDS)
        audio_sizes, text_sizes = TINY_SIZES[size]
        audio = dict(REAL_AUDIO_CONFIG, **audio_sizes, max_source_positions=window_seconds * ENCODER_POSITIONS_PER_SECOND)
        text = dict(REAL_TEXT_CONFIG, **text_sizes)
        return audio, text

    @classmethod
    def make_tiny(cls, seed: int = 0, size: str = "tiny", window_seconds: int | None = None):
        """A random model of ``size`` and its processor, in memory (see build_tiny)."""
        import torch
        from transformers import (GenerationConfig, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration,
                                  Qwen2AudioProcessor, WhisperFeatureExtractor)

        window_seconds = FULL_WINDOW_SECONDS if window_seconds is None else window_seconds
        audio_config, text_config = cls.tiny_configs(size, window_seconds)
        tokenizer = cls.tiny_tokenizer()
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        # The real feature extractor (preprocessor_config.json) with the window as chunk_length:
        # chunk_length * 100 mel frames = max_source_positions * 2, which Qwen2-Audio checks.
        feature_extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=SAMPLE_RATE, hop_length=160,
                                                    chunk_length=window_seconds, n_fft=400, padding_value=0.0,
                                                    return_attention_mask=True)
        hf_processor = Qwen2AudioProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer,
                                           chat_template=CHAT_TEMPLATE)
        text_config.update(vocab_size=len(tokenizer), bos_token_id=ids["<|endoftext|>"],
                           eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
        config = Qwen2AudioConfig(audio_config=audio_config, text_config=text_config,
                                  audio_token_index=ids["<|AUDIO|>"])
        config.pad_token_id = ids["<|endoftext|>"]
        with seeded(seed):
            model = Qwen2AudioForConditionalGeneration(config).float().eval()
            # With the default init (std 0.02) a frozen random LM head caps the logits at about
            # +-1.3 (RMS-normed hidden of norm ~8 times rows of norm ~0.16), so LoRA cannot fit any
            # target below ~5 nats per token. A pretrained head is not so flat; give the random
            # one rows of norm ~2.4 so that LoRA fine-tuning of the tiny model behaves like that.
            with torch.no_grad():
                model.lm_head.weight.normal_(0.0, 0.3)
        if size != "tiny":  # models meant to learn get Whisper's sinusoidal (frozen) encoder positions
            positions = model.model.audio_tower.embed_positions
            with torch.no_grad():
                positions.weight.copy_(sinusoids(*positions.weight.shape))
        model.generation_config = GenerationConfig(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                                                   bos_token_id=ids["<|endoftext|>"], do_sample=False)
        return model, cls(hf_processor)

    @classmethod
    def real_shape_model(cls, processor: "Qwen2Audio", layers: int | None, device, dtype, seed: int = 0):
        import torch
        from transformers import GenerationConfig, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

        ids = {t: processor.tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        audio = dict(REAL_AUDIO_CONFIG, **({"encoder_layers": layers} if layers else {}))
        text = dict(REAL_TEXT_CONFIG, **({"num_hidden_layers": layers} if layers else {}),
                    bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
        config = Qwen2AudioConfig(audio_config=audio, text_config=text, audio_token_index=ids["<|AUDIO|>"])
        config.pad_token_id = ids["<|endoftext|>"]
        torch.manual_seed(seed)
        # Allocated and initialised on the device itself, in the target dtype: no 34 GB float32
        # copy in host memory and no host-to-device transfer.
        with torch.device(device):
            model = Qwen2AudioForConditionalGeneration._from_config(config, dtype=dtype)
        model.generation_config = GenerationConfig(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                                                   bos_token_id=ids["<|endoftext|>"], do_sample=False)
        return model.eval()

    @classmethod
    def build_tiny(cls, out_dir: str | Path, seed: int = 0, size: str = "tiny",
                   window_seconds: int | None = None) -> Path:
        """Write a random Qwen2-Audio (model + processor) to ``out_dir``.

        ``size="tiny"``: about 220k parameters, a Whisper-style encoder (d_model 32, 2 layers,
        2 heads, 128 mel bins) and a Qwen2 text model (hidden 64, 2 layers, 4 heads, 2 KV heads,
        FFN 128). ``window_seconds`` (whole seconds, default 30 as in the real model): the
        processor pads and cuts clips to this length and the encoder has ``window_seconds * 50``
        positions; a full window gives ``window_seconds * 25`` audio tokens. Deterministic: the
        same seed gives identical weights and tokenizer.
        """
        model, processor = cls.make_tiny(seed, size=size, window_seconds=window_seconds)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_model(model, processor, out)
        return out

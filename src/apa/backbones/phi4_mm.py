"""Phi-4-multimodal-instruct in transformers' native format (model_type ``phi4_multimodal``).

A Phi-4-mini text model (hidden 3072, 32 layers, 24 heads, 8 KV heads, fused qkv_proj and
gate_up_proj, FFN 8192, o200k vocabulary of 200064, tied embeddings, partial rotary 0.75 with
longrope), a 24-block conformer audio encoder (1024 wide, 80 log-mels, subsampling x8) with a
two-layer projector, and a SigLIP vision encoder apa never feeds. A clip becomes
ceil(frames / 8) audio tokens (12.5 per second) whatever its length: the encoder splits what
exceeds 500 positions (40 s) into independent 40 s windows, so there is no audio window.

What the family needs beyond the common interface:

- **Two formats on the hub.** Its main branch is the original custom-code format (model_type
  ``phi4mm``), which transformers 5.17 does not map; the native conversion is the hub branch
  ``refs/pr/70``. A ``phi4mm`` checkpoint is refused with the command that fetches the native one.
- **The speech LoRA.** The native model holds no LoRA code: the audio ability lives in the
  ``speech-lora/`` PEFT adapter (r=320 on the text model's projections); without it the model
  answers audio with "I can't listen to audio". ``load`` merges it before apa adds its own LoRA,
  and marks the config so that a saved full fine-tune is not merged twice.
- **Fused projections.** The text model's layers are ``qkv_proj``, ``o_proj``, ``gate_up_proj``,
  ``down_proj``; the audio encoder (inside the same ``Phi4MultimodalModel``) has layers of the
  same names, so LoRA targets are anchored at the decoder layers (``model.layers.N``).
- **The tokenizer.** o200k: digits grouped up to three, so "10" is one token. It is loaded from
  tokenizer.json as it is (TokenizersBackend): a ``GPT2Tokenizer`` class in tokenizer_config.json
  would make transformers 5 rebuild it with GPT-2's pre-tokenizer, which splits numbers otherwise.
- **No transformers processor.** Phi4MultimodalProcessor needs its image processor, which needs
  torchvision; batches are built from the feature extractor and tokenizer with the processor's
  own expansion of ``<|audio|>`` (tests check the count against the model's).
- **Longrope.** The rotary factors switch from "short" to "long" once a sequence passes 4096
  positions, which invalidates a KV cache built before. apa's inputs (prompt ~300 tokens, 60 s of
  audio at most = 750 tokens, response < 300) stay far below; ``hidden_states`` refuses more.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from apa.backbones.base import Processor, module_path, unwrap
from apa.errors import ApaError

SAMPLE_RATE = 16000
SPEECH_LORA = "speech-lora"
NATIVE_REVISION = "refs/pr/70"
# Set in the config of a model whose speech LoRA is merged (saved with a full fine-tune).
MERGED_FLAG = "apa_speech_lora_merged"
# The audio encoder's window in positions (8 frames each: 40 s), Phi4MultimodalAudioModel's max_seq_len.
ENCODER_WINDOW = 500
# The chat template of the native processor, verbatim as transformers' own processor test gives it
# (tests/models/phi4_multimodal/test_processing_phi4_multimodal.py); for apa's messages it renders
# what the original text-only template renders (tests/test_phi4_mm.py checks both).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' }}{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{{ '<|image|>' }}{% elif content['type'] == 'audio' %}{{ '<|audio|>' }}{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{% if message['role'] == 'system' and 'tools' in message "
    "and message['tools'] is not none %}{{ '<|tool|>' + message['tools'] + '<|/tool|>' + '<|end|>' }}{% endif %}"
    "{{ '<|end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}"
    "{% endif %}"
)


def merged(model, attach):
    """``attach(model)`` (a PeftModel holding the speech LoRA) merged into ``model``'s weights:
    the outputs of the adapter active at no extra cost, and apa's own LoRA goes on top. PEFT's
    merge_and_unload, then what the wrapping changed besides undone (it froze every base weight,
    which a full fine-tune must train), and the config marked merged (saved with the weights, so
    that they are not merged twice)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    model = attach(model).merge_and_unload()
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)
    setattr(model.config, MERGED_FLAG, True)
    return model


class Phi4MM(Processor):
    name = "phi4-mm"
    model_types = ("phi4_multimodal", "phi4mm")  # phi4mm only to refuse it with the way out
    hub_id = "microsoft/Phi-4-multimodal-instruct"
    chat_template = CHAT_TEMPLATE
    system_prompt = None  # the template has no default system turn; the model card uses none
    end_of_turn = "<|end|>"
    audio_token = "<|audio|>"
    clip_keys = ("audio_input_features", "audio_embed_sizes", "audio_attention_mask")
    lora_targets = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
    audio_lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj")
    has_window = False  # hears any length: build_tiny takes no window_seconds (apa demo reads this)
    tiny_module = "apa.backbones.phi4_mm_tiny"  # its tiny builder and real-shape model

    # --- batches ------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], audios: Sequence[np.ndarray], padding_side: str) -> dict:
        """What Phi4MultimodalProcessor gives for text + audio, built without it (its image
        processor needs torchvision): each ``<|audio|>`` repeated audio_embed_sizes[i] times."""
        import torch

        clips = [np.asarray(a, dtype=np.float32) for a in audios]
        window = self.feature_extractor.win_length
        for clip in clips:
            if len(clip) < window:  # no frame at all: the encoder would fail on an empty sequence
                raise ApaError(f"a clip of {len(clip)} samples is shorter than Phi-4's analysis window "
                               f"({window} samples, {window * 1000 // SAMPLE_RATE} ms); leave it out")
        features = self.feature_extractor(clips, sampling_rate=SAMPLE_RATE, return_attention_mask=True,
                                          return_tensors="pt")
        sizes = features["audio_embed_sizes"]
        placeholders = sum(t.count(self.audio_token) for t in texts)
        if placeholders != len(clips):
            raise ValueError(f"{placeholders} {self.audio_token} placeholders for {len(clips)} clips")
        counts = iter(sizes.tolist())
        expanded = [re.sub(re.escape(self.audio_token), lambda _: self.audio_token * next(counts), t) for t in texts]
        tokens = self.tokenizer(expanded, padding=True, padding_side=padding_side, return_tensors="pt")
        mask = features.get("audio_attention_mask")
        if mask is None:  # the extractor leaves it out for one clip; all frames are real then
            mask = torch.ones(features["audio_input_features"].shape[:2], dtype=torch.bool)
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"],
                "audio_input_features": features["audio_input_features"], "audio_embed_sizes": sizes,
                "audio_attention_mask": mask}

    @property
    def audio_window_seconds(self) -> None:
        return None  # any length: the encoder works in 40 s windows inside

    def audio_token_count(self, seconds: float) -> int:
        import torch

        extractor = self.feature_extractor
        # frames as Phi4MultimodalFeatureExtractor.__call__ counts them, then its own token formula
        frames = max(0, (int(round(seconds * SAMPLE_RATE)) - extractor.win_length) // extractor.hop_length + 1)
        return int(extractor._compute_audio_embed_size(torch.tensor(frames * extractor.audio_feat_stride)))

    def save_pretrained(self, folder: str | Path) -> None:
        self.tokenizer.save_pretrained(str(folder))
        self.feature_extractor.save_pretrained(str(folder))

    # --- the model ------------------------------------------------------------------------------
    def clip_features(self, model, batch: dict) -> list:
        """Encoder, then the speech projector (up, GELU, down), the first audio_embed_sizes[i]
        positions per clip: Phi4MultimodalAudioEmbedding.forward's steps before it writes them
        into the embeddings (transformers has no method for them alone)."""
        import torch

        audio = unwrap(model).model.embed_tokens_extend.audio_embed
        device, dtype = audio.up_proj_for_speech.bias.device, audio.up_proj_for_speech.bias.dtype
        inputs = batch["audio_input_features"].to(device, dtype)
        mask = batch["audio_attention_mask"].to(device)
        if self.encoder_windows(inputs) > 1:
            # transformers 5.17 cuts a sequence over 40 s into windows with a view that fails for
            # more than one clip; the encoder treats clips independently, so clip by clip (each
            # as padded in the batch) computes what the batched call would
            hidden = torch.cat([audio.encoder(inputs[i:i + 1], mask[i:i + 1]) for i in range(len(inputs))])
        else:
            hidden = audio.encoder(inputs, mask)
        features = audio.down_proj_for_speech(torch.nn.functional.gelu(audio.up_proj_for_speech(hidden)))
        return [features[i, :int(n)] for i, n in enumerate(batch["audio_embed_sizes"])]

    def encoder_windows(self, audio_input_features) -> int:
        """How many 500-position (40 s) windows the audio encoder cuts the batch's frames into."""
        positions = -(-audio_input_features.shape[1] // self.feature_extractor.audio_compression_rate)
        return -(-positions // ENCODER_WINDOW)

    def generate_inputs(self, batch: dict) -> dict:
        if len(batch["audio_input_features"]) > 1 and self.encoder_windows(batch["audio_input_features"]) > 1:
            raise ApaError("free decoding cannot batch a clip over 40 s with other clips on Phi-4 (transformers 5.17 "
                           "fails to window such a batch in the audio encoder); use constrained decoding or a batch "
                           "size of 1")
        return dict(batch)

    def text_model(self, model):
        # Phi4MultimodalModel: the decoder stack (it also holds the audio and vision encoders, and
        # skips them when given inputs_embeds)
        return unwrap(model).model

    def audio_encoder(self, model):
        return unwrap(model).model.embed_tokens_extend.audio_embed.encoder

    def hidden_states(self, model, embeds, attention_mask, position_ids=None, cache=None):
        longest = (int(position_ids.max()) + 1 if position_ids is not None
                   else embeds.shape[1] + (cache.get_seq_length() if cache is not None else 0))
        rope = unwrap(model).config.rope_parameters
        switch = rope.get("original_max_position_embeddings") if rope.get("rope_type") == "longrope" else None
        if switch and longest > switch:
            raise ApaError(f"a sequence of {longest} positions passes Phi-4's long-rope switch at {switch}, where its "
                           "rotary factors change and a KV cache built before no longer matches; use shorter audio "
                           "or text (apa's prompts with a 60 s clip stay under 1,500)")
        return super().hidden_states(model, embeds, attention_mask, position_ids, cache)

    def lora_target_regex(self, model, target_modules=None, train_audio: bool = False) -> str:
        """The common regex with its text-model part anchored at the decoder layers: the "text
        model" (Phi4MultimodalModel) also holds the audio encoder, whose attention and MLP layers
        share the text model's names (o_proj, gate_up_proj, down_proj)."""
        pattern = super().lora_target_regex(model, target_modules, train_audio)
        text = "^(" + re.escape(module_path(unwrap(model), self.text_model(model)))
        if not pattern.startswith(text + r"\..*\."):
            raise ValueError(f"unexpected LoRA target regex {pattern!r}")
        return text + r"\.layers\.\d+\.(self_attn|mlp)\." + pattern[len(text + r"\..*\."):]

    def check_model(self, model, name: str) -> None:
        super().check_model(model, name)
        expected = unwrap(model).config.audio_config.audio_token_id
        if self.audio_token_id != expected:
            raise ApaError(f"{name}: the tokenizer's {self.audio_token} id {self.audio_token_id} differs from the "
                           f"model config's audio_token_id {expected}; the model and processor do not belong together")

    # --- loading ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str, dtype, device: str, local_files_only: bool) -> tuple[Any, "Phi4MM"]:
        """The native checkpoint with its speech LoRA merged (see merged); what is missing is
        said before any weight is read."""
        from peft import PeftModel
        from transformers import (Phi4MultimodalFeatureExtractor, Phi4MultimodalForCausalLM, PretrainedConfig,
                                  TokenizersBackend)

        config, _ = PretrainedConfig.get_config_dict(path, local_files_only=local_files_only)
        if config.get("model_type") == "phi4mm":
            raise ApaError(f"{path} is Phi-4-multimodal in its original custom-code format (model_type phi4mm), "
                           "which transformers 5.17 does not load; download the transformers-native conversion "
                           f"(huggingface-cli download {cls.hub_id} --revision {NATIVE_REVISION} --local-dir DIR) "
                           "or convert it with transformers' convert_phi4_multimodal_weights_to_hf.py, keep its "
                           f"{SPEECH_LORA}/ folder, and pass --model DIR")
        # a model saved after load (a full fine-tune) holds the speech LoRA already
        speech_lora = None if config.get(MERGED_FLAG) else cls.speech_lora_folder(path, local_files_only)
        # tokenizer.json as it is: see the module docstring (a GPT2Tokenizer class would re-split numbers)
        tokenizer = TokenizersBackend.from_pretrained(path, local_files_only=local_files_only)
        feature_extractor = Phi4MultimodalFeatureExtractor.from_pretrained(path, local_files_only=local_files_only)
        kwargs = cls.from_pretrained_kwargs(dtype, device, local_files_only)
        model = Phi4MultimodalForCausalLM.from_pretrained(path, **kwargs)
        if speech_lora is not None:
            model = merged(model, lambda m: PeftModel.from_pretrained(m, str(speech_lora)))
        return model, cls(tokenizer, feature_extractor)

    @classmethod
    def speech_lora_folder(cls, path: str, local_files_only: bool) -> Path:
        if os.path.isdir(path):
            folder = Path(path) / SPEECH_LORA
        else:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(path, allow_patterns=[f"{SPEECH_LORA}/*"],
                                            local_files_only=local_files_only)) / SPEECH_LORA
        if not (folder / "adapter_config.json").is_file():
            raise ApaError(f"{path} has no {SPEECH_LORA}/adapter_config.json: Phi-4-multimodal hears audio only with "
                           f"its speech LoRA; download the whole checkpoint ({cls.hub_id} --revision "
                           f"{NATIVE_REVISION}, {SPEECH_LORA}/ included) and pass --model DIR")
        return folder

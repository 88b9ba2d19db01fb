"""IBM Granite-Speech 3.3 2B: the small backbone, for cheap serving.

A conformer CTC encoder (16 layers, 1024 wide, block attention over 200 frames) reads 80-bin
log-mels stacked in pairs (160 values, 50 frames per second); a Q-Former projector turns each
window of 15 frames into 3 tokens (10 audio tokens per second, in 0.3 s blocks, any length);
the text model is Granite-3.3-2B (hidden 2048, 40 layers, 32 heads, 8 KV heads, FFN 8192,
vocabulary 49160, tied embeddings, muP multipliers). 3.0B parameters, 5.6 GiB in bf16.

Three things are particular to this family:

- **The speech LoRA.** The checkpoint keeps a LoRA adapter (adapter_config.json beside the
  weights) that ``from_pretrained`` attaches and that IBM's ``generate`` switches on only when
  audio is given. apa always gives audio, so ``load`` merges it into the weights, before apa
  adds its own LoRA (``merge_speech_adapter``).
- **The logits scaling.** Granite's language model divides its logits by ``logits_scaling``
  (8), and transformers did so in ``GraniteForCausalLM``, which Granite-Speech ran until the
  5.x refactor; in 5.17 ``GraniteSpeechForConditionalGeneration`` applies its own ``lm_head``
  and drops the division, so its probabilities are 8 times too sharp (argmax unchanged).
  ``scale_logits`` puts the division back on ``lm_head``, so that the stock forward, the
  loss, ``generate`` and this interface's ``logits`` all compute what the checkpoint was
  trained with (tests/test_granite_speech.py compares with ``GraniteForCausalLM``, so a
  transformers that divides again fails there instead of dividing twice).
- **The audio front end** needs torchaudio, which has no CPU build for torch 2.13 on PyPI
  (``TorchMelFeatureExtractor``; transformers' extractor is used wherever torchaudio imports).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Sequence

import numpy as np
# The extractor's module imports torchaudio only where it is installed.
from transformers import GraniteSpeechFeatureExtractor

from apa.backbones.base import Processor, unwrap
from apa.errors import ApaError

SAMPLE_RATE = 16000
AUDIO_TOKEN = "<|audio|>"
END_OF_TEXT = "<|end_of_text|>"
# The Granite 3.x vocabulary (StarCoder's): these special tokens are ids 0-18, <|end_of_text|>
# first (bos = eos = pad = 0), then the BPE vocabulary, then the chat roles (49152...) and, last,
# granite-speech's <|audio|> (49159, the config's audio_token_index).
LEADING_SPECIAL_TOKENS = (END_OF_TEXT, "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<filename>",
                          "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>",
                          "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<empty_output>", "<commit_before>",
                          "<commit_msg>", "<commit_after>", "<reponame>")
TRAILING_SPECIAL_TOKENS = ("<|start_of_role|>", "<|end_of_role|>", "<|tool_call|>", AUDIO_TOKEN)
# The Granite 3.x instruct template, verbatim (the text-only template: the audio token is typed
# into the user's content string).
CHAT_TEMPLATE = r"""{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = "Knowledge Cutoff Date: April 2024.\nToday's Date: " + strftime_now('%B %d, %Y') + ".\nYou are Granite, developed by IBM." %}
    {%- if tools and documents %}
        {%- set system_message = system_message + " You are a helpful AI assistant with access to the following tools. When a tool is required to answer the user's query, respond with <|tool_call|> followed by a JSON list of tools used. If a tool does not exist in the provided list of tools, notify the user that you do not have the ability to fulfill the request.\n\nWrite the response to the user's input by strictly aligning with the facts in the provided documents. If the information needed to answer the question is not available in the documents, inform the user that the question cannot be answered based on the available data." %}
    {%- elif tools %}
        {%- set system_message = system_message + " You are a helpful AI assistant with access to the following tools. When a tool is required to answer the user's query, respond with <|tool_call|> followed by a JSON list of tools used. If a tool does not exist in the provided list of tools, notify the user that you do not have the ability to fulfill the request." %}
    {%- elif documents %}
        {%- set system_message = system_message + " Write the response to the user's input by strictly aligning with the facts in the provided documents. If the information needed to answer the question is not available in the documents, inform the user that the question cannot be answered based on the available data." %}
    {%- else %}
        {%- set system_message = system_message + " You are a helpful AI assistant." %}    
    {%- endif %}
    {%- if 'citations' in controls and documents %}
        {%- set system_message = system_message + '\n\nIn your response, use the symbols <co> and </co> to indicate when a fact comes from a document in the search result, e.g <co>0</co> for a fact from document 0. Afterwards, list all the citations with their corresponding documents in an ordered list.' %}
    {%- endif %}
    {%- if 'hallucinations' in controls and documents %}
        {%- set system_message = system_message + '\n\nFinally, after the response is written, include a numbered list of sentences from the response that are potentially hallucinated and not based in the documents.' %}
    {%- endif %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- '<|start_of_role|>system<|end_of_role|>' + system_message + '<|end_of_text|>\n' }}
{%- if tools %}
    {{- '<|start_of_role|>tools<|end_of_role|>' }}
    {{- tools | tojson(indent=4) }}
    {{- '<|end_of_text|>\n' }}
{%- endif %}
{%- if documents %}
    {{- '<|start_of_role|>documents<|end_of_role|>' }}
    {%- for document in documents %}
        {{- 'Document ' + loop.index0 | string + '\n' }}
        {{- document['text'] }}
        {%- if not loop.last %}
            {{- '\n\n'}}
        {%- endif%}
    {%- endfor %}
    {{- '<|end_of_text|>\n' }}
{%- endif %}
{%- for message in loop_messages %}
    {{- '<|start_of_role|>' + message['role'] + '<|end_of_role|>' + message['content'] + '<|end_of_text|>\n' }}
    {%- if loop.last and add_generation_prompt %}
        {{- '<|start_of_role|>assistant' }}
            {%- if controls %}
                {{- ' ' + controls | tojson()}}
            {%- endif %}
        {{- '<|end_of_role|>' }}
    {%- endif %}
{%- endfor %}
"""
# The template's default system message holds today's date (strftime_now), so a prompt would
# change from one day to the next (and a trained adapter would meet a prompt it never saw).
# apa passes the system message of the model card's own example, date fixed, verbatim (no
# final period).
SYSTEM_PROMPT = ("Knowledge Cutoff Date: April 2024.\nToday's Date: April 9, 2025.\n"
                 "You are Granite, developed by IBM. You are a helpful AI assistant")
# The speech adapter's layers, as its adapter_config.json names them (only the language model
# has layers of these names).
SPEECH_LORA_TARGETS = ("q_proj", "v_proj")


def torchaudio_available() -> bool:
    return importlib.util.find_spec("torchaudio") is not None


def scale_logits(model) -> None:
    """Make ``model.lm_head`` divide by the text config's ``logits_scaling``, as Granite's own
    ``GraniteForCausalLM`` does (see the module docstring); idempotent. A forward hook, because
    the head's weight is tied to the input embeddings and cannot be rescaled in place."""
    inner = unwrap(model)
    if getattr(inner, "_apa_logits_scaling", None) is not None:
        return
    scaling = float(inner.config.text_config.logits_scaling)

    def divide(module, args, output):
        return output / scaling

    inner.lm_head.register_forward_hook(divide)
    inner._apa_logits_scaling = scaling


def merge_speech_adapter(model) -> bool:
    """Merge the speech LoRA that ``from_pretrained`` attached into the base weights and take
    its layers out, as PEFT's ``merge_and_unload`` does (that method belongs to a PeftModel;
    transformers attaches this adapter to the model itself). Returns whether there was one."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if not getattr(model, "_hf_peft_config_loaded", False):
        return False
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge(safe_merge=True)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    del model.peft_config
    model._hf_peft_config_loaded = False
    merged(model)
    return True


def merged(model):
    """``model`` after its speech adapter was merged: trainable again (attaching the adapter
    froze the base weights) and saying it has no adapter (a folder saved from it holds the
    merged weights and none)."""
    model.requires_grad_(True)
    model.config.has_lora_adapter = False
    return model


class TorchMelFeatureExtractor(GraniteSpeechFeatureExtractor):
    """``GraniteSpeechFeatureExtractor`` with its log-mel computed by torch ops.

    Hand-written because the original needs torchaudio (its ``MelSpectrogram``), and PyPI has
    no CPU build of torchaudio for torch 2.13 (the CUDA one fails to load). Same features:
    ``torch.stft`` with torchaudio ``MelSpectrogram``'s defaults (periodic Hann window of
    ``win_length`` in an ``n_fft`` frame, centred, reflect padding, power 2) and an HTK mel
    filter bank without normalisation (transformers' ``mel_filter_bank``, float64 rounded to
    float32; torchaudio builds it in float32: features differ by < 2e-5); then Granite's log10,
    floor at the clip's maximum - 8, x / 4 + 1 and pairs of frames stacked. Token counts,
    audio coercion and padding are the original's methods. Saved as a
    GraniteSpeechFeatureExtractor, so the folder loads with the original where torchaudio is.
    """

    def __init__(self, sampling_rate: int = 16000, n_fft: int = 512, win_length: int = 400, hop_length: int = 160,
                 n_mels: int = 80, projector_window_size: int = 15, projector_downsample_rate: int = 5,
                 padding_value: float = 0.0, **kwargs):
        # The original's __init__ minus its torchaudio check and MelSpectrogram.
        from transformers.audio_utils import mel_filter_bank
        from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor

        feature_size = n_mels if kwargs.get("feature_size") is None else kwargs.pop("feature_size")
        SequenceFeatureExtractor.__init__(self, feature_size=feature_size, sampling_rate=sampling_rate,
                                          padding_value=padding_value, **kwargs)
        self.sampling_rate = sampling_rate
        self.melspec_kwargs = {"sample_rate": sampling_rate, "n_fft": n_fft, "win_length": win_length,
                               "hop_length": hop_length, "n_mels": n_mels}
        self.projector_window_size = projector_window_size
        self.projector_downsample_rate = projector_downsample_rate
        # [n_fft // 2 + 1, n_mels]; "mel_filters" is left out of the saved config (to_dict)
        self.mel_filters = mel_filter_bank(n_fft // 2 + 1, n_mels, 0.0, float(sampling_rate // 2), sampling_rate,
                                           norm=None, mel_scale="htk").astype(np.float32)

    def __call__(self, audios, device: str | None = "cpu"):
        """The original's __call__ minus its torchaudio check."""
        import torch
        from transformers.feature_extraction_utils import BatchFeature

        batched, lengths = self._get_audios_and_audio_lengths(audios)
        sizes = self._get_num_audio_features(lengths)
        mask = torch.arange(max(sizes)).view(1, -1) < torch.tensor(sizes).view(-1, 1)
        return BatchFeature(data={"input_features": self._extract_mel_spectrograms(batched, device=device),
                                  "audio_embed_sizes": sizes, "input_features_mask": mask})

    def _extract_mel_spectrograms(self, audio, device="cpu"):
        import torch

        kw = self.melspec_kwargs
        audio = audio.to(device or "cpu").float()
        window = torch.hann_window(kw["win_length"], device=audio.device)
        with torch.no_grad():
            spectrum = torch.stft(audio, kw["n_fft"], hop_length=kw["hop_length"], win_length=kw["win_length"],
                                  window=window, center=True, pad_mode="reflect", normalized=False, onesided=True,
                                  return_complex=True).abs().pow(2)
            mel = spectrum.transpose(-1, -2) @ torch.from_numpy(self.mel_filters).to(audio.device)
            logmel = mel.clamp(min=1e-10).log10()
            top = logmel.amax(dim=(-2, -1), keepdim=True)
            logmel = torch.maximum(logmel, top - 8.0) / 4 + 1
            if logmel.shape[1] % 2 == 1:  # an odd last frame is dropped, pairs of frames stacked
                logmel = logmel[:, :-1]
            return logmel.reshape(audio.shape[0], -1, 2 * logmel.shape[-1])

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["feature_extractor_type"] = "GraniteSpeechFeatureExtractor"
        return output


def feature_extractor_class():
    """transformers' extractor where torchaudio imports, else the torch-ops one."""
    return GraniteSpeechFeatureExtractor if torchaudio_available() else TorchMelFeatureExtractor


class GraniteSpeech(Processor):
    name = "granite-speech"
    model_types = ("granite_speech",)
    hub_id = "ibm-granite/granite-speech-3.3-2b"
    chat_template = CHAT_TEMPLATE
    system_prompt = SYSTEM_PROMPT
    end_of_turn = END_OF_TEXT
    audio_token = AUDIO_TOKEN
    clip_keys = ("input_features", "input_features_mask")
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    # the conformer's attention (to_q, to_kv, to_out) and feed-forward (up_proj, down_proj)
    audio_lora_targets = ("to_q", "to_kv", "to_out", "up_proj", "down_proj")
    # transformers' conversion mapping for granite_speech, reversed; vLLM's loader reads these.
    release_names = (("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
                     ("model.encoder.", "encoder."), ("model.projector.", "projector."))
    has_window = False  # block attention over any length
    tiny_module = "apa.backbones.granite_speech_tiny"  # its tiny builder and real-shape model

    def __init__(self, hf_processor):
        super().__init__(hf_processor.tokenizer, hf_processor.audio_processor)
        self.hf_processor = hf_processor

    @classmethod
    def messages(cls, instruction: str) -> list[dict]:
        """The template is text-only: the audio placeholder is typed into the user's content."""
        return [{"role": "system", "content": cls.system_prompt},
                {"role": "user", "content": AUDIO_TOKEN + instruction}]

    def encode(self, texts: Sequence[str], audios: Sequence[np.ndarray], padding_side: str) -> dict:
        batch = self.hf_processor(text=list(texts), audio=[np.asarray(a, dtype=np.float32) for a in audios],
                                  padding=True, padding_side=padding_side, return_tensors="pt")
        batch = dict(batch)
        batch.pop("audio_embed_sizes", None)  # a list the model does not take (the mask carries it)
        return batch

    @property
    def audio_window_seconds(self) -> None:
        return None  # block attention over any length: nothing is cut

    def audio_token_count(self, seconds: float) -> int:
        return int(self.feature_extractor._get_num_audio_features([int(round(seconds * SAMPLE_RATE))])[0])

    def save_pretrained(self, folder: str | Path) -> None:
        self.hf_processor.save_pretrained(str(folder))

    def clip_features(self, model, batch: dict) -> list:
        """Encoder + projector per clip (transformers' ``get_audio_features``), each clip's
        first ``input_features_mask`` tokens, as the stock forward keeps them."""
        inner = unwrap(model)
        features = batch["input_features"].to(inner.device, inner.dtype)
        projected = inner.get_audio_features(features).pooler_output
        counts = batch["input_features_mask"].sum(-1).tolist()
        return [projected[i, :int(n)] for i, n in enumerate(counts)]

    def text_model(self, model):
        return unwrap(model).model.language_model

    def audio_encoder(self, model):
        return unwrap(model).model.encoder

    def check_model(self, model, name: str) -> None:
        super().check_model(model, name)
        expected = unwrap(model).config.audio_token_index
        if self.audio_token_id != expected:
            raise ApaError(f"{name}: the tokenizer's {AUDIO_TOKEN} id {self.audio_token_id} differs from the model "
                           f"config's audio_token_index {expected}; the model and processor do not belong together")

    # --- loading ------------------------------------------------------------------------------
    @classmethod
    def load_processor(cls, path: str, local_files_only: bool):
        """transformers' GraniteSpeechProcessor, with the torch-ops extractor where torchaudio is
        missing (AutoProcessor would build the torchaudio one and fail)."""
        from transformers import AutoProcessor, AutoTokenizer, GraniteSpeechProcessor

        if torchaudio_available():
            return AutoProcessor.from_pretrained(path, local_files_only=local_files_only)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_files_only)
        extractor = TorchMelFeatureExtractor.from_pretrained(path, local_files_only=local_files_only)
        return GraniteSpeechProcessor(audio_processor=extractor, tokenizer=tokenizer, audio_token=AUDIO_TOKEN,
                                      chat_template=tokenizer.chat_template)

    @classmethod
    def load(cls, path: str, dtype, device: str, local_files_only: bool) -> tuple[Any, "GraniteSpeech"]:
        from transformers import GraniteSpeechForConditionalGeneration

        processor = cls.load_processor(path, local_files_only)
        kwargs = cls.from_pretrained_kwargs(dtype, device, local_files_only)
        model = GraniteSpeechForConditionalGeneration.from_pretrained(path, **kwargs)
        had_adapter = model.config.has_lora_adapter
        if not merge_speech_adapter(model) and had_adapter:
            raise ApaError(f"{path}: config.json says the model has a speech LoRA adapter (has_lora_adapter), but "
                           "there is no adapter_config.json / adapter_model.safetensors beside the weights; without "
                           f"it the model mishears audio. Download the whole repository (huggingface-cli download "
                           f"{cls.hub_id} --local-dir DIR) and pass --model DIR")
        scale_logits(model)
        return model, cls(processor)

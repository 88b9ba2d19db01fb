"""What every backbone provides: the one interface between apa and an audio language model.

apa's tasks, prompts, targets, training objectives, decoders, evaluation and service do not
know which audio LLM they drive. Everything that differs between models lives in one
subclass of ``Processor`` per model family (apa.backbones.qwen2_audio, ...), and a loaded
instance, bound to the checkpoint's tokenizer and audio front end, is what the rest of apa
calls "the processor":

- **the chat input**: ``render(instruction)`` is the system turn, the user turn (audio
  placeholder + instruction) and the assistant prompt, exactly as the checkpoint's own chat
  template renders them; ``end_of_turn`` closes the assistant's answer;
- **batches**: ``encode(texts, audios, padding_side)`` tokenizes the rendered texts, expands
  each audio placeholder to the clip's audio tokens and computes the audio features (one
  entry per clip under ``clip_keys``);
- **the economical forward**: ``embed`` encodes each clip once and scatters its features into
  every row that uses it; ``hidden_states`` runs the text model alone (with a KV cache and
  explicit positions for chunked decoding); ``logits`` applies the LM head to the positions
  a caller picked;
- **fine-tuning**: ``lora_target_regex`` names the language model's linear layers only;
- **loading and a tiny offline model** (``load`` / ``build_tiny``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np

from apa.errors import ApaError


def module_path(model, module) -> str:
    """The dotted name of ``module`` inside ``model`` (as PEFT sees it)."""
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise ValueError("module is not part of the model")


def unwrap(model):
    """The transformers model inside DDP and PEFT wrappers (a LoRA adapter stays active)."""
    import torch.nn as nn

    while True:
        if hasattr(model, "module") and isinstance(getattr(model, "module"), nn.Module):
            model = model.module  # DistributedDataParallel
        elif hasattr(model, "get_base_model"):
            model = model.get_base_model()  # PeftModel
        else:
            return model


def upcast(tensor):
    """``tensor`` in float32, or float64 when it is float64 already."""
    import torch

    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


class Processor:
    """One audio LLM family, bound to a checkpoint's tokenizer and audio front end."""

    # --- what the family is ---------------------------------------------------------------
    name: ClassVar[str] = ""                 # short name: apa tiny-model --backbone NAME
    model_types: ClassVar[tuple[str, ...]] = ()  # config.json "model_type" values it loads
    hub_id: ClassVar[str] = ""               # the released checkpoint
    chat_template: ClassVar[str] = ""        # the checkpoint's template, for `apa prompt` without a model
    system_prompt: ClassVar[str | None] = None  # passed explicitly (None: no system message)
    end_of_turn: ClassVar[str] = ""          # the token that closes the assistant's answer
    audio_token: ClassVar[str] = ""          # the placeholder the processor expands per clip
    clip_keys: ClassVar[tuple[str, ...]] = ()  # batch entries with one item per clip
    lora_targets: ClassVar[tuple[str, ...]] = ()  # the language model's linear layers (last names)
    audio_lora_targets: ClassVar[tuple[str, ...]] = ()  # the audio encoder's, for train_audio
    has_window: ClassVar[bool] = True        # the model hears a fixed window (build_tiny takes window_seconds)
    # (in-memory prefix, release prefix) of the tensor names that differ between the model
    # transformers holds and the released checkpoint, first match wins (apa.backbones.release).
    release_names: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, tokenizer, feature_extractor):
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        # The parallel decoder's first guess per (level, aspect), from the trained model's
        # apa_run.json (apa.backbones.loading.first_guesses); None: 10 everywhere.
        self.first_guesses: dict[tuple[str, str], int] | None = None
        # The acoustic evidence the trained model reads in its prompt (apa_run.json "evidence":
        # "gop"; apa.evidence), which prediction and scoring must supply; None: the paper's prompts.
        self.evidence: str | None = None

    # --- the chat input ---------------------------------------------------------------------
    @classmethod
    def messages(cls, instruction: str) -> list[dict]:
        """The conversation: the system turn (when the family sets one) and the user's audio +
        instruction. Families whose template reads the audio from the content list use this;
        others override it."""
        messages = [] if cls.system_prompt is None else [{"role": "system", "content": cls.system_prompt}]
        messages.append({"role": "user", "content": [{"type": "audio", "audio_url": "audio"},
                                                     {"type": "text", "text": instruction}]})
        return messages

    @classmethod
    def render(cls, instruction: str) -> str:
        """The model input text before audio expansion, rendered by transformers' own chat
        template renderer with the checkpoint's template (so it is exactly what
        ``apply_chat_template`` gives)."""
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(conversations=[cls.messages(instruction)],
                                            chat_template=cls.chat_template, add_generation_prompt=True)
        return rendered[0]

    # --- batches ------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], audios: Sequence[np.ndarray], padding_side: str) -> dict:
        """Token ids (audio placeholders expanded), attention mask and per-clip audio tensors."""
        raise NotImplementedError

    @property
    def audio_window_seconds(self) -> float | None:
        """The longest clip the model hears whole (longer ones are cut); None when it hears any length."""
        raise NotImplementedError

    def audio_token_count(self, seconds: float) -> int:
        """About how many audio tokens a clip of ``seconds`` becomes (for sorting batches)."""
        raise NotImplementedError

    @property
    def pad_token_id(self) -> int:
        if self.tokenizer.pad_token_id is not None:
            return self.tokenizer.pad_token_id
        return self.end_of_turn_id

    @property
    def end_of_turn_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.end_of_turn)

    @property
    def audio_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.audio_token)

    def save_pretrained(self, folder: str | Path) -> None:
        """Write the tokenizer and audio front end so that ``load`` finds them in ``folder``."""
        raise NotImplementedError

    # --- the model ------------------------------------------------------------------------------
    def clip_features(self, model, batch: dict) -> list:
        """Each clip's audio features as the text model receives them: [n_i, hidden] per clip."""
        raise NotImplementedError

    def token_embeddings(self, model, input_ids):
        return unwrap(model).get_input_embeddings()(input_ids)

    def embed(self, model, input_ids, batch: dict, clip_of_row=None):
        """Token embeddings with each row's audio tokens replaced by its clip's features.

        ``clip_of_row[r]`` is the index of row r's clip among the batch's clips (default: row r
        uses clip r); every clip is encoded once, however many rows use it.
        """
        import torch

        embeds = self.token_embeddings(model, input_ids)
        features = self.clip_features(model, batch)
        if clip_of_row is None:
            clip_of_row = range(input_ids.shape[0])
        rows = [features[int(c)] for c in clip_of_row]
        mask = input_ids == self.audio_token_id
        n_tokens, n_features = int(mask.sum()), sum(int(f.shape[0]) for f in rows)
        if n_tokens != n_features:
            raise ValueError(f"{n_tokens} audio tokens but {n_features} audio features: the processor and the "
                             "model disagree on the audio")
        if not n_tokens:
            return embeds
        values = torch.cat(rows).to(embeds.device, embeds.dtype)
        return embeds.masked_scatter(mask.unsqueeze(-1).to(embeds.device), values)

    def text_model(self, model):
        """The decoder stack that maps input embeddings to hidden states (no LM head)."""
        raise NotImplementedError

    def position_ids(self, positions):
        """Positions [rows, tokens] in the form the text model takes (1-D rotary by default)."""
        return positions

    def hidden_states(self, model, embeds, attention_mask, position_ids=None, cache=None):
        """The text model's last hidden states; with ``cache`` (a transformers Cache) the new
        tokens attend to the cached ones and are appended to it."""
        if position_ids is not None:
            position_ids = self.position_ids(position_ids)
        out = self.text_model(model)(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                                     past_key_values=cache, use_cache=cache is not None)
        return out.last_hidden_state

    def logits(self, model, hidden):
        """Next-token logits of the hidden states a caller picked, in float32 at least (a
        bf16 softmax over a 150k-word vocabulary loses the small probabilities)."""
        return upcast(unwrap(model).lm_head(hidden))

    def generate_inputs(self, batch: dict) -> dict:
        """The keyword arguments of ``model.generate`` for a generation batch."""
        return dict(batch)

    # --- fine-tuning --------------------------------------------------------------------------
    def audio_encoder(self, model):
        raise NotImplementedError

    def lora_target_regex(self, model, target_modules: Iterable[str] | None = None, train_audio: bool = False) -> str:
        """A regex PEFT full-matches against module names: the language model's linear layers
        whose last name is in ``target_modules`` (default: all of its attention and MLP
        projections), and with ``train_audio`` the audio encoder's too. A plain name list
        would also hit the audio (or vision) encoder's layers of the same names."""
        target_modules = tuple(target_modules or self.lora_targets)
        inner = unwrap(model)


        def anchor(module) -> str:
            # The module's release path too: the adapter then also loads onto a model laid out
            # as the release (the whole Qwen2.5-Omni, thinker.model.*), not only onto apa's.
            path = module_path(inner, module)
            release = self.release_name(path + ".")[:-1]
            return re.escape(path) if release == path else f"({re.escape(path)}|{re.escape(release)})"

        parts = [rf"{anchor(self.text_model(inner))}\..*\.({'|'.join(map(re.escape, target_modules))})"]
        if train_audio:
            parts.append(rf"{anchor(self.audio_encoder(inner))}\..*\."
                         rf"({'|'.join(map(re.escape, self.audio_lora_targets))})")
        return "^(" + "|".join(parts) + ")$"

    def check_model(self, model, name: str) -> None:
        """Refuse a model and tokenizer that do not belong together."""
        vocab = unwrap(model).get_input_embeddings().weight.shape[0]
        if len(self.tokenizer) > vocab:
            raise ApaError(f"{name}: the tokenizer has {len(self.tokenizer)} tokens but the model only {vocab}; "
                           "the model and processor do not belong together")

    # --- the release layout ------------------------------------------------------------------------
    @classmethod
    def release_name(cls, name: str) -> str:
        """A tensor or module name of the model in memory as the release names it."""
        for old, new in cls.release_names:
            if name.startswith(old):
                return new + name[len(old):]
        return name

    @classmethod
    def release_config(cls, model):
        """The config a saved ``model`` gets when the release's differs from the in-memory
        model's own (the Omni thinker saved as the whole model), else None."""
        return None

    # --- loading ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str, dtype, device: str, local_files_only: bool) -> tuple[Any, "Processor"]:
        """(model, processor) from a folder or hub id (eval mode, on ``device``)."""
        raise NotImplementedError

    @staticmethod
    def from_pretrained_kwargs(dtype, device: str, local_files_only: bool) -> dict[str, Any]:
        """What every family's ``from_pretrained`` gets: the dtype, offline or not, and on CUDA
        the device itself (weights loaded there directly, not through host memory)."""
        kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": local_files_only}
        if str(device).startswith("cuda"):
            kwargs["device_map"] = {"": device}
        return kwargs

    @classmethod
    def load_processor_only(cls, path: str) -> "Processor":
        """This family's processor from a local folder, without the weights (for an engine that
        loads them itself: apa.inference.vllm_engine)."""
        raise ApaError(f"apa cannot load {cls.name}'s processor alone; use --engine hf")

    # A family may keep its tiny builder in a module of its own (``tiny_module``), with the
    # module-level functions tiny_configs(size, window_seconds), make_tiny(cls, seed, size,
    # window_seconds), build_tiny(cls, out_dir, seed, size, window_seconds) and
    # real_shape_model(processor, layers, device, dtype, seed); these classmethods call them.
    tiny_module: ClassVar[str | None] = None

    @classmethod
    def _tiny_builder(cls):
        import importlib

        if cls.tiny_module is None:
            raise NotImplementedError(f"{cls.__name__} has no tiny builder")
        return importlib.import_module(cls.tiny_module)

    @classmethod
    def real_shape_model(cls, processor: "Processor", layers: int | None, device, dtype, seed: int = 0):
        """A model with the real checkpoint's dimensions (its first ``layers`` layers only, when
        given) and random weights, built on ``device`` in ``dtype`` (for benchmarks: random
        weights cost the arithmetic of trained ones); its vocabulary holds ``processor``'s ids."""
        return cls._tiny_builder().real_shape_model(processor, layers, device, dtype, seed)

    @classmethod
    def tiny_configs(cls, size: str = "tiny", window_seconds: int | None = None):
        """The configuration of a tiny model of ``size``: the real one with the sizes shrunk."""
        return cls._tiny_builder().tiny_configs(size, window_seconds)

    @classmethod
    def make_tiny(cls, seed: int = 0, size: str = "tiny", window_seconds: int | None = None):
        """A random model of ``size`` and its processor, in memory, as ``load`` would return
        them from ``build_tiny``'s folder."""
        return cls._tiny_builder().make_tiny(cls, seed, size, window_seconds)

    @classmethod
    def build_tiny(cls, out_dir: str | Path, seed: int = 0, size: str = "tiny",
                   window_seconds: int | None = None) -> Path:
        """Write a tiny random model of this family with its real config (sizes shrunk), chat
        template, special tokens and pre-tokenizer; returns the folder."""
        return cls._tiny_builder().build_tiny(cls, out_dir, seed, size, window_seconds)

"""The only module that knows Qwen2-Audio: loading, LoRA, and a tiny random test model.

Everything else talks to ``(model, processor)`` pairs through apa.collate and
apa.inference, so a different backbone would only need a new version of this file.

- ``load_model_and_processor`` loads ``Qwen2AudioForConditionalGeneration`` and its
  processor (bf16 on a GPU that has it, float32 otherwise), optionally with a LoRA adapter,
  and turns "no network" / "no such directory" into one clear ApaError.
- ``add_lora`` puts LoRA on the language model's linear layers only (docs/method.md, Model):
  a plain PEFT name list (``["q_proj", ...]``) would also match the audio encoder's
  ``q_proj``/``k_proj``/``v_proj``, so the targets are given as a regex anchored at the
  language model's module path.
- the model constants: special tokens, LoRA targets, the audio front end and window.

The tiny random test model is built by apa.tiny_model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

from apa.errors import ApaError

DEFAULT_MODEL = "Qwen/Qwen2-Audio-7B-Instruct"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The audio encoder's (Whisper) linear layers, targeted only with train_audio=True.
AUDIO_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

# Qwen2-Audio's audio front end: 100 mel frames per second; the encoder's stride-2 conv
# halves them (max_source_positions = 50 per second), pooling halves them again (25 audio
# tokens per second). The real model's window is 30 s.
MEL_FRAMES_PER_SECOND = 100
ENCODER_POSITIONS_PER_SECOND = 50
AUDIO_TOKENS_PER_SECOND = 25
FULL_WINDOW_SECONDS = 30
# Special tokens in the order (and roles) of the real Qwen2-Audio tokenizer (ids 151643...).
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>",
                  "<|audio_eos|>")


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------

def resolve_dtype(dtype: Any = "auto", device: str | None = None):
    """"auto": bf16 on a CUDA device that supports it, float32 otherwise (CPU included)."""
    import torch

    if dtype is None or dtype == "auto":
        if device is not None and str(device).startswith("cuda") and torch.cuda.is_available() \
                and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    # float64 is for checking arithmetic (tests of equivalences that float32 rounding blurs).
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
             "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32,
             "fp64": torch.float64, "float64": torch.float64}
    if dtype not in names:
        raise ApaError(f"unknown dtype {dtype!r}; choose one of: auto, {', '.join(names)}")
    return names[dtype]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _looks_local(name: str) -> bool:
    """A path rather than a hub id: exists, is absolute/relative-explicit, or has >1 slash."""
    return (os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1
            or "\\" in name)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _load_error(name: str, error: Exception) -> ApaError:
    first_line = _first_line(error)
    if _looks_local(name):
        return ApaError(f"cannot load a Qwen2-Audio model from {name}: {first_line}. "
                        "Pass --model DIR with a directory written by save_pretrained or "
                        "`huggingface-cli download`, or run `apa tiny-model DIR` for a random test model")
    return ApaError(f"cannot load {name}: no such directory, not in the local cache, and the hub could not "
                    f"provide it ({first_line}). "
                    f"Download it on a connected machine (huggingface-cli download {name} --local-dir DIR), "
                    "then pass --model DIR; or run `apa tiny-model DIR` for a random test model")


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an invalid repo id, an unreadable cache: treat as not cached
        return False


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hugging Face hub can be reached, decided in seconds (a plain download
    retries for minutes before it gives up without a network)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy resolves names itself; let the download try
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_pretrained(name: str, torch_dtype, device: str, local_files_only: bool):
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration
    from transformers.utils import logging as transformers_logging

    # A progress bar per load is noise on a command's stderr (and in a service's log).
    transformers_logging.disable_progress_bar()

    processor = AutoProcessor.from_pretrained(name, local_files_only=local_files_only)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": local_files_only}
    if str(device).startswith("cuda"):
        kwargs["device_map"] = {"": device}
    model = Qwen2AudioForConditionalGeneration.from_pretrained(name, **kwargs)
    return model, processor


def load_model_and_processor(name_or_path: str | os.PathLike = DEFAULT_MODEL, adapter: str | os.PathLike | None = None,
                             dtype: Any = "auto", device: str | None = None):
    """Load ``(model, processor)`` for inference or training; the model is in eval mode.

    ``name_or_path`` is a directory or a hub id (from the local cache when it is there,
    else downloaded). ``adapter`` is a LoRA adapter directory saved by PEFT. ``device``
    defaults to CUDA when available. Raises ApaError (one line, no traceback) when the
    model cannot be found or downloaded.
    """
    name = str(name_or_path)
    local = _looks_local(name)
    if local and not os.path.isdir(os.path.expanduser(name)):
        raise ApaError(f"model directory {name} does not exist; pass --model with a downloaded "
                       f"{DEFAULT_MODEL} (huggingface-cli download {DEFAULT_MODEL} --local-dir DIR) "
                       "or run `apa tiny-model DIR` for a random test model")
    name = os.path.expanduser(name)
    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    try:
        if local:
            model, processor = _from_pretrained(name, torch_dtype, device, local_files_only=True)
        else:
            try:
                if not _in_hub_cache(name):
                    raise OSError("not in the local cache")
                model, processor = _from_pretrained(name, torch_dtype, device, local_files_only=True)
            except OSError as e:
                if not hub_reachable():
                    raise ApaError(f"cannot download {name}: no network ({_first_line(e)}), and there is no "
                                   f"directory {name} here. Download it on a connected "
                                   f"machine (huggingface-cli download {name} --local-dir DIR), copy DIR here "
                                   "and pass --model DIR; or run `apa tiny-model DIR` for a random test model") \
                        from None
                model, processor = _from_pretrained(name, torch_dtype, device, local_files_only=False)
    except ApaError:
        raise
    except (OSError, ValueError) as e:  # hub and file errors subclass these
        raise _load_error(name, e) from None
    if not str(device).startswith("cuda"):
        model.to(device)
    _check_model_matches_processor(model, processor, name)
    if adapter is not None:
        model = load_adapter(model, adapter)
    model.eval()
    return model, processor


def _check_model_matches_processor(model, processor, name: str) -> None:
    tokenizer = processor.tokenizer
    audio_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    if audio_id != model.config.audio_token_id:
        raise ApaError(f"{name}: the tokenizer's <|AUDIO|> id {audio_id} differs from the model config's "
                       f"audio_token_id {model.config.audio_token_id}; the model and processor do not belong together")
    if len(tokenizer) > model.config.text_config.vocab_size:
        raise ApaError(f"{name}: tokenizer has {len(tokenizer)} tokens but the model only "
                       f"{model.config.text_config.vocab_size}; the model and processor do not belong together")


def load_adapter(model, adapter_dir: str | os.PathLike, is_trainable: bool = False):
    """Wrap ``model`` with a saved LoRA adapter (PeftModel.from_pretrained)."""
    from peft import PeftModel

    path = Path(adapter_dir)
    if not (path / "adapter_config.json").is_file():
        raise ApaError(f"adapter directory {path} has no adapter_config.json; pass --adapter with a "
                       "directory saved by `apa train` (or leave it out to use the base model)")
    try:
        return PeftModel.from_pretrained(model, str(path), is_trainable=is_trainable)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ApaError(f"cannot load adapter {path} onto this model: {_first_line(e)}; "
                       "was it trained on the same base model?") from None


# --------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------

def module_path(model, module) -> str:
    """The dotted name of ``module`` inside ``model`` (as PEFT sees it)."""
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise ValueError("module is not part of the model")


def language_model_path(model) -> str:
    """Dotted path of the text model (``model.language_model`` in transformers 5.17)."""
    inner = getattr(model, "model", model)
    return module_path(model, inner.language_model)


def audio_tower_path(model) -> str:
    inner = getattr(model, "model", model)
    return module_path(model, inner.audio_tower)


def lora_target_regex(model, target_modules: Iterable[str] = LORA_TARGETS, train_audio: bool = False) -> str:
    """A regex PEFT full-matches against module names: the LM's (and optionally the audio
    encoder's) linear layers whose last name is in ``target_modules``."""
    parts = [rf"{re.escape(language_model_path(model))}\..*\.({'|'.join(map(re.escape, target_modules))})"]
    if train_audio:
        parts.append(rf"{re.escape(audio_tower_path(model))}\..*\.({'|'.join(AUDIO_LORA_TARGETS)})")
    return "^(" + "|".join(parts) + ")$"


def add_lora(model, r: int = 8, alpha: int = 16, dropout: float = 0.05,
             target_modules: Iterable[str] = LORA_TARGETS, train_audio: bool = False):
    """Wrap ``model`` in a PeftModel with LoRA on the language model's linear layers.

    With ``train_audio`` the audio encoder's attention and FFN linears get LoRA too; the
    projector never does. Returns the PeftModel (base weights frozen).
    """
    from peft import LoraConfig, get_peft_model

    target_modules = tuple(target_modules)
    pattern = lora_target_regex(model, target_modules, train_audio)
    matched = [n for n, _ in model.named_modules() if re.fullmatch(pattern, n)]
    if not matched:
        raise ApaError(f"LoRA targets {', '.join(target_modules)} match no module of the language model; "
                       "check the names (e.g. q_proj, gate_proj)")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern,
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def audio_window_seconds(processor) -> float:
    """The longest clip the processor's feature extractor keeps (longer ones are cut there)."""
    extractor = processor.feature_extractor
    return extractor.n_samples / extractor.sampling_rate


def audio_token_estimate(processor, seconds: float) -> int:
    """About how many audio tokens a clip of ``seconds`` becomes in the prompt (the part
    beyond the processor's window is cut)."""
    return int(round(min(seconds, audio_window_seconds(processor)) * AUDIO_TOKENS_PER_SECOND))

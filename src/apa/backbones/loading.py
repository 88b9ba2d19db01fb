"""Loading any backbone: a local folder or a hub id, an optional LoRA adapter, clear errors offline.

The backbone is read from the checkpoint's config.json (``model_type``) before any weight is
loaded, so a wrong or unknown model fails in a second with a message naming it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from apa.errors import ApaError


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


def looks_local(name: str) -> bool:
    """A path rather than a hub id: exists, is absolute/relative-explicit, or has >1 slash."""
    return (os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1
            or "\\" in name)


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _download_hint(name: str) -> str:
    return (f"Download it on a connected machine (huggingface-cli download {name} --local-dir DIR), copy DIR "
            "here and pass --model DIR; or run `apa tiny-model DIR` for a random test model")


def _load_error(name: str, error: Exception) -> ApaError:
    if looks_local(name):
        return ApaError(f"cannot load a model from {name}: {first_line(error)}. Pass --model DIR with a directory "
                        "written by save_pretrained or `huggingface-cli download`, or run `apa tiny-model DIR` "
                        "for a random test model")
    return ApaError(f"cannot load {name}: no such directory, not in the local cache, and the hub could not "
                    f"provide it ({first_line(error)}). {_download_hint(name)}")


def in_hub_cache(repo_id: str) -> bool:
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


def model_type_of(name: str, local_files_only: bool) -> str:
    """config.json's model_type, read without loading anything else."""
    from transformers import PretrainedConfig

    config, _ = PretrainedConfig.get_config_dict(name, local_files_only=local_files_only)
    if "model_type" not in config:
        raise ApaError(f"{name}/config.json has no model_type; is it a transformers checkpoint?")
    return config["model_type"]


def _load(name: str, dtype, device: str, local_files_only: bool):
    from transformers.utils import logging as transformers_logging

    from apa.backbones import backbone_for_model_type

    # A progress bar per load is noise on a command's stderr (and in a service's log).
    transformers_logging.disable_progress_bar()
    backbone = backbone_for_model_type(model_type_of(name, local_files_only), where=name)
    return backbone.load(name, dtype, device, local_files_only)


def load_model_and_processor(name_or_path: str | os.PathLike | None = None, adapter: str | os.PathLike | None = None,
                             dtype: Any = "auto", device: str | None = None):
    """Load ``(model, processor)`` for inference or training; the model is in eval mode and the
    processor is its backbone's (apa.backbones.base.Processor).

    ``name_or_path`` is a directory or a hub id (from the local cache when it is there, else
    downloaded; default: the default backbone's checkpoint). ``adapter`` is a LoRA adapter
    directory saved by PEFT. ``device`` defaults to CUDA when available. Raises ApaError (one
    line, no traceback) when the model cannot be found or downloaded.
    """
    from apa.backbones import default_model
    from apa.distributed import resolve_device

    name = str(name_or_path or default_model())
    local = looks_local(name)
    if local and not os.path.isdir(os.path.expanduser(name)):
        raise ApaError(f"model directory {name} does not exist; pass --model with a downloaded checkpoint "
                       f"(huggingface-cli download {default_model()} --local-dir DIR) "
                       "or run `apa tiny-model DIR` for a random test model")
    name = os.path.expanduser(name)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        if local:
            model, processor = _load(name, torch_dtype, device, local_files_only=True)
        else:
            try:
                if not in_hub_cache(name):
                    raise OSError("not in the local cache")
                model, processor = _load(name, torch_dtype, device, local_files_only=True)
            except OSError as e:
                if not hub_reachable():
                    raise ApaError(f"cannot download {name}: no network ({first_line(e)}), and there is no "
                                   f"directory {name} here. {_download_hint(name)}") from None
                model, processor = _load(name, torch_dtype, device, local_files_only=False)
    except ApaError:
        raise
    except (OSError, ValueError) as e:  # hub and file errors subclass these
        raise _load_error(name, e) from None
    if not str(device).startswith("cuda"):
        model.to(device)
    processor.check_model(model, name)
    if adapter is not None:
        model = load_adapter(model, adapter)
    processor.first_guesses = first_guesses(adapter if adapter is not None else name)
    processor.evidence = trained_evidence(adapter if adapter is not None else name)
    model.eval()
    return model, processor


def load_adapter(model, adapter_dir: str | os.PathLike, is_trainable: bool = False):
    """Wrap ``model`` with a saved LoRA adapter (PeftModel.from_pretrained): named for the
    release (apa.backbones.release) or, as apa wrote them before, for the model in memory.
    Refuses an adapter that would load without effect."""
    from peft import PeftModel

    from apa.backbones import backbone_for_model_type
    from apa.backbones.base import unwrap
    from apa.backbones.release import adapter_key_mapping, check_adapter_landed

    path = Path(adapter_dir)
    if not (path / "adapter_config.json").is_file():
        raise ApaError(f"adapter directory {path} has no adapter_config.json; pass --adapter with a "
                       "directory saved by `apa train` (or leave it out to use the base model)")
    backbone = backbone_for_model_type(unwrap(model).config.model_type)
    try:
        wrapped = PeftModel.from_pretrained(model, str(path), is_trainable=is_trainable,
                                            key_mapping=adapter_key_mapping(backbone))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ApaError(f"cannot load adapter {path} onto this model: {first_line(e)}; "
                       "was it trained on the same base model?") from None
    check_adapter_landed(wrapped, path, backbone)
    return wrapped


def run_info(folder: str | os.PathLike) -> dict:
    """What `apa train` recorded about a saved adapter or model (apa_run.json), or {}."""
    path = Path(folder) / "apa_run.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def trained_evidence(folder: str | os.PathLike) -> str | None:
    """The acoustic evidence a trained model reads in its prompt (apa_run.json), or None.
    A model trained on another version of the evidence prompt is refused: given this apa's
    prompt it would score from figures it never learnt to read, and nothing would say so."""
    from apa.prompts import EVIDENCE_PROMPT_VERSION

    info = run_info(folder)
    evidence = info.get("evidence") or None
    version = info.get("prompt_version")
    if evidence and version and version != EVIDENCE_PROMPT_VERSION:
        raise ApaError(f"{folder} was trained with evidence prompt version {version}; this apa writes version "
                       f"{EVIDENCE_PROMPT_VERSION}, whose figures it never learnt to read: train it again with "
                       "this apa (or use the apa release that trained it)")
    return evidence


def first_guesses(folder: str | os.PathLike) -> dict[tuple[str, str], int] | None:
    """The parallel decoder's first guesses a trained model carries: the training set's most
    frequent value per (level, aspect), or None (then it guesses 10)."""
    saved = run_info(folder).get("first_guesses") or {}
    try:
        return {tuple(key.split(" ", 1)): int(value) for key, value in saved.items()} or None
    except (AttributeError, TypeError, ValueError):
        return None

"""The release layout: every model folder and adapter apa writes names its tensors as the
family's published checkpoint does, so that other tools (transformers, PEFT, vLLM) load it as
it is.

In memory, transformers 5 arranges some families differently from their release: Qwen2-Audio's
text model is ``model.language_model.layers.*``, the release's ``language_model.model.layers.*``.
On load, transformers renames (its conversion mapping); on save, 5.17 reverts the mapping twice
(the family's rule and the sub-model's) and writes ``language_model.model.model.layers.*``,
which vLLM and any reader of the release layout refuse. apa therefore saves with the in-memory
names (``save_original_format=False``) and renames them itself, once, with the family's
``Processor.release_names``: (in-memory prefix, release prefix) pairs, as transformers'
conversion mapping and vLLM's ``hf_to_vllm_mapper`` state them. The Qwen2.5-Omni thinker is
held alone in memory (``model.layers.*``) but lives under ``thinker.`` in the release, whose
config is the whole model's (``Processor.release_config``).

Adapters are renamed the same way (``base_model.model.<release name>``): without it an Omni
adapter loads in vLLM onto nothing, silently. apa reads them back through PEFT's
``key_mapping`` (release -> in-memory) and refuses an adapter whose weights did not all land
(``check_adapter_landed``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from apa.errors import ApaError

ADAPTER_PREFIX = "base_model.model."
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def to_memory(processor_cls, name: str) -> str:
    """A release name as the model in memory names it (the inverse of Processor.release_name);
    an in-memory name stays as it is."""
    for old, new in processor_cls.release_names:
        if new and name.startswith(new):
            return old + name[len(new):]
    return name


def adapter_key_mapping(processor_cls) -> dict[str, str]:
    """PEFT's ``key_mapping`` (regex -> replacement on names without ``base_model.model.``)
    that reads a release-named adapter onto the in-memory model; an adapter with in-memory
    names (written before this layout) matches none of them and loads as it is."""
    return {"^" + re.escape(new): old for old, new in processor_cls.release_names if new}


def _rename_safetensors(folder: Path, rename_key) -> None:
    """Rename every tensor of the safetensors files in ``folder`` (and the shard index)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {"format": "pt"}
            tensors = {rename_key(k): f.get_tensor(k) for k in f.keys()}
        save_file(tensors, str(path), metadata=metadata)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        content = json.loads(index.read_text())
        content["weight_map"] = {rename_key(k): v for k, v in content["weight_map"].items()}
        index.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def save_model(model, processor, folder: str | Path) -> Path:
    """Write ``model`` (every weight; an attached adapter merged first is the caller's
    business) and ``processor`` to ``folder`` in the family's release layout."""
    from apa.backbones.base import unwrap

    folder = Path(folder)
    inner = unwrap(model)
    inner.save_pretrained(folder, save_original_format=False)
    _rename_safetensors(folder, type(processor).release_name)
    config = type(processor).release_config(inner)
    if config is not None:
        config.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def release_adapter_key(processor_cls, key: str) -> str:
    """``base_model.model.<in-memory name>...`` -> ``base_model.model.<release name>...``."""
    if not key.startswith(ADAPTER_PREFIX):
        return key
    name = key[len(ADAPTER_PREFIX):]
    if any(name.startswith(new) for _, new in processor_cls.release_names if new):
        return key  # already a release name
    return ADAPTER_PREFIX + processor_cls.release_name(name)


def save_adapter(peft_model, processor_cls, folder: str | Path) -> Path:
    """``peft_model.save_pretrained(folder)`` with the weights renamed for the release."""
    folder = Path(folder)
    peft_model.save_pretrained(str(folder))
    _rename_safetensors(folder, lambda key: release_adapter_key(processor_cls, key))
    return folder


def check_adapter_landed(model, adapter_dir: str | Path, processor_cls) -> None:
    """Refuse an adapter that PEFT loaded without effect: every LoRA weight of its file must
    be a weight of ``model`` now, equal to the file's. PEFT only warns about weights that
    match no module, and LoRA layers whose weights did not arrive stay at their initial
    values (B = 0): the model would run as the base model."""
    from safetensors.torch import load_file

    path = Path(adapter_dir) / ADAPTER_WEIGHTS
    if not path.is_file():
        return  # a .bin adapter: PEFT's own checks only
    saved = load_file(str(path))
    live = dict(model.named_parameters())
    stray = []
    for key, value in saved.items():
        name = to_memory(processor_cls, key[len(ADAPTER_PREFIX):]) if key.startswith(ADAPTER_PREFIX) else key
        module, _, weight = name.rpartition(".")  # ...q_proj.lora_A . weight
        target = live.get(f"{ADAPTER_PREFIX}{module}.default.{weight}")
        if target is None or not target.detach().cpu().equal(value.to(target.dtype)):
            stray.append(key)
    if stray:
        raise ApaError(f"adapter {adapter_dir}: {len(stray)} of its {len(saved)} weights name no module of this "
                       f"model (e.g. {stray[0]}), so it would load without effect; pass the adapter trained on this "
                       f"base model, or re-export it with `apa export --model BASE --adapter {adapter_dir} --out DIR`")


def backbone_of(model):
    """The Processor class of a loaded model (from its config's model_type)."""
    from apa.backbones import backbone_for_model_type
    from apa.backbones.base import unwrap

    return backbone_for_model_type(unwrap(model).config.model_type)


def save_weights(model, processor, folder: str | Path) -> Path:
    """What a training run saves: the adapter of a PeftModel, else the whole model with its
    processor (a model folder any tool loads)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return save_adapter(model, type(processor), folder)
    return save_model(model, processor, folder)


def adapter_weights_in_memory(adapter_dir: str | Path, processor_cls, device: str = "cpu") -> dict:
    """An adapter's weights under the in-memory names (for set_peft_model_state_dict)."""
    from safetensors.torch import load_file

    saved = load_file(str(Path(adapter_dir) / ADAPTER_WEIGHTS), device=str(device))
    return {ADAPTER_PREFIX + to_memory(processor_cls, k[len(ADAPTER_PREFIX):]) if k.startswith(ADAPTER_PREFIX) else k: v
            for k, v in saved.items()}

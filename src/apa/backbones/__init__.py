"""Audio language models apa can fine-tune and serve: one module per family, one interface.

The backbone of a checkpoint is chosen from its config.json ``model_type``; no flag is needed
beyond ``--model`` / ``model:``. ``apa tiny-model DIR --backbone NAME`` builds a tiny random
one offline. The interface every family implements: apa.backbones.base.Processor.
"""

from __future__ import annotations

from apa.errors import ApaError

# short name -> "module:class"; imported only when used (each pulls in its transformers classes).
BACKBONES = {
    "qwen2-audio": "apa.backbones.qwen2_audio:Qwen2Audio",
    "qwen2.5-omni": "apa.backbones.qwen2_5_omni:Qwen2_5Omni",
    "phi4-mm": "apa.backbones.phi4_mm:Phi4MM",
    "granite-speech": "apa.backbones.granite_speech:GraniteSpeech",
}
DEFAULT_BACKBONE = "qwen2-audio"


def backbone_class(name: str):
    """The Processor class of backbone ``name`` (a short name of BACKBONES)."""
    import importlib

    if name not in BACKBONES:
        raise ApaError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    module, cls = BACKBONES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def backbone_for_model_type(model_type: str, where: str = "the model"):
    """The Processor class that loads checkpoints whose config.json says ``model_type``."""
    for name in BACKBONES:
        cls = backbone_class(name)
        if model_type in cls.model_types:
            return cls
    known = ", ".join(t for name in BACKBONES for t in backbone_class(name).model_types)
    raise ApaError(f"{where} is a {model_type!r} model, which apa does not know; apa loads: {known}")


def default_model() -> str:
    return backbone_class(DEFAULT_BACKBONE).hub_id

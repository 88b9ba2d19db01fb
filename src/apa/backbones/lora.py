"""LoRA on the language model only, for any backbone (PEFT with an anchored target regex)."""

from __future__ import annotations

import re
from typing import Iterable

from apa.errors import ApaError


def add_lora(model, processor, r: int = 8, alpha: int = 16, dropout: float = 0.0,
             target_modules: Iterable[str] | None = None, train_audio: bool = False):
    """Wrap ``model`` in a PeftModel with LoRA on the language model's linear layers (those
    named in ``target_modules``, default the backbone's attention and MLP projections).

    A plain PEFT name list (``["q_proj", ...]``) would also match the audio encoder's (and a
    vision encoder's) layers of the same names, so the targets are a regex anchored at the
    language model's module path (``processor.lora_target_regex``). With ``train_audio`` the
    audio encoder's linears get LoRA too. Returns the PeftModel (base weights frozen).
    """
    from peft import LoraConfig, get_peft_model

    pattern = processor.lora_target_regex(model, target_modules, train_audio)
    if not any(re.fullmatch(pattern, n) for n, _ in model.named_modules()):
        names = ", ".join(target_modules or processor.lora_targets)
        raise ApaError(f"LoRA targets {names} match no module of the language model; this backbone's layers are "
                       f"{', '.join(processor.lora_targets)}")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern,
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def lora_parameter_count(model, processor, r: int = 8, target_modules: Iterable[str] | None = None) -> int:
    """Parameters LoRA of rank ``r`` adds on the language model: r x (in + out) per layer."""
    import torch.nn as nn

    pattern = processor.lora_target_regex(model, target_modules)
    return sum(r * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and re.fullmatch(pattern, n))

"""Checkpoints of a training run: weights, optimizer, scheduler, data position and RNG state.

A checkpoint is written whole into a temporary folder and renamed (apa.files.atomic_folder),
so a crash mid-save never corrupts the last good one; `apa train --resume` continues from
the newest exactly as if the run had not stopped (tested against an uninterrupted run).

Layout: OUTPUT_DIR/checkpoints/step-NNNNNN/{adapter|model}/ and trainer_state.pt.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from apa.backbones.release import adapter_weights_in_memory, backbone_of, save_weights
from apa.distributed import rng_state, set_rng_state
from apa.errors import ApaError
from apa.files import atomic_folder


@dataclass
class TrainState:
    step: int = 0      # optimizer steps done
    epoch: int = 0     # current epoch
    position: int = 0  # this process's micro-batches done within the epoch


def weights_folder(full_finetune: bool) -> str:
    """What a run trains and saves: "adapter" (LoRA) or "model" (full_finetune: every weight)."""
    return "model" if full_finetune else "adapter"


def save_checkpoint(out: Path, model, processor, optimizer, scheduler, state: TrainState, keep: int,
                    weights: str = "adapter") -> Path:
    """Write OUT/checkpoints/step-N atomically and keep the newest ``keep`` of them; the weights
    in the release layout (apa.backbones.release), so a checkpoint loads anywhere as it is."""
    root = out / "checkpoints"
    final = root / f"step-{state.step:06d}"
    try:
        with atomic_folder(final) as tmp:
            save_weights(model, processor, tmp / weights)
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "state": asdict(state), "rng": rng_state()}, tmp / "trainer_state.pt")
    except ApaError as e:
        raise ApaError(f"{e}; the previous checkpoint is intact: rerun with --resume") from None
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / "checkpoints").glob("step-*"))
    return found[-1] if found else None


def load_checkpoint(checkpoint: Path, model, optimizer, scheduler, full_finetune: bool, device) -> TrainState:
    """Restore everything ``save_checkpoint`` wrote into the live objects; returns the state."""
    if full_finetune:
        _load_full_weights(model, checkpoint / weights_folder(True), device)
    else:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, adapter_weights_in_memory(checkpoint / "adapter", backbone_of(model),
                                                                   device=str(device)))
    saved = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    return TrainState(**saved["state"])


def _load_full_weights(model, folder: Path, device) -> None:
    """Every weight of a full_finetune checkpoint back into ``model``. Read with
    from_pretrained, which maps the saved names back onto the module's (they differ)."""
    loaded = type(model).from_pretrained(str(folder), dtype=next(model.parameters()).dtype)
    model.load_state_dict(loaded.state_dict())
    model.to(device)

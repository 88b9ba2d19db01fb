"""Processes, devices and seeds: the one place that reads torchrun's environment.

`torchrun` and `accelerate launch` start one process per device and tell each its place
through RANK, WORLD_SIZE and LOCAL_RANK. `apa train` (summed LoRA gradients) and
`apa predict` (one shard of the manifest per process) both read them here, validated, and
pick each process's device and process group the same way.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence

from apa.errors import ApaError

# How long a process waits for the others at a synchronisation point (the slowest shard of a
# long prediction, a checkpoint being written).
PROCESS_GROUP_TIMEOUT_HOURS = 12


def resolve_device(requested: str | None = None) -> str:
    """The device a single process runs on: ``requested``, or CUDA when there is one, else CPU.

    Refuses a CUDA device that this machine does not have, with the fix."""
    import torch

    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise ApaError(f"--device {requested!r} is not a device; give cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ApaError(f"--device {requested}: this machine has no CUDA GPU that torch can use; "
                           "pass --device cpu (or leave --device out)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ApaError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA "
                           "device(s); pick one of them")
    return str(device)


@dataclass(frozen=True)
class Processes:
    """This process's place among the processes of one run (one process when not launched)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> "Processes":
        """RANK / WORLD_SIZE / LOCAL_RANK as torchrun and `accelerate launch` set them."""
        try:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError as e:
            raise ApaError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({e}); launch with torchrun "
                           "or accelerate launch") from None
        if world_size < 1 or not 0 <= rank < world_size:
            raise ApaError(f"RANK={rank} does not fit WORLD_SIZE={world_size}")
        return cls(rank=rank, world_size=world_size, local_rank=local_rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world_size > 1

    def device(self, requested: str | None = None) -> str:
        """This process's device: one process takes ``requested`` (resolve_device); several take
        cuda:LOCAL_RANK when CUDA is there (also for a plain "cuda"), else CPU; an explicit
        index (cuda:1) or cpu is kept."""
        if not self.several or requested not in (None, "", "auto", "cuda"):
            return resolve_device(requested)
        import torch

        if not torch.cuda.is_available():
            return resolve_device(requested)
        if self.local_rank >= torch.cuda.device_count():
            raise ApaError(f"process LOCAL_RANK={self.local_rank} but this machine has "
                           f"{torch.cuda.device_count()} CUDA device(s); start at most one process per GPU "
                           "(--nproc_per_node / --num_processes) or pass --device cpu")
        return f"cuda:{self.local_rank}"

    def join(self, device: Any) -> bool:
        """Join the process group (gloo on CPU, nccl on CUDA) when there are several processes
        and none is joined yet; True when this call created it (and so should ``leave``)."""
        import torch
        import torch.distributed as dist

        if not self.several or dist.is_initialized():
            return False
        device = torch.device(device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                timeout=timedelta(hours=PROCESS_GROUP_TIMEOUT_HOURS))
        return True

    def leave(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def sum(self, value):
        """All-reduce a tensor in place (sum over processes); returns it."""
        if self.several:
            import torch.distributed as dist

            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order (also a barrier)."""
        if not self.several:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.several:
            import torch.distributed as dist

            dist.barrier()

    def take(self, items: Sequence) -> list:
        """This process's share: items r, r+N, r+2N, ... (interleaved, so that every process gets
        as many long and short ones, whatever is already done)."""
        return list(items[self.rank::self.world_size])


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every random generator's state (python, numpy, torch, CUDA), for checkpoints."""
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

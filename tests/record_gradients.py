"""Run `apa train` and save the global gradient of every optimizer step (rank 0).

Used by tests/test_training.py to check that a 2-process run computes the same global
gradient as a 1-process run, step by step:

    [torchrun --nproc_per_node 2] tests/record_gradients.py GRAD_DIR train key=value ...

Every optimizer step sees the gradients after the loop has summed them over processes, so
rank 0's copy is the global gradient. They are saved as GRAD_DIR/step-N.pt (a list of
tensors, in the order of the trainable parameters).
"""

import os
import sys
from pathlib import Path

import torch

from apa.cli import main

out = Path(sys.argv[1])
steps = {"n": 0}


class RecordingAdamW(torch.optim.AdamW):
    def step(self, closure=None):
        steps["n"] += 1
        if int(os.environ.get("RANK", "0")) == 0:
            grads = [p.grad.detach().clone() for group in self.param_groups for p in group["params"]]
            out.mkdir(parents=True, exist_ok=True)
            torch.save(grads, out / f"step-{steps['n']}.pt")
        return super().step(closure)


torch.optim.AdamW = RecordingAdamW
sys.exit(main(sys.argv[2:]))

"""What a training run records as it goes: metrics.jsonl always, TensorBoard when installed."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    """One JSON line per logged step (written by the main process only)."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.tensorboard = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                pass

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tensorboard.add_scalar(f"train/{key}", value, record["step"])
            self.tensorboard.flush()

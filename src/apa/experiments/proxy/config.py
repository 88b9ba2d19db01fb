"""Settings of the real-data proof (`apa proxy`): one dataclass read by apa.config."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Sequence

from apa.config import config_help, load_config, setting
from apa.errors import ApaError
from apa.training.config import HELP_HINT as TRAIN_HELP_HINT
from apa.training.config import TrainConfig

ROWS = ("model", "swapped", "silence")
# Which sentence aspects the done-criterion looks at.
CRITERION_ASPECTS = ("accuracy", "fluency", "total")
DEFAULT_TRAIN = {"method": "sft", "full_finetune": True, "epochs": 4.0, "batch_size": 16, "grad_accum": 1,
                 "lr": 1e-3, "weight_decay": 0.01, "warmup_ratio": 0.05, "scheduler": "cosine",
                 "max_grad_norm": 1.0, "seed": 0, "save_every": 100, "keep_checkpoints": 1,
                 "group_by_length": True}


@dataclass
class ProxyConfig:
    corpus: str = setting("../shared/so762", "speechocean762 in the official layout")
    out: str = setting("runs/proxy", "output folder of the whole experiment")
    task: str = setting("word_sentence", "task trained and evaluated")
    size: str = setting("small", "model size (apa tiny-model --size): tiny, small, base")
    window_seconds: int = setting(12, "audio window of the model in whole seconds (apa tiny-model --window)")
    model_seed: int = setting(0, "seed of the random initial weights (the same for every row)")
    rows: list = setting(list(ROWS), "which trained rows to run: model, swapped, silence")
    control_seed: int = setting(0, "seed of the audio swap and of the silence noise")
    threads: int = setting(2, "CPU threads per command (OMP_NUM_THREADS)")
    device: str = setting("cpu", "device of apa predict: cpu, cuda, or '' for automatic")
    train: dict = setting(dict(DEFAULT_TRAIN), "apa train settings shared by every row (TrainConfig fields)")
    predict_batch_size: int = setting(32, "apa predict --batch-size")
    decoding: str = setting("constrained", "apa predict --decoding (constrained gives argmax and expected scores)")
    bootstrap: int = setting(1000, "apa evaluate --bootstrap")
    limit_train: int = setting(0, "use only the first N training utterances (0: all); for tests")
    limit_test: int = setting(0, "use only the first N test utterances (0: all); for tests")
    target_gap: float = setting(0.15, "done-criterion: model PCC minus swapped-audio PCC at least this")
    target_pcc: float = setting(0.4, "done-criterion: model PCC above this")
    backbone: str = setting("qwen2-audio", "model family of the from-scratch model (apa tiny-model --backbone)")
    evidence: str = setting("none", "acoustic evidence in every row's prompt (apa train evidence: none or gop); "
                                    "with gop, each row's evidence comes from its own audio and the GOP "
                                    "baseline (apa baseline gop) is a row of its own")

    def validate(self) -> "ProxyConfig":
        from apa.backbones import backbone_class
        from apa.tasks import get_task

        from apa.evidence.store import check_kind

        get_task(self.task)
        self.evidence = check_kind(self.evidence) or "none"
        backbone_class(self.backbone).tiny_configs(self.size, self.window_seconds)  # size and window
        unknown = [r for r in self.rows if r not in ROWS]
        if unknown or not self.rows:
            raise ApaError(f"rows must be a non-empty list of {', '.join(ROWS)}; got {self.rows!r}")
        reserved = {"task", "model", "train", "output_dir"} & set(self.train)
        if reserved:
            raise ApaError(f"train: {', '.join(sorted(reserved))} are set by the experiment itself; remove them")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(self.train) - known)
        if unknown:
            raise ApaError(f"train: unknown apa train setting(s) {', '.join(unknown)}; {TRAIN_HELP_HINT}")
        return self


def load_proxy_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> ProxyConfig:
    """YAML file (optional) + ``key=value`` overrides (``train.KEY=VALUE`` for apa train settings)."""
    return load_config(ProxyConfig, path, overrides, help_hint="`apa proxy --help-config` lists them")


def proxy_config_help() -> str:
    return config_help(ProxyConfig)

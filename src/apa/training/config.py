"""The training configuration: one dataclass, read by apa.config (YAML + `key=value`).

Defaults are the paper's (section 3.2) and docs/method.md's decisions; every field has its
help text and `apa train --help-config` prints them. The resolved config is printed at start
and saved as ``config.yaml`` in the output folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from apa.backbones import default_model
from apa.config import config_help, load_config, setting
from apa.errors import ApaError

METHODS = ("sft", "simpo", "dpo")
HELP_HINT = "`apa train --help-config` lists them"


@dataclass
class TrainConfig:
    method: str = setting("sft", "sft | simpo | dpo")
    task: str = setting("multi", "task of the task table (apa.tasks; README, Tasks)")
    evidence: str = setting("none", "acoustic evidence in the prompt: none (the paper's prompts) or gop (a "
                                    "pretrained acoustic model's alignment and GOP, apa evidence; read from "
                                    "MANIFEST.evidence.jsonl beside each manifest, computed there when missing)")
    model: str = setting(default_model(), "base model: hub id or local folder, of any backbone apa knows "
                                          "(picked from its config.json; README, Backbones)")
    train: list = setting([], "training manifests: a list of {path, weight}; weight 2 repeats a corpus "
                          "twice per epoch, 0.5 draws half of it afresh each epoch")
    wrong_text: float = setting(0.0, "share of the training clips also read against another utterance's text "
                                     "and labelled as words not said (apa.data.wrong_text): teaches the model "
                                     "to hear a text the learner did not read; written to OUTPUT_DIR/wrong_text.jsonl")
    output_dir: str = setting("runs/run", "folder for checkpoints, logs, the final adapter and config.yaml")
    epochs: float = setting(3.0, "passes over the (weighted) training data; paper: 3 on SO762")
    max_steps: int = setting(0, "stop after this many optimizer steps (0: run all epochs)")
    limit: int = setting(0, "use only the first N utterances of each manifest (0: all); for smoke runs")
    batch_size: int = setting(1, "utterances per micro-batch (paper: 1)")
    grad_accum: int = setting(8, "micro-batches per optimizer step (paper: 8)")
    lr: float = setting(1e-4, "peak learning rate (paper: 1e-4)")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    warmup_ratio: float = setting(0.1, "fraction of steps spent warming up linearly (paper: 10%)")
    scheduler: str = setting("cosine", "cosine | constant (after warm-up)")
    max_grad_norm: float = setting(1.0, "gradient clipping norm (0: off)")
    lora_r: int = setting(8, "LoRA rank (paper: 8)")
    lora_alpha: int = setting(16, "LoRA alpha (not in the paper; 2 x rank as in LLaMA-Factory)")
    lora_dropout: float = setting(0.0, "LoRA dropout (not in the paper; LLaMA-Factory's default 0)")
    lora_targets: list = setting([], "linear layers of the text model that get LoRA (last names; empty: all its "
                                     "attention and MLP projections, whatever the backbone calls them)")
    train_audio: bool = setting(False, "also put LoRA on the audio encoder and train the projector")
    full_finetune: bool = setting(False, "train every weight, no LoRA (for small models trained from scratch, "
                                  "`apa tiny-model --size small`); saves the whole model with its "
                                  "processor to OUTPUT_DIR/model instead of an adapter; not with dpo")
    dtype: str = setting("auto", "auto (bf16 where supported, else float32) | bfloat16 | float32 | float64 (for checks)")
    gradient_checkpointing: bool = setting(False, "trade compute for memory in the text model")
    group_by_length: bool = setting(True, "batch clips of similar length together (less padding)")
    num_workers: int = setting(0, "DataLoader worker processes that decode audio and build batches")
    seed: int = setting(0, "seed for data order, pairs and LoRA initialisation")
    beta: float = setting(0.1, "SimPO / DPO beta (paper: 0.1)")
    gamma: float = setting(0.5, "SimPO reward margin gamma (paper: 0.5)")
    ce_weight: float = setting(0.1, "SimPO: weight lambda of the cross-entropy on the chosen response (paper: 0.1)")
    simpo_form: str = setting("paper", "paper: gamma inside the beta term (eq. 1); trl: beta*(r+ - r-) - gamma")
    fresh_pairs_each_epoch: bool = setting(True, "SimPO/DPO: draw each utterance's simulated pair afresh every "
                                           "epoch (false: the same pair in every epoch)")
    save_every: int = setting(200, "save a checkpoint every N optimizer steps (and always at the end)")
    keep_checkpoints: int = setting(2, "how many step checkpoints to keep")
    log_every: int = setting(1, "log metrics every N optimizer steps")

    def validate(self) -> "TrainConfig":
        from apa.tasks import get_task

        if self.method not in METHODS:
            raise ApaError(f"method must be sft, simpo or dpo, not {self.method!r}")
        from apa.evidence.store import check_kind

        get_task(self.task)
        if not 0 <= self.wrong_text <= 1:
            raise ApaError(f"wrong_text is a share of the training clips, between 0 and 1, not {self.wrong_text}")
        self.evidence = check_kind(self.evidence) or "none"
        if self.simpo_form not in ("paper", "trl"):
            raise ApaError(f"simpo_form must be paper or trl, not {self.simpo_form!r}")
        if self.full_finetune and self.method == "dpo":
            raise ApaError("full_finetune does not work with method dpo: DPO's reference model is the base "
                           "model without its LoRA adapter; use sft or simpo, or LoRA")
        if self.scheduler not in ("cosine", "constant"):
            raise ApaError(f"scheduler must be cosine or constant, not {self.scheduler!r}")
        if not self.train:
            raise ApaError("no training data: set train: [{path: data/so762_train.jsonl, weight: 1.0}]")
        # `train=data/a.jsonl` (or a list of paths) means each with weight 1.
        self.train = [{"path": s, "weight": 1.0} if isinstance(s, str) else s for s in self.train]
        for i, source in enumerate(self.train):
            if not isinstance(source, dict) or "path" not in source:
                raise ApaError(f"train[{i}] must be a mapping with a path (and optional weight), got {source!r}")
            if float(source.get("weight", 1.0)) <= 0:
                raise ApaError(f"train[{i}].weight must be positive")
        for name in ("batch_size", "grad_accum", "lora_r"):
            if getattr(self, name) < 1:
                raise ApaError(f"{name} must be at least 1")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ApaError("set epochs > 0 or max_steps > 0")
        return self


def load_train_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """YAML file (optional) + ``key=value`` overrides -> validated TrainConfig."""
    return load_config(TrainConfig, path, overrides, help_hint=HELP_HINT)


def train_config_help() -> str:
    return config_help(TrainConfig)

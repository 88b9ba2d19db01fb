"""The training configuration: one dataclass, YAML for defaults, `key=value` overrides win.

Defaults are the paper's (section 3.2) and METHOD.md's decisions; every field has its help
text in ``metadata["help"]`` and `apa train --help-config` prints them. The resolved config
is printed at start and saved as ``config.yaml`` in the output folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apa.errors import ApaError

LM_LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _f(default: Any, help: str, **kwargs: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class TrainConfig:
    method: str = _f("sft", "sft | simpo | dpo")
    task: str = _f("multi", "task of the task table (METHOD.md section 2)")
    model: str = _f("Qwen/Qwen2-Audio-7B-Instruct", "base model: hub name or local folder")
    train: list = _f([], "training manifests: a list of {path, weight}; weight 2 repeats a corpus "
                         "twice per epoch, 0.5 draws half of it afresh each epoch")
    output_dir: str = _f("runs/run", "folder for checkpoints, logs, the final adapter and config.yaml")
    epochs: float = _f(3.0, "passes over the (weighted) training data; paper: 3 on SO762")
    max_steps: int = _f(0, "stop after this many optimizer steps (0: run all epochs)")
    limit: int = _f(0, "use only the first N utterances of each manifest (0: all); for smoke runs")
    batch_size: int = _f(1, "utterances per micro-batch (paper: 1)")
    grad_accum: int = _f(8, "micro-batches per optimizer step (paper: 8)")
    lr: float = _f(1e-4, "peak learning rate (paper: 1e-4)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    warmup_ratio: float = _f(0.1, "fraction of steps spent warming up linearly (paper: 10%)")
    scheduler: str = _f("cosine", "cosine | constant (after warm-up)")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0: off)")
    lora_r: int = _f(8, "LoRA rank (paper: 8)")
    lora_alpha: int = _f(16, "LoRA alpha (not in the paper; 2 x rank as in LLaMA-Factory)")
    lora_dropout: float = _f(0.0, "LoRA dropout (not in the paper; LLaMA-Factory's default 0)")
    lora_targets: list = _f(list(LM_LINEAR_LAYERS), "linear layers of the text model that get LoRA")
    train_audio: bool = _f(False, "also put LoRA on the audio encoder and train the projector")
    full_finetune: bool = _f(False, "train every weight, no LoRA (for small models trained from scratch, "
                                    "`apa tiny-model --size small`); saves the whole model with its "
                                    "processor to OUTPUT_DIR/model instead of an adapter; not with dpo")
    dtype: str = _f("auto", "auto (bf16 where supported, else float32) | bfloat16 | float32")
    gradient_checkpointing: bool = _f(False, "trade compute for memory in the text model")
    group_by_length: bool = _f(True, "batch clips of similar length together (less padding)")
    num_workers: int = _f(0, "DataLoader worker processes that decode audio and build batches")
    seed: int = _f(0, "seed for data order, pairs and LoRA initialisation")
    beta: float = _f(0.1, "SimPO / DPO beta (paper: 0.1)")
    gamma: float = _f(0.5, "SimPO reward margin gamma (paper: 0.5)")
    ce_weight: float = _f(0.1, "SimPO: weight lambda of the cross-entropy on the chosen response (paper: 0.1)")
    simpo_form: str = _f("paper", "paper: gamma inside the beta term (eq. 1); trl: beta*(r+ - r-) - gamma")
    fresh_pairs_each_epoch: bool = _f(True, "SimPO/DPO: draw each utterance's simulated pair afresh every "
                                            "epoch (false: the same pair in every epoch)")
    save_every: int = _f(200, "save a checkpoint every N optimizer steps (and always at the end)")
    keep_checkpoints: int = _f(2, "how many step checkpoints to keep")
    log_every: int = _f(1, "log metrics every N optimizer steps")


    def validate(self) -> "TrainConfig":
        from apa.tasks import get_task

        if self.method not in ("sft", "simpo", "dpo"):
            raise ApaError(f"method must be sft, simpo or dpo, not {self.method!r}")
        get_task(self.task)
        if self.simpo_form not in ("paper", "trl"):
            raise ApaError(f"simpo_form must be paper or trl, not {self.simpo_form!r}")
        if self.full_finetune and self.method == "dpo":
            raise ApaError("full_finetune does not work with method dpo: DPO's reference model is the base "
                           "model without its LoRA adapter; use sft or simpo, or LoRA")
        if self.scheduler not in ("cosine", "constant"):
            raise ApaError(f"scheduler must be cosine or constant, not {self.scheduler!r}")
        if not self.train:
            raise ApaError("no training data: set train: [{path: data/so762_train.jsonl, weight: 1.0}]")
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def read_yaml_mapping(path: str | Path | None) -> dict[str, Any]:
    """A YAML config file as a dict ({} for None); clear errors for a missing or bad file."""
    import yaml

    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ApaError(f"config {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ApaError(f"config {path} is not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise ApaError(f"config {path} must be a mapping of field: value")
    return values


def _coerce(name: str, type_name: str, value: Any) -> Any:
    """YAML reads `2e-4` as a string and `3` as an int: give each field its declared type."""
    try:
        if type_name == "float":
            return float(value)
        if type_name == "int":
            if float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if type_name == "bool" and not isinstance(value, bool):
            raise ValueError
        if type_name == "str":
            return str(value)
    except (TypeError, ValueError):
        raise ApaError(f"config field {name} must be {type_name}, got {value!r}") from None
    return value


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """YAML file (optional) + ``key=value`` overrides -> validated TrainConfig.

    Relative manifest paths in the YAML are resolved against the working directory, as the
    README's commands run from the repository root.
    """
    values = read_yaml_mapping(path)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ApaError(f"override {item!r} must look like key=value (e.g. lr=2e-4)")
        values[key.strip()] = _parse_value(text)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ApaError(f"unknown config field(s) {', '.join(unknown)}; `apa train --help-config` lists them")
    if isinstance(values.get("train"), str):
        values["train"] = [{"path": values["train"], "weight": 1.0}]
    for f in dataclasses.fields(TrainConfig):
        if f.name in values:
            values[f.name] = _coerce(f.name, f.type, values[f.name])
    config = TrainConfig(**values)
    return config.validate()


def config_help() -> str:
    lines = []
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"{f.name} (default {default!r}): {f.metadata['help']}")
    return "\n".join(lines)


def save_config(config: TrainConfig, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))

"""The runs of a report (`apa report`): where each evaluation and config is, and what the run is.

A *run* is a folder with an evaluation written by `apa evaluate` (``metrics.json``) and,
when it was trained with `apa train`, the ``config.yaml`` saved there. ``metrics.json`` is
looked for, in this order: RUN_DIR itself when it is a ``.json`` file; RUN_DIR/metrics.json;
RUN_DIR/eval/metrics.json; the one ``metrics.json`` anywhere below RUN_DIR (several is an
error: pass the evaluation folder you mean). ``config.yaml`` is looked for in the folder of
``metrics.json`` and each folder above it up to RUN_DIR (and RUN_DIR's parent when RUN_DIR
is itself an ``eval*`` folder).

Rows are named from the config (``sft`` -> "ours FT", ``simpo`` -> "ours SimPO", ``dpo`` ->
"ours DPO"; "+ extra data" when it trains on more than one manifest) or by the caller. A run
without a config (and without an ``adapter`` folder), or whose metadata says so, was
predicted by the base model: it is named "zero-shot".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from apa.errors import ApaError
from apa.tasks import TASKS, Task

METHOD_NAMES = {"sft": "FT", "simpo": "SimPO", "dpo": "DPO", "gop-baseline": "GOP baseline"}
ZERO_SHOT = "zero-shot"


@dataclass
class Run:
    """One evaluated run: where it is, what it is called, and its metrics."""

    path: Path                    # RUN_DIR as given
    metrics_path: Path
    metrics: dict[str, Any]
    task: Task
    name: str
    zero_shot: bool
    method: str | None = None
    config_path: Path | None = None
    notes: list[str] = field(default_factory=list)  # how the run was read (for the report)

    @property
    def has_expected(self) -> bool:
        return isinstance(self.metrics.get("expected"), dict)

    def block(self, expected: bool = False) -> Mapping[str, Any]:
        return self.metrics["expected"] if expected else self.metrics


def find_metrics(run_dir: str | os.PathLike) -> Path:
    """The metrics.json of a run (see the module docstring for where it is looked for)."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        if run_dir.suffix == ".json":
            return run_dir
        raise ApaError(f"{run_dir} is a file, not a run folder or a metrics.json")
    if not run_dir.is_dir():
        raise ApaError(f"run folder {run_dir} does not exist")
    for candidate in (run_dir / "metrics.json", run_dir / "eval" / "metrics.json"):
        if candidate.is_file():
            return candidate
    found = sorted(run_dir.rglob("metrics.json"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ApaError(f"no metrics.json in {run_dir} or below; evaluate the run first "
                       f"(apa evaluate --pred PRED.jsonl --ref TEST.jsonl --task TASK --out {run_dir / 'eval'})")
    listed = ", ".join(str(p.parent) for p in found[:6]) + (" ..." if len(found) > 6 else "")
    raise ApaError(f"{len(found)} evaluations below {run_dir} ({listed}); pass the one to report "
                   "(each evaluation folder can be a RUN_DIR of its own)")


def find_config(run_dir: str | os.PathLike, metrics_path: Path) -> Path | None:
    """The config.yaml saved by `apa train` for this run, if any."""
    run_dir = Path(run_dir)
    top = run_dir if run_dir.is_dir() else run_dir.parent
    folders = []
    folder = metrics_path.parent
    while True:
        folders.append(folder)
        if folder == top or folder == folder.parent or top not in folder.parents:
            break
        folder = folder.parent
    if top.name.startswith("eval"):
        folders.append(top.parent)
    for folder in folders:
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ApaError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ApaError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); rerun `apa evaluate`") from None
    if not isinstance(data, dict):
        raise ApaError(f"{path}: not an evaluation (expected a JSON object written by `apa evaluate`)")
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ApaError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ApaError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return data if isinstance(data, dict) else {}


def _says_zero_shot(data: Mapping[str, Any]) -> bool:
    """Metadata that marks a base-model run: zero_shot: true, method: zero-shot, or an
    ``adapter`` recorded as null (in the mapping itself or under inputs/meta)."""
    if data.get("zero_shot") is True or str(data.get("method", "")).replace("_", "-") == ZERO_SHOT:
        return True
    for key in ("inputs", "meta"):
        sub = data.get(key)
        if isinstance(sub, dict) and "adapter" in sub and sub["adapter"] is None:
            return True
    return False


def _weights_folders(run_dir: str | os.PathLike, metrics_path: Path) -> list[Path]:
    """Folders of trained weights (adapter/ or model/ of `apa train`) in or just above the run."""
    run_dir = Path(run_dir)
    bases = [run_dir if run_dir.is_dir() else metrics_path.parent, metrics_path.parent]
    if metrics_path.parent.name.startswith("eval"):  # RUN/eval/metrics.json: the weights are in RUN
        bases.append(metrics_path.parent.parent)
    found = []
    for base in bases:
        for name in ("adapter", "model"):
            if (base / name).is_dir() and base / name not in found:
                found.append(base / name)
    return found


def default_name(config: Mapping[str, Any] | None, zero_shot: bool) -> str:
    """Row name from the training config: "ours FT", "ours SimPO + extra data", "zero-shot"."""
    if zero_shot:
        return ZERO_SHOT
    if not config:
        return "ours"
    method = str(config.get("method", "")).lower()
    name = f"ours {METHOD_NAMES.get(method, method or 'run')}"
    train = config.get("train")
    if isinstance(train, list) and len(train) > 1:
        name += " + extra data"
    if config.get("full_finetune"):
        name += " (full weights)"
    return name


def load_run(run_dir: str | os.PathLike, name: str | None = None) -> Run:
    """Read one run: its metrics.json, its config.yaml (if any) and its row name."""
    metrics_path = find_metrics(run_dir)
    metrics = _read_json(metrics_path)
    config_path = find_config(run_dir, metrics_path)
    config = _read_yaml(config_path) if config_path is not None else None
    notes: list[str] = []
    weights = _weights_folders(run_dir, metrics_path)
    if config is None:  # apa train also records task and method beside the saved weights
        record = next((w / "apa_run.json" for w in weights if (w / "apa_run.json").is_file()), None)
        if record is not None:
            config, config_path = _read_json(record), record

    task_name = metrics.get("task") or (config or {}).get("task")
    if not task_name:
        raise ApaError(f"{metrics_path}: no task recorded; is it a metrics.json written by `apa evaluate`?")
    if task_name not in TASKS:
        raise ApaError(f"{metrics_path}: unknown task {task_name!r}; choose one of: {', '.join(TASKS)}")
    task = TASKS[task_name]
    if config and config.get("task") not in (None, task_name):
        notes.append(f"config says task {config.get('task')}, the evaluation is of task {task_name} (used)")
    missing = [f"{level} {aspect}" for level, aspect in task.fields
               if not isinstance(metrics.get(level), dict) or not isinstance(metrics[level].get(aspect), dict)]
    if missing:
        raise ApaError(f"{metrics_path}: no metrics for {', '.join(missing)} of task {task_name}; "
                       "rerun `apa evaluate` for this run")

    if config is not None:
        zero_shot = _says_zero_shot(config) or _says_zero_shot(metrics)
    else:
        zero_shot = _says_zero_shot(metrics) or not weights
        notes.append("no config.yaml: " + ("taken as a zero-shot run (base model, no adapter)" if zero_shot
                                           else f"trained weights in {weights[0]}, method unknown"))
    method = None if zero_shot else (str(config.get("method")) if config and config.get("method") else None)
    return Run(path=Path(run_dir), metrics_path=metrics_path, metrics=metrics, task=task,
               name=name or default_name(config, zero_shot), zero_shot=zero_shot, method=method,
               config_path=config_path, notes=notes)


def load_runs(run_dirs: Sequence[str | os.PathLike], names: Sequence[str] | None = None) -> list[Run]:
    if names and len(names) != len(run_dirs):
        raise ApaError(f"--names gives {len(names)} names for {len(run_dirs)} run folders; give one per folder")
    return [load_run(d, names[i] if names else None) for i, d in enumerate(run_dirs)]


# --- cells -------------------------------------------------------------------------------

"""Assemble the evaluations of several runs into the paper's Tables 1-3 (`apa report`).

A *run* is a folder with an evaluation written by `apa evaluate` (``metrics.json``) and,
when it was trained with `apa train`, the ``config.yaml`` saved there. ``metrics.json`` is
looked for, in this order: RUN_DIR itself when it is a ``.json`` file; RUN_DIR/metrics.json;
RUN_DIR/eval/metrics.json; the one ``metrics.json`` anywhere below RUN_DIR (several is an
error: pass the evaluation folder you mean). ``config.yaml`` is looked for in the folder of
``metrics.json`` and each folder above it up to RUN_DIR (and RUN_DIR's parent when RUN_DIR
is itself an ``eval*`` folder).

Each run lands in the table of its task (``metrics.json["task"]``, the task evaluated):
``multi`` -> Table 1, ``word_sentence`` -> Table 2, the five single-aspect tasks -> Table 3,
where the runs that share a name (one per task) make up one row, as in the paper. Rows are
named from the config (``sft`` -> "ours FT", ``simpo`` -> "ours SimPO", ``dpo`` -> "ours
DPO"; "+ extra data" when it trains on more than one manifest) or by the caller. A run
without a config (and without an ``adapter`` folder), or whose metadata says so, was
predicted by the base model: it is named "zero-shot", and its parse rate and coverage are
given under the table. A run whose evaluation has continuous expected scores gets a second
row "NAME (expected)".

Beside our rows: the paper's rows of that table, the best published peers (GOPT, HMamba,
Azure PA; from Table 1 where the table itself lacks them) and the human agreement, all
from ``apa.reference_numbers``. Cells are "PCC / SCC"; "-" = not reported or not
evaluated, NaN = undefined (``metrics.json`` stores NaN as null, with its reason).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from apa.errors import ApaError
from apa.evaluation import _label, _num, _pair
from apa.reference_numbers import HUMAN_ROW, REFERENCE_ROWS, PaperRow
from apa.tasks import TASKS, Task

Field = tuple[str, str]

METHOD_NAMES = {"sft": "FT", "simpo": "SimPO", "dpo": "DPO"}
ZERO_SHOT = "zero-shot"
PEERS = ("GOPT", "HMamba", "Azure PA")


@dataclass(frozen=True)
class TableLayout:
    number: int
    title: str
    columns: tuple[Field, ...]
    phone_rmse: bool = False

    @property
    def tasks(self) -> list[str]:
        return [name for name, task in TASKS.items() if task.paper_table == self.number]


_S = "sentence"
TABLES: dict[int, TableLayout] = {
    1: TableLayout(1, "multi-granularity, multi-aspect",
                   (("phone", "accuracy"), ("word", "accuracy"), ("word", "stress"), ("word", "total"),
                    (_S, "accuracy"), (_S, "fluency"), (_S, "prosody"), (_S, "completeness"), (_S, "total")),
                   phone_rmse=True),
    # The paper's Table 2 has no completeness column ("correlations remain unavailable");
    # ours is given in the notes.
    2: TableLayout(2, "word and sentence level",
                   (("word", "accuracy"), ("word", "stress"), ("word", "total"),
                    (_S, "accuracy"), (_S, "fluency"), (_S, "prosody"), (_S, "total"))),
    3: TableLayout(3, "single-granularity, single-aspect, one model per column",
                   (("word", "accuracy"), (_S, "accuracy"), (_S, "fluency"), (_S, "prosody"), (_S, "total"))),
}


# --- runs --------------------------------------------------------------------------------


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


def _metric(block: Mapping[str, Any], level: str, aspect: str, key: str) -> float | None:
    """A metric of one field: None when the field was not evaluated ("-"); NaN when it was
    but the metric is undefined (metrics.json stores NaN as null)."""
    entry = (block.get(level) or {}).get(aspect) if isinstance(block.get(level), dict) else None
    if not isinstance(entry, dict):
        return None
    value = entry.get(key)
    return math.nan if value is None else float(value)


def _cells(blocks: Sequence[Mapping[str, Any]], layout: TableLayout) -> list[str]:
    """Our cells: each column from the first block that evaluated that field."""
    def owner(level: str, aspect: str) -> Mapping[str, Any] | None:
        return next((b for b in blocks if _metric(b, level, aspect, "n") is not None), None)

    cells = []
    if layout.phone_rmse:
        block = owner("phone", "accuracy")
        cells.append("-" if block is None else _num(_metric(block, "phone", "accuracy", "rmse_0_2")))
    for level, aspect in layout.columns:
        block = owner(level, aspect)
        cells.append("-" if block is None else _pair(_metric(block, level, aspect, "pcc"),
                                                     _metric(block, level, aspect, "scc")))
    return cells


def _reference_cells(row: PaperRow, layout: TableLayout) -> list[str]:
    cells = [_num(row.phone_rmse)] if layout.phone_rmse else []
    return cells + [_pair(*row.get(*f)) for f in layout.columns]


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def reference_rows(layout: TableLayout) -> list[tuple[PaperRow, str]]:
    """The published rows beside ours: peers, the paper's own rows, human agreement; each
    with a note ("" when none). A peer the table lacks comes from Table 1."""
    rows: list[tuple[PaperRow, str]] = []
    for system in PEERS:
        own = [r for r in REFERENCE_ROWS if r.table == layout.number and r.system == system]
        if own:
            rows.append((own[0], own[0].note))
            continue
        borrowed = [r for r in REFERENCE_ROWS if r.table == 1 and r.system == system]
        if borrowed and borrowed[0].covers(layout.columns):
            rows.append((borrowed[0], f"Table 1 numbers; the paper's Table {layout.number} "
                                      "does not list it"))
    rows += [(r, r.note) for r in REFERENCE_ROWS if r.table == layout.number and r.system not in PEERS]
    rows.append((HUMAN_ROW, HUMAN_ROW.note))
    return [(row, note) for row, note in rows if row.covers(layout.columns)]


# --- rows of ours ------------------------------------------------------------------------


@dataclass
class Group:
    """One row of ours: one run (Tables 1, 2) or the single-aspect runs of one name (Table 3)."""

    name: str
    runs: list[Run]

    @property
    def zero_shot(self) -> bool:
        return all(run.zero_shot for run in self.runs)

    @property
    def has_expected(self) -> bool:
        return any(run.has_expected for run in self.runs)


def group_runs(runs: Sequence[Run], layout: TableLayout) -> list[Group]:
    """Our rows of one table, in the order the runs were given."""
    groups: dict[str, Group] = {}
    for run in runs:
        if run.task.paper_table != layout.number:
            continue
        group = groups.setdefault(run.name, Group(run.name, []))
        clash = [other for other in group.runs if layout.number != 3 or other.task == run.task]
        if clash:
            what = f"task {run.task.name}" if layout.number == 3 else f"Table {layout.number}"
            raise ApaError(f"two runs named {run.name!r} for {what} ({clash[0].path}, {run.path}); "
                           "name them apart with --names")
        group.runs.append(run)
    return list(groups.values())


def _parse_note(run: Run) -> str:
    parse = run.metrics.get("parse") or {}
    refs = parse.get("references")
    text = f"{run.name} ({run.task.name}, {run.path})"
    if refs:
        matched = parse.get("matched", refs - parse.get("missing", 0))
        clean = matched - parse.get("with_problems", 0)
        text += (f": {clean} of {refs} outputs parse without problems ({clean / refs:.1%}); "
                 f"{parse.get('with_problems', 0)} with problems, {parse.get('missing', 0)} missing")
    coverage = []
    for level, aspect in run.task.fields:
        value = _metric(run.metrics, level, aspect, "coverage")
        if value is not None and not math.isnan(value) and value < 1:
            coverage.append(f"{_label(level, aspect)} {value:.1%}")
    text += ("; coverage: " + ", ".join(coverage)) if coverage else "; every field fully covered"
    return text


def _fully_covered(run: Run) -> bool:
    parse = run.metrics.get("parse") or {}
    if parse.get("with_problems") or parse.get("missing"):
        return False
    coverage = [_metric(run.metrics, level, aspect, "coverage") for level, aspect in run.task.fields]
    return all(c is None or math.isnan(c) or c >= 1 for c in coverage)


def _table_notes(groups: Sequence[Group], layout: TableLayout, refs: Sequence[tuple[PaperRow, str]]) -> list[str]:
    notes = []
    for group in groups:
        for run in group.runs:
            if run.zero_shot:
                notes.append(f"- zero-shot: {_parse_note(run)}. Few parsable outputs are expected from the "
                             "base model; the unparsable ones are filled like any missing prediction.")
            elif not _fully_covered(run):
                notes.append(f"- coverage: {_parse_note(run)}")
            for expected in (False, True) if run.has_expected else (False,):
                block = run.block(expected)
                for level, aspect in run.task.fields:
                    entry = (block.get(level) or {}).get(aspect) or {}
                    if entry.get("nan_reason"):
                        label = f"{run.name}{' (expected)' if expected else ''}, {_label(level, aspect)}"
                        notes.append(f"- {label}: NaN, {entry['nan_reason']}")
            if layout.number == 2:
                value = _metric(run.metrics, _S, "completeness", "pcc")
                if value is not None:
                    scc = _metric(run.metrics, _S, "completeness", "scc")
                    notes.append(f"- {run.name}, utt comp (not a column of the paper's Table 2): {_pair(value, scc)}")
            fill = str(run.metrics.get("fill", ""))
            if fill.startswith("reference mean"):
                notes.append(f"- {run.name} ({run.task.name}): missing predictions filled with the reference's own "
                             "mean (no training manifest given to `apa evaluate`), which flatters the numbers")
    notes += [f"- {row.system}: {note}" for row, note in refs if note]
    return notes


# --- markdown ----------------------------------------------------------------------------


def render_table(runs: Sequence[Run], layout: TableLayout) -> str | None:
    """One table (markdown, with its notes), or None when no run belongs to it."""
    groups = group_runs(runs, layout)
    if not groups:
        return None
    refs = reference_rows(layout)
    header = ["system"] + (["phone RMSE (0-2)"] if layout.phone_rmse else []) + [_label(*f) for f in layout.columns]
    lines = [_line(header), "|" + "---|" * len(header)]
    lines += [_line([row.system] + _reference_cells(row, layout)) for row, _ in refs]
    for group in groups:
        blocks = [run.metrics for run in group.runs]
        lines.append(_line([group.name] + _cells(blocks, layout)))
        if group.has_expected:
            expected = [run.metrics["expected"] for run in group.runs if run.has_expected]
            lines.append(_line([f"{group.name} (expected)"] + _cells(expected, layout)))
    tasks = ", ".join(f"`{t}`" for t in layout.tasks)
    out = [f"## Table {layout.number}: {layout.title} (task{'s' if len(layout.tasks) > 1 else ''} {tasks})", "",
           *lines]
    notes = _table_notes(groups, layout, refs)
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def render_report(runs: Sequence[Run], title: str = "Results") -> str:
    """The whole report: Tables 1-3 (those with a run of ours), then where each run came from."""
    if not runs:
        raise ApaError("no runs to report; give one or more run folders")
    tables = [text for layout in TABLES.values() if (text := render_table(runs, layout)) is not None]
    lines = [f"# {title}", "",
             "PCC / SCC on the test set, in the layouts of the paper's Tables 1-3, beside the published numbers "
             "(`apa.reference_numbers`): peers, the paper's rows, human agreement. '-' = not reported or not "
             "evaluated, NaN = undefined; phone RMSE on SO762's 0-2 scale. Missing or unparsable predictions are "
             "filled with the training-set mean of the field (headline numbers, as in `apa evaluate`).", ""]
    for text in tables:
        lines += [text, ""]
    lines += ["Runs:", ""]
    for run in runs:
        n = run.metrics.get("n_utterances")
        details = [f"task {run.task.name}"] + ([f"method {run.method}"] if run.method else []) + \
                  ([f"{n} utterances"] if n is not None else []) + \
                  ([f"config {run.config_path}"] if run.config_path else []) + run.notes
        lines.append(f"- {run.name}: {run.metrics_path} ({'; '.join(details)})")
    return "\n".join(lines) + "\n"


def build_report(run_dirs: Sequence[str | os.PathLike], names: Sequence[str] | None = None,
                 title: str = "Results") -> str:
    """Read the runs and render the report (the whole of `apa report` but the writing)."""
    return render_report(load_runs(run_dirs, names), title=title)

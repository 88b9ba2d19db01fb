"""Assemble the evaluations of several runs into the paper's Tables 1-3 (`apa report`).

A *run* is a folder with an evaluation written by `apa evaluate` (apa.evaluation.runs finds
it and its training config). Each run lands in the table of its task (``metrics.json["task"]``,
the task evaluated): ``multi`` -> Table 1, ``word_sentence`` -> Table 2, the five single-aspect tasks -> Table 3,
where the runs that share a name (one per task) make up one row, as in the paper. Rows are
named from the config (``sft`` -> "ours FT", ``simpo`` -> "ours SimPO", ``dpo`` -> "ours
DPO"; "+ extra data" when it trains on more than one manifest) or by the caller. A run
without a config (and without an ``adapter`` folder), or whose metadata says so, was
predicted by the base model: it is named "zero-shot", and its parse rate and coverage are
given under the table. A run whose evaluation has continuous expected scores gets a second
row "NAME (expected)".

Beside our rows: the paper's rows of that table, the best published peers (GOPT, HMamba,
Azure PA; from Table 1 where the table itself lacks them) and the human agreement, all
from ``apa.evaluation.reference_numbers``. Cells are "PCC / SCC"; "-" = not reported or not
evaluated, NaN = undefined (``metrics.json`` stores NaN as null, with its reason).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from apa.errors import ApaError
from apa.evaluation.markdown import field_label, format_number, format_pair
from apa.evaluation.reference_numbers import HUMAN_ROW, REFERENCE_ROWS, PaperRow
from apa.evaluation.runs import Run, load_runs
from apa.tasks import TASKS

Field = tuple[str, str]

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
        cells.append("-" if block is None else format_number(_metric(block, "phone", "accuracy", "rmse_0_2")))
    for level, aspect in layout.columns:
        block = owner(level, aspect)
        cells.append("-" if block is None else format_pair(_metric(block, level, aspect, "pcc"),
                                                     _metric(block, level, aspect, "scc")))
    return cells


def _reference_cells(row: PaperRow, layout: TableLayout) -> list[str]:
    cells = [format_number(row.phone_rmse)] if layout.phone_rmse else []
    return cells + [format_pair(*row.get(*f)) for f in layout.columns]


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
            coverage.append(f"{field_label(level, aspect)} {value:.1%}")
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
                        label = f"{run.name}{' (expected)' if expected else ''}, {field_label(level, aspect)}"
                        notes.append(f"- {label}: NaN, {entry['nan_reason']}")
            if layout.number == 2:
                value = _metric(run.metrics, _S, "completeness", "pcc")
                if value is not None:
                    scc = _metric(run.metrics, _S, "completeness", "scc")
                    notes.append(f"- {run.name}, utt comp (not a column of the paper's Table 2): {format_pair(value, scc)}")
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
    header = ["system"] + (["phone RMSE (0-2)"] if layout.phone_rmse else []) + [field_label(*f) for f in layout.columns]
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
             "(`apa.evaluation.reference_numbers`): peers, the paper's rows, human agreement. '-' = not reported or not "
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

"""metrics.md: our row beside the paper's rows (Table 1 layout), details and notes."""

from __future__ import annotations

import math
from typing import Any, Mapping

from apa.evaluation.match import Field
from apa.evaluation.reference_numbers import rows_for_task
from apa.tasks import Task


_LEVEL_LABEL = {"sentence": "utt", "word": "word", "phone": "phone"}
_ASPECT_LABEL = {"accuracy": "acc", "fluency": "flu", "prosody": "pro", "completeness": "comp",
                 "total": "total", "stress": "stress"}


def field_label(level: str, aspect: str) -> str:
    return "phone" if level == "phone" else f"{_LEVEL_LABEL[level]} {_ASPECT_LABEL[aspect]}"


def format_number(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return "NaN" if math.isnan(value) else f"{value:.{digits}f}"


def format_pair(pcc: float | None, scc: float | None, digits: int = 2) -> str:
    if pcc is None and scc is None:
        return "-"
    if pcc is not None and scc is not None and math.isnan(pcc) and math.isnan(scc):
        return "NaN"
    return f"{format_number(pcc, digits)} / {format_number(scc, digits)}"


def _table_fields(task: Task) -> list[Field]:
    # The paper's column order: phone, then word, then utterance.
    return [(level, aspect) for level in ("phone", "word", "sentence") for aspect in task.aspects(level)]


def _ours_row(name: str, block: Mapping[str, Any], fields: list[Field], suffix: str = "") -> str:
    cells = [name]
    if any(level == "phone" for level, _ in fields):
        cells.append(format_number(block["phone"]["accuracy"][f"rmse{suffix}_0_2"]))
    cells += [format_pair(block[level][aspect][f"pcc{suffix}"], block[level][aspect][f"scc{suffix}"])
              for level, aspect in fields]
    return "| " + " | ".join(cells) + " |"


def _ci(values: list[float] | None) -> str:
    if not values or any(v is None or math.isnan(v) for v in values):
        return ""
    return f" [{values[0]:.3f}, {values[1]:.3f}]"


def _details(block: Mapping[str, Any], task: Task) -> list[str]:
    lines = ["| field | n | coverage | PCC [95% CI] | SCC [95% CI] | Kendall | RMSE | "
             "PCC / SCC covered | RMSE covered | fill |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for level, aspect in task.fields:
        m = block[level][aspect]
        rmse_text, rmse_covered = format_number(m["rmse"], 3), format_number(m["rmse_covered"], 3)
        if level == "phone":
            rmse_text += f" ({format_number(m['rmse_0_2'], 3)} on 0-2)"
            rmse_covered += f" ({format_number(m['rmse_covered_0_2'], 3)} on 0-2)"
        coverage = "-" if m["coverage"] is None or math.isnan(m["coverage"]) else f"{m['coverage']:.1%}"
        fill = "-" if m["fill_value"] is None else f"{m['fill_value']:.2f} ({m['fill_source']})"
        lines.append(f"| {level} {aspect} | {m['n']} | {coverage} | {format_number(m['pcc'], 3)}{_ci(m['pcc_ci'])} | "
                     f"{format_number(m['scc'], 3)}{_ci(m['scc_ci'])} | {format_number(m['kendall'], 3)} | {rmse_text} | "
                     f"{format_pair(m['pcc_covered'], m['scc_covered'], 3)} | {rmse_covered} | {fill} |")
    return lines


def _nan_notes(block: Mapping[str, Any], task: Task, prefix: str = "") -> list[str]:
    notes = []
    for level, aspect in task.fields:
        m = block[level][aspect]
        if m["nan_reason"]:
            notes.append(f"- {prefix}{level} {aspect}: NaN, {m['nan_reason']}")
        if m["nan_reason_covered"] and m["nan_reason_covered"] != m["nan_reason"]:
            notes.append(f"- {prefix}{level} {aspect} (covered items): NaN, {m['nan_reason_covered']}")
    return notes


def render_markdown(result: Mapping[str, Any], task: Task, title: str | None = None) -> str:
    """metrics.md: our row beside the paper's rows (Table 1 layout), details and notes."""
    fields = _table_fields(task)
    has_phone = any(level == "phone" for level, _ in fields)
    header = ["system"] + (["phone RMSE (0-2)"] if has_phone else []) + [field_label(*f) for f in fields]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows_for_task(task):
        cells = [row.system]
        if has_phone:
            cells.append(format_number(row.phone_rmse))
        cells += [format_pair(*row.get(*f)) for f in fields]
        table.append("| " + " | ".join(cells) + " |")
    table.append(_ours_row("**ours**", result, fields))
    all_covered = all(result[level][aspect]["n_covered"] == result[level][aspect]["n"] for level, aspect in fields)
    if not all_covered:
        table.append(_ours_row("ours, covered items only", result, fields, "_covered"))
    if "expected" in result:
        table.append(_ours_row("ours, expected score", result["expected"], fields))

    parse = result["parse"]
    lines = [f"# {title or 'Evaluation'}: task `{task.name}`", "",
             f"PCC / SCC on {result['n_utterances']} reference utterances"
             + (f", laid out like the paper's Table {task.paper_table}" if task.paper_table else "")
             + ("; phone RMSE on SO762's 0-2 scale" if has_phone else "")
             + ". Reference rows are the published numbers (`apa.evaluation.reference_numbers`); "
             "'-' = not reported, NaN = undefined.", "", *table, ""]
    lines += ["Coverage and parsing:", "",
              f"- {parse['prediction_lines']} prediction lines for {parse['references']} reference utterances; "
              f"{parse['missing']} references without a prediction; {parse['with_problems']} outputs with "
              f"parse problems; {parse['unknown_ids']} prediction ids not in the reference (ignored).",
              "- Missing or unparsable values count against coverage; the headline numbers fill them "
              f"with the field's {result['fill']}, 'covered' numbers use predicted items only."]
    for problem in parse["top_problems"]:
        lines.append(f"  - {problem['outputs']} outputs: `{problem['problem']}` (e.g. `{problem['example']}`)")
    if "expected" in result:
        lines.append(f"- Expected scores on {parse['expected_lines']} lines; missing ones filled the same way.")
    lines += _nan_notes(result, task) + (_nan_notes(result["expected"], task, "expected: ")
                                          if "expected" in result else [])
    lines += [f"- {row.system}: {row.note}" for row in rows_for_task(task) if row.note]
    boot = result["bootstrap"]
    lines += ["", f"Details (95% intervals: {boot['method']} bootstrap over {boot['unit']}s, "
                  f"{boot['resamples']} resamples, seed {boot['seed']}):", "", *_details(result, task)]
    if "expected" in result:
        lines += ["", "Expected scores:", "", *_details(result["expected"], task)]
    return "\n".join(lines) + "\n"

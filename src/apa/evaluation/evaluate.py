"""Evaluate predicted score text against a reference manifest (METHOD.md section 6).

Predictions are JSONL, one line per utterance::

    {"id": "000010011", "output": "Sentence Scores: 8 9 9 10 8\\nWord Scores: ..."}

optionally with ``"scores"`` (an already parsed ScoreSet, see ``ScoreSet.to_dict``; used
instead of parsing ``output``), ``"problems"`` (the parser's problems for those scores, as
`apa predict` writes them; counted in the parse statistics) and ``"expected"`` (a ScoreSet of
continuous expected scores, evaluated as a second column).

Matching: each reference utterance is looked up by id; inside it, words and phones are
matched by position (``apa.targets.parse_scores`` aligns them). Sentence fields have one item
per utterance, word fields pool all words, phone fields all phones. An item without a usable
prediction is never dropped: it counts against coverage and the headline metric fills it
with the training-set mean of the field. Items without a human score are skipped.

Prediction ids that are not in the reference are ignored with a warning (recorded under
``parse``), so that predictions for a whole split can be scored against a subset of it; if
*no* prediction id is in the reference, the files do not belong together and that is an
error.

``evaluate`` returns ``{level: {aspect: metrics}}`` for the task's fields, plus ``expected``
(same shape, when any line has expected scores), ``parse`` (counts and the most common
problems), ``fill`` / ``fill_values`` and ``bootstrap`` settings.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from apa.data.manifest import Utterance
from apa.errors import ApaError
from apa.metrics import DEFAULT_CI_LEVEL, DEFAULT_RESAMPLES, DEFAULT_SEED, field_metrics
from apa.reference_numbers import rows_for_task
from apa.targets import ScoreSet, parse_scores, reference_scores
from apa.tasks import Task

# SO762 phone scores are stored x5 (0-2 -> 0-10); GOPT/HMamba report phone RMSE on 0-2.
PHONE_SCALE = 5.0
FILL_FROM_REFERENCE = "reference mean (no training manifest given)"
FILL_FROM_TRAIN = "training-set mean"
TOP_PROBLEMS = 10
EXAMPLE_IDS = 10

Field = tuple[str, str]


# --- predictions -------------------------------------------------------------------------


@dataclass
class Prediction:
    id: str
    output: str | None = None
    scores: ScoreSet | None = None
    expected: ScoreSet | None = None
    problems: list[str] | None = None  # parse problems recorded with "scores"
    where: str = ""  # "FILE:LINE" for messages

    @classmethod
    def from_record(cls, record: Any, where: str = "") -> "Prediction":
        """Build from one decoded JSON line; ValueError lists every schema problem."""
        problems = _record_problems(record)
        if problems:
            raise ValueError("; ".join(problems))
        return cls(id=record["id"], output=record.get("output"),
                   scores=ScoreSet.from_dict(record["scores"]) if record.get("scores") is not None else None,
                   expected=ScoreSet.from_dict(record["expected"]) if record.get("expected") is not None else None,
                   problems=record.get("problems"), where=where)


def _scoreset_problems(key: str, data: Any) -> list[str]:
    if data is None:
        return []
    if not isinstance(data, dict):
        return [f"{key}: expected an object like ScoreSet.to_dict(), got {type(data).__name__}"]
    problems = []
    if not isinstance(data.get("sentence") or {}, dict):
        problems.append(f"{key}.sentence: expected an object of aspect -> score")
    words = data.get("words") or []
    if not isinstance(words, list) or not all(isinstance(w, dict) for w in words):
        problems.append(f"{key}.words: expected a list of objects of aspect -> score")
    phones = data.get("phones") or []
    if not isinstance(phones, list) or not all(isinstance(p, list) for p in phones):
        problems.append(f"{key}.phones: expected a list (one per word) of lists of scores")
    return problems


def _record_problems(record: Any) -> list[str]:
    if not isinstance(record, dict):
        return [f"expected a JSON object, got {type(record).__name__}"]
    problems = []
    if not isinstance(record.get("id"), str) or not record.get("id"):
        problems.append("id: missing or not a non-empty string")
    if "output" not in record and record.get("scores") is None:
        problems.append('neither "output" nor "scores" is given')
    if record.get("output") is not None and not isinstance(record["output"], str):
        problems.append(f"output: expected text, got {type(record['output']).__name__}")
    recorded = record.get("problems")
    if recorded is not None and (not isinstance(recorded, list) or not all(isinstance(p, str) for p in recorded)):
        problems.append("problems: expected a list of strings")
    problems += _scoreset_problems("scores", record.get("scores"))
    problems += _scoreset_problems("expected", record.get("expected"))
    return problems


def read_predictions(path: str | os.PathLike) -> list[Prediction]:
    """Read a predictions JSONL file; ApaError names every bad line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ApaError(f"predictions file {path} does not exist; write it with `apa predict` "
                       "or pass the right --pred")
    predictions: list[Prediction] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{where}: not valid JSON ({e.msg} at column {e.colno})")
                continue
            try:
                prediction = Prediction.from_record(record, where)
            except ValueError as e:
                problems.append(f"{where}: {e}")
                continue
            if prediction.id in seen:
                problems.append(f"{where}: duplicate id {prediction.id!r} (first on line {seen[prediction.id]})")
                continue
            seen[prediction.id] = lineno
            predictions.append(prediction)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ApaError(
            f"{len(problems)} problem(s) in predictions file {path}:\n  {shown}{more}\n"
            'each line must be a JSON object like {"id": "...", "output": "<model text>"}; fix or '
            "delete the bad lines (a half-written last line from an interrupted `apa predict` "
            "is rewritten when it resumes)")
    if not predictions:
        raise ApaError(f"predictions file {path} holds no predictions; run `apa predict` first")
    return predictions


# --- training means ----------------------------------------------------------------------


def _mean(values: Iterable[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return float(np.mean(present)) if present else None


def train_means_from(utterances: Iterable[Utterance], task: Task) -> dict[str, dict[str, float | None]]:
    """Mean human score per (level, aspect) of ``task``, pooled like the metrics pool items
    (one per sentence, word or phone); None where the manifest has no such score."""
    sets = [reference_scores(u) for u in utterances]
    return {level: {aspect: _mean(v for s in sets for v in s.get(level, aspect)) for aspect in task.aspects(level)}
            for level in task.levels}


# --- matching ----------------------------------------------------------------------------


@dataclass
class FieldItems:
    """The items of one field, in reference order: human score, prediction, utterance index."""

    ref: list[float] = field(default_factory=list)
    pred: list[float | None] = field(default_factory=list)
    expected: list[float | None] = field(default_factory=list)
    cluster: list[int] = field(default_factory=list)


@dataclass
class Matched:
    task: Task
    fields: dict[Field, FieldItems]
    has_expected: bool
    parse: dict[str, Any]
    n_utterances: int


def _number(value: Any, what: str, problems: list[str]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        problems.append(f"{what}: {value!r} is not a number")
        return None
    return float(value)


def _aligned(scores: ScoreSet, utt: Utterance, task: Task, label: str,
             problems: list[str]) -> dict[Field, list[float | None]]:
    """Values of each task field, one per reference item, taken by position from ``scores``.

    A ScoreSet from parse_scores is aligned already; one given in the file may be short or
    long, which is a problem, and its absent positions count as missing.
    """
    if task.word and len(scores.words) != len(utt.words):
        problems.append(f"{label}: {len(scores.words)} words, reference has {len(utt.words)}")
    if task.phone:
        if len(scores.phones) != len(utt.words):
            problems.append(f"{label}: phones for {len(scores.phones)} words, reference has {len(utt.words)}")
        for i, word in enumerate(utt.words[:len(scores.phones)]):
            if len(scores.phones[i]) != len(word.phones):
                problems.append(f"{label}: word {i} ({word.text}) has {len(scores.phones[i])} phone "
                                f"scores, reference has {len(word.phones)}")
    out: dict[Field, list[float | None]] = {}
    for level, aspect in task.fields:
        if level == "sentence":
            raw = [(scores.sentence.get(aspect), f"{label} sentence {aspect}")]
        elif level == "word":
            raw = [(scores.words[i].get(aspect) if i < len(scores.words) else None,
                    f"{label} word {i} ({w.text}) {aspect}") for i, w in enumerate(utt.words)]
        else:
            raw = [(scores.phones[i][j] if i < len(scores.phones) and j < len(scores.phones[i]) else None,
                    f"{label} word {i} ({w.text}) phone {j} ({p})")
                   for i, w in enumerate(utt.words) for j, p in enumerate(w.phones)]
        out[(level, aspect)] = [_number(value, what, problems) for value, what in raw]
    return out


def _problem_pattern(problem: str) -> str:
    """A problem with its specifics blanked, so that equal kinds of problems count together."""
    # Quoted model text is blanked, quoted line headers ('Word Scores:') are kept.
    pattern = re.sub(r"'(?!\w+ Scores:')[^']*'", "'...'", problem)
    pattern = re.sub(r"\([^)]*\)", "(...)", pattern)
    return re.sub(r"\d+(\.\d+)?", "N", pattern)


def match_predictions(predictions: Iterable[Prediction | Mapping[str, Any]],
                      references: list[Utterance], task: Task) -> Matched:
    """Line predictions up with the reference items of every field of ``task``."""
    by_id: dict[str, Prediction] = {}
    for k, p in enumerate(predictions):
        where = f"prediction {k + 1}"
        if not isinstance(p, Prediction):
            try:
                p = Prediction.from_record(p, where)
            except ValueError as e:
                raise ApaError(f"{where}: {e}") from None
        if p.id in by_id:
            raise ApaError(f"{p.where or where}: duplicate prediction id {p.id!r} "
                           f"(also at {by_id[p.id].where or 'an earlier entry'}); keep one")
        by_id[p.id] = p
    ref_ids = {u.id for u in references}
    unknown = [pid for pid in by_id if pid not in ref_ids]
    if by_id and len(unknown) == len(by_id):
        raise ApaError(f"none of the {len(by_id)} prediction ids (e.g. {unknown[0]!r}) is in the reference "
                       "manifest; pass the manifest the predictions were made for (same split)")

    has_expected = any(p.expected is not None for p in by_id.values())
    fields = {f: FieldItems() for f in task.fields}
    problem_kinds: Counter[str] = Counter()
    problem_example: dict[str, str] = {}
    missing: list[str] = []
    n_problems = n_from_scores = n_expected = n_expected_problems = 0
    for u_index, utt in enumerate(references):
        pred = by_id.get(utt.id)
        pred_values: dict[Field, list[float | None]] | None = None
        expected_values: dict[Field, list[float | None]] | None = None
        if pred is None:
            missing.append(utt.id)
        else:
            problems: list[str] = []
            if pred.scores is not None:
                n_from_scores += 1
                problems += pred.problems or []
                pred_values = _aligned(pred.scores, utt, task, "scores", problems)
            else:
                parsed = parse_scores(pred.output, utt, task)
                problems += parsed.problems
                pred_values = _aligned(parsed.scores, utt, task, "output", problems)
            if problems:
                n_problems += 1
                for problem in problems:
                    kind = _problem_pattern(problem)
                    # Count outputs, not occurrences: one long garbled answer should not
                    # outweigh many short ones.
                    if kind not in problem_example:
                        problem_example[kind] = f"{utt.id}: {problem}"
                for kind in {_problem_pattern(p) for p in problems}:
                    problem_kinds[kind] += 1
            if pred.expected is not None:
                n_expected += 1
                expected_problems: list[str] = []
                expected_values = _aligned(pred.expected, utt, task, "expected", expected_problems)
                n_expected_problems += bool(expected_problems)

        ref = reference_scores(utt)
        for f, items in fields.items():
            ref_values = ref.get(*f)
            for k, ref_value in enumerate(ref_values):
                if ref_value is None:  # no human score for this item: nothing to compare
                    continue
                items.ref.append(float(ref_value))
                items.pred.append(pred_values[f][k] if pred_values else None)
                items.expected.append(expected_values[f][k] if expected_values else None)
                items.cluster.append(u_index)

    parse = {
        "prediction_lines": len(by_id),
        "references": len(references),
        "matched": len(references) - len(missing),
        "missing": len(missing),
        "missing_examples": missing[:EXAMPLE_IDS],
        "with_problems": n_problems,
        "from_scores": n_from_scores,
        "unknown_ids": len(unknown),
        "unknown_id_examples": unknown[:EXAMPLE_IDS],
        "top_problems": [{"problem": kind, "outputs": count, "example": problem_example[kind]}
                         for kind, count in problem_kinds.most_common(TOP_PROBLEMS)],
    }
    if has_expected:
        parse["expected_lines"] = n_expected
        parse["expected_with_problems"] = n_expected_problems
    return Matched(task=task, fields=fields, has_expected=has_expected, parse=parse,
                   n_utterances=len(references))


# --- metrics -----------------------------------------------------------------------------


def _field_result(items: FieldItems, values: list[float | None], level: str, fill: float | None,
                  fill_source: str, n_bootstrap: int, seed: int) -> dict[str, Any]:
    result = field_metrics(values, items.ref, clusters=items.cluster, fill_value=fill,
                           n_bootstrap=n_bootstrap, seed=seed)
    result["fill_source"] = fill_source
    if level == "phone":
        result["rmse_0_2"] = result["rmse"] / PHONE_SCALE
        result["rmse_covered_0_2"] = result["rmse_covered"] / PHONE_SCALE
    return result


def fill_values_for(matched: Matched, train_means: Mapping[str, Mapping[str, float | None]] | None
                    ) -> dict[Field, tuple[float | None, str]]:
    """The fill value of each field and where it came from ("train" or "reference")."""
    out = {}
    for (level, aspect), items in matched.fields.items():
        mean = (train_means or {}).get(level, {}).get(aspect)
        if mean is not None:
            out[(level, aspect)] = (float(mean), "train")
        else:  # no training manifest, or it lacks this field (e.g. no phone labels)
            out[(level, aspect)] = (_mean(items.ref), "reference")
    return out


def metrics_from_matched(matched: Matched, train_means: Mapping[str, Mapping[str, float | None]] | None,
                         n_bootstrap: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    task = matched.task
    fills = fill_values_for(matched, train_means)
    result: dict[str, Any] = {
        "task": task.name,
        "n_utterances": matched.n_utterances,
        "fill": FILL_FROM_TRAIN if train_means is not None else FILL_FROM_REFERENCE,
    }
    expected: dict[str, Any] = {}
    columns = [("pred", result)] + ([("expected", expected)] if matched.has_expected else [])
    for source, target in columns:
        for (level, aspect), items in matched.fields.items():
            fill, fill_source = fills[(level, aspect)]
            values = items.pred if source == "pred" else items.expected
            target.setdefault(level, {})[aspect] = _field_result(items, values, level, fill, fill_source,
                                                                 n_bootstrap, seed)
    if matched.has_expected:
        result["expected"] = expected
    result["parse"] = matched.parse
    result["fill_values"] = {level: {aspect: fills[(level, aspect)][0] for aspect in task.aspects(level)}
                             for level in task.levels}
    result["bootstrap"] = {"resamples": n_bootstrap, "seed": seed, "level": DEFAULT_CI_LEVEL,
                           "unit": "utterance", "method": "percentile"}
    return result


def evaluate(predictions: Iterable[Prediction | Mapping[str, Any]], references: list[Utterance], task: Task,
             train_means: Mapping[str, Mapping[str, float | None]] | None,
             n_bootstrap: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Metrics of ``predictions`` against ``references`` for every field of ``task``.

    ``predictions``: Prediction objects or their JSON records. ``train_means``: from
    ``train_means_from`` on the training manifest; None fills with the reference's own means
    (recorded in ``result["fill"]``). Returns ``{level: {aspect: metrics}}`` plus the extra
    keys described in the module docstring; NaN marks undefined metrics (see ``json_safe``).
    """
    matched = match_predictions(predictions, references, task)
    return metrics_from_matched(matched, train_means, n_bootstrap=n_bootstrap, seed=seed)


# --- markdown ----------------------------------------------------------------------------

_LEVEL_LABEL = {"sentence": "utt", "word": "word", "phone": "phone"}
_ASPECT_LABEL = {"accuracy": "acc", "fluency": "flu", "prosody": "pro", "completeness": "comp",
                 "total": "total", "stress": "stress"}


def _label(level: str, aspect: str) -> str:
    return "phone" if level == "phone" else f"{_LEVEL_LABEL[level]} {_ASPECT_LABEL[aspect]}"


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return "NaN" if math.isnan(value) else f"{value:.{digits}f}"


def _pair(pcc: float | None, scc: float | None, digits: int = 2) -> str:
    if pcc is None and scc is None:
        return "-"
    if pcc is not None and scc is not None and math.isnan(pcc) and math.isnan(scc):
        return "NaN"
    return f"{_num(pcc, digits)} / {_num(scc, digits)}"


def _table_fields(task: Task) -> list[Field]:
    # The paper's column order: phone, then word, then utterance.
    return [(level, aspect) for level in ("phone", "word", "sentence") for aspect in task.aspects(level)]


def _ours_row(name: str, block: Mapping[str, Any], fields: list[Field], suffix: str = "") -> str:
    cells = [name]
    if any(level == "phone" for level, _ in fields):
        cells.append(_num(block["phone"]["accuracy"][f"rmse{suffix}_0_2"]))
    cells += [_pair(block[level][aspect][f"pcc{suffix}"], block[level][aspect][f"scc{suffix}"])
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
        rmse_text, rmse_covered = _num(m["rmse"], 3), _num(m["rmse_covered"], 3)
        if level == "phone":
            rmse_text += f" ({_num(m['rmse_0_2'], 3)} on 0-2)"
            rmse_covered += f" ({_num(m['rmse_covered_0_2'], 3)} on 0-2)"
        coverage = "-" if m["coverage"] is None or math.isnan(m["coverage"]) else f"{m['coverage']:.1%}"
        fill = "-" if m["fill_value"] is None else f"{m['fill_value']:.2f} ({m['fill_source']})"
        lines.append(f"| {level} {aspect} | {m['n']} | {coverage} | {_num(m['pcc'], 3)}{_ci(m['pcc_ci'])} | "
                     f"{_num(m['scc'], 3)}{_ci(m['scc_ci'])} | {_num(m['kendall'], 3)} | {rmse_text} | "
                     f"{_pair(m['pcc_covered'], m['scc_covered'], 3)} | {rmse_covered} | {fill} |")
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
    header = ["system"] + (["phone RMSE (0-2)"] if has_phone else []) + [_label(*f) for f in fields]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows_for_task(task):
        cells = [row.system]
        if has_phone:
            cells.append(_num(row.phone_rmse))
        cells += [_pair(*row.get(*f)) for f in fields]
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
             + ". Reference rows are the published numbers (`apa.reference_numbers`); "
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


# --- plots -------------------------------------------------------------------------------


def write_plots(matched: Matched, result: Mapping[str, Any], out_dir: str | os.PathLike,
                seed: int = DEFAULT_SEED) -> list[Path]:
    """One scatter plot (predicted vs human) per field, plus one per field of expected scores.

    Scores are mostly integers, so thousands of points would sit on a few dozen spots: a
    small uniform jitter (display only) shows how many fall where. Filled (missing) items
    are drawn apart, since they sit on one horizontal line at the fill value.
    """
    # Lazily, and through the Agg canvas directly: no pyplot state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    columns = [("", result, "pred")] + ([("expected_", result["expected"], "expected")]
                                        if "expected" in result else [])
    for prefix, block, source in columns:
        for (level, aspect), items in matched.fields.items():
            m = block[level][aspect]
            ref = np.asarray(items.ref, dtype=float)
            values = items.pred if source == "pred" else items.expected
            pred = np.array([math.nan if v is None else v for v in values], dtype=float)
            present = ~np.isnan(pred)
            fig = Figure(figsize=(5, 5), dpi=100)
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            size = float(np.clip(3000 / max(len(ref), 1), 1, 20))
            jx = ref + rng.uniform(-0.2, 0.2, len(ref))
            jy = np.where(present, pred, m["fill_value"] if m["fill_value"] is not None else math.nan)
            jitter_y = source == "pred"  # expected scores are continuous already
            if jitter_y:
                jy = jy + rng.uniform(-0.2, 0.2, len(ref))
            ax.scatter(jx[present], jy[present], s=size, alpha=0.35, color="tab:blue", linewidths=0,
                       label=f"{'predicted' if source == 'pred' else 'expected'} ({int(present.sum())})")
            if (~present).any():
                ax.scatter(jx[~present], jy[~present], s=size, alpha=0.5, color="tab:red", marker="x",
                           label=f"missing, filled ({int((~present).sum())})")
            ax.plot([0, 10], [0, 10], color="grey", linewidth=0.8, linestyle="--")
            ax.set_xlim(-0.5, 10.5)
            ax.set_ylim(-0.5, 10.5)
            ax.set_xlabel("human score (jittered)")
            ax.set_ylabel("predicted score (jittered)" if jitter_y else "expected score")
            ax.set_title(f"{prefix.replace('_', ' ')}{level} {aspect} (n={m['n']}): "
                         f"PCC {_num(m['pcc'])} / SCC {_num(m['scc'])}", fontsize=10)
            ax.legend(loc="upper left", fontsize=8)
            path = out_dir / f"{prefix}{level}_{aspect}.png"
            fig.savefig(path)
            written.append(path)
    return written

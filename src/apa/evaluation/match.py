"""Predictions lined up with the reference items of every field of a task (apa evaluate).

Each reference utterance is looked up by id; inside it, words and phones are matched by
position (``apa.targets.parse_scores`` aligns them). Sentence fields have one item per
utterance, word fields pool all words, phone fields all phones. An item without a usable
prediction is never dropped: it is kept as missing, to count against coverage and be
filled (apa.evaluation.evaluate). Items without a human score are skipped.

Prediction ids that are not in the reference are ignored with a warning (recorded under
``parse``), so that predictions for a whole split can be scored against a subset of it; if
*no* prediction id is in the reference, the files do not belong together and that is an
error.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from apa.data.manifest import Utterance
from apa.errors import ApaError
from apa.predictions import Prediction
from apa.targets import ScoreSet, parse_scores, reference_scores
from apa.tasks import Task

TOP_PROBLEMS = 10
EXAMPLE_IDS = 10

Field = tuple[str, str]


def mean_of(values: Iterable[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return float(np.mean(present)) if present else None


def train_means_from(utterances: Iterable[Utterance], task: Task) -> dict[str, dict[str, float | None]]:
    """Mean human score per (level, aspect) of ``task``, pooled like the metrics pool items
    (one per sentence, word or phone); None where the manifest has no such score."""
    sets = [reference_scores(u) for u in utterances]
    return {level: {aspect: mean_of(v for s in sets for v in s.get(level, aspect)) for aspect in task.aspects(level)}
            for level in task.levels}


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

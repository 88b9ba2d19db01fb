"""Rows of the real-data proof that need no model: a constant predictor, the clip's duration
alone, and the experts' agreement with each other."""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from apa.data.manifest import Utterance
from apa.errors import ApaError
from apa.experiments.proxy.controls import clip_seconds

# experts.json key of each (level, aspect).
EXPERT_KEYS = {
    ("sentence", "accuracy"): "accuracy_experts",
    ("sentence", "fluency"): "fluency_experts",
    ("sentence", "prosody"): "prosodic_experts",
    ("sentence", "completeness"): "completeness_experts",
    ("sentence", "total"): "total_experts",
    ("word", "accuracy"): "accuracy_experts",
    ("word", "stress"): "stress_experts",
    ("word", "total"): "total_experts",
}


def constant_predictions(utts: Sequence[Utterance], means: dict, task) -> list[dict]:
    """Prediction records that give every item of every field the training-set mean."""
    from apa.targets import ScoreSet

    records = []
    for utt in utts:
        scores = ScoreSet(sentence={a: means["sentence"][a] for a in task.sentence},
                          words=[{a: means["word"][a] for a in task.word} if task.word else {} for _ in utt.words],
                          phones=[[means["phone"]["accuracy"]] * len(w.phones) if task.phone else []
                                  for w in utt.words])
        records.append({"id": utt.id, "scores": scores.to_dict(), "problems": []})
    return records


def duration_row(references: Sequence[Utterance], task) -> dict:
    """PCC/SCC of minus the clip's duration against every field (a word gets its utterance's):
    how far the length of the recording alone goes, without any model."""
    from apa.evaluation.metrics import pearson, spearman
    from apa.targets import reference_scores

    block: dict = {}
    for level, aspect in task.fields:
        x, y = [], []
        for utt in references:
            for value in reference_scores(utt).get(level, aspect):
                if value is not None:
                    x.append(-clip_seconds(utt))
                    y.append(float(value))
        block.setdefault(level, {})[aspect] = {"pcc": pearson(x, y), "scc": spearman(x, y), "rmse": None,
                                               "coverage": None}
    return block


def expert_matrix(data: dict, ids: Iterable[str], level: str, aspect: str) -> tuple[np.ndarray, int]:
    """[items, experts] scores of one field over ``ids`` (sentence: one item per utterance, word:
    all their words), and how many items were left out for lacking a full set of experts."""
    key = EXPERT_KEYS[(level, aspect)]
    rows, dropped = [], 0
    for utt_id in ids:
        entry = data[utt_id]
        items = [entry] if level == "sentence" else entry.get("words", [])
        for item in items:
            values = item.get(key)
            if not isinstance(values, list) or not values or any(v is None for v in values):
                dropped += 1
                continue
            rows.append([float(v) for v in values])
    if not rows:
        return np.zeros((0, 0)), dropped
    n_experts = max(set(len(r) for r in rows), key=[len(r) for r in rows].count)
    kept = [r for r in rows if len(r) == n_experts]
    return np.asarray(kept, dtype=float), dropped + len(rows) - len(kept)


def one_against_rest(scores: np.ndarray) -> list[tuple[float, float]]:
    """(PCC, SCC) of each expert (column) against the mean of the other experts."""
    from apa.evaluation.metrics import pearson, spearman

    n = scores.shape[1]
    out = []
    for k in range(n):
        others = np.delete(scores, k, axis=1).mean(axis=1)
        out.append((pearson(scores[:, k], others), spearman(scores[:, k], others)))
    return out


def _defined_mean(values: list[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan


def human_agreement(data: dict, ids: Sequence[str], task) -> dict:
    """{level: {aspect: {pcc, scc, pcc_experts, scc_experts, n, dropped}}} on the items of ``ids``.

    ``pcc_experts[k]``: expert k against the mean of the others; ``pcc``: the mean over the
    experts whose correlation is defined (an expert who gives one value throughout has none)."""
    missing = [i for i in ids if i not in data]
    if missing:
        raise ApaError(f"experts.json has no entry for {len(missing)} utterance(s) (e.g. {missing[0]}); "
                       "is it the experts file of this corpus?")
    result: dict[str, dict] = {}
    for level, aspect in task.fields:
        if (level, aspect) not in EXPERT_KEYS:
            continue
        matrix, dropped = expert_matrix(data, ids, level, aspect)
        pairs = one_against_rest(matrix) if matrix.size and matrix.shape[1] >= 2 else []
        pccs = [p for p, _ in pairs]
        sccs = [s for _, s in pairs]
        result.setdefault(level, {})[aspect] = {
            "pcc": _defined_mean(pccs), "scc": _defined_mean(sccs),
            "pcc_experts": pccs, "scc_experts": sccs, "n": int(matrix.shape[0]), "dropped": dropped}
    return result

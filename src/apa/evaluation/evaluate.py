"""Metrics of predictions against a reference manifest, field by field (`apa evaluate`).

``evaluate`` returns ``{level: {aspect: metrics}}`` for the task's fields, plus ``expected``
(same shape, when any prediction has expected scores), ``parse`` (counts and the most
common problems), ``fill`` / ``fill_values`` and ``bootstrap`` settings. A missing or
unparsable value counts against coverage; the headline metric fills it with the
training-set mean of the field (the reference's own mean when no training manifest is
given, which flatters the numbers and is said so).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from apa.data.manifest import Utterance
from apa.evaluation.match import Field, FieldItems, Matched, match_predictions, mean_of
from apa.evaluation.metrics import DEFAULT_CI_LEVEL, DEFAULT_RESAMPLES, DEFAULT_SEED, field_metrics
from apa.predictions import Prediction
from apa.tasks import Task

# SO762 phone scores are stored x5 (0-2 -> 0-10); GOPT/HMamba report phone RMSE on 0-2.
PHONE_SCALE = 5.0
FILL_FROM_REFERENCE = "reference mean (no training manifest given)"
FILL_FROM_TRAIN = "training-set mean"


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
            out[(level, aspect)] = (mean_of(items.ref), "reference")
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

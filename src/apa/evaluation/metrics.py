"""Agreement metrics between predicted and human scores (docs/method.md, Evaluation); no torch.

Every function takes plain sequences or numpy arrays. ``field_metrics`` is what evaluation
reports for one (level, aspect) field: PCC, SCC, Kendall's tau and RMSE over all items (missing
predictions filled with a given value, the training-set mean), the same over the covered items
only, coverage, and cluster-bootstrap 95% intervals for PCC and SCC.

A correlation is undefined when either side has zero variance (SO762's completeness: almost
every test utterance is a 10). Such a metric is NaN and comes with a ``nan_reason``;
``json_safe`` turns NaN into JSON null so that the reason travels with it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import stats

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
DEFAULT_CI_LEVEL = 0.95


def _arrays(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two 1-D sequences of equal length, got shapes {x.shape} and {y.shape}")
    return x, y


def _constant(x: np.ndarray) -> bool:
    # Exact comparison on purpose: stored scores have 4 decimals, so "all equal" is exact.
    return len(x) > 0 and bool(np.all(x == x[0]))


def _correlation_defined(x: np.ndarray, y: np.ndarray) -> bool:
    return len(x) >= 2 and not _constant(x) and not _constant(y)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when fewer than 2 items or either side is constant."""
    x, y = _arrays(x, y)
    if not _correlation_defined(x, y):
        return math.nan
    return float(stats.pearsonr(x, y).statistic)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN as for ``pearson``."""
    x, y = _arrays(x, y)
    if not _correlation_defined(x, y):
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (accounts for the many ties of integer scores); NaN as for ``pearson``."""
    x, y = _arrays(x, y)
    if not _correlation_defined(x, y):
        return math.nan
    return float(stats.kendalltau(x, y).statistic)


def rmse(x: Sequence[float], y: Sequence[float]) -> float:
    """Root mean squared difference; NaN for no items."""
    x, y = _arrays(x, y)
    if len(x) == 0:
        return math.nan
    return float(np.sqrt(np.mean((x - y) ** 2)))


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def nan_reason(pred: Sequence[float], ref: Sequence[float]) -> str | None:
    """Why a correlation between ``pred`` and ``ref`` is undefined, or None when it is defined."""
    pred, ref = _arrays(pred, ref)
    if len(ref) == 0:
        return "no items with a reference score"
    if len(ref) < 2:
        return f"fewer than 2 items (n={len(ref)})"
    reasons = []
    if _constant(ref):
        reasons.append(f"reference scores have zero variance (all {_fmt(ref[0])})")
    if _constant(pred):
        reasons.append(f"predictions have zero variance (all {_fmt(pred[0])})")
    return "; ".join(reasons) or None


# --- cluster bootstrap -------------------------------------------------------------------
#
# Words and phones of one utterance share a speaker and a recording, so they are not
# independent items: resampling them one by one would give intervals that are too narrow.
# We resample utterances (clusters) with replacement and take all of their items along.
#
# A resample is represented by integer weights (how many times each item occurs in it)
# instead of an expanded copy: weighted Pearson equals Pearson of the expanded sample, and
# weighted average ranks equal the ranks of the expanded sample, so both statistics cost a
# few bincounts per resample even for ~47,000 pooled phones.


def weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    total = w.sum()
    dx = x - (w @ x) / total
    dy = y - (w @ y) / total
    denom = math.sqrt(float((w @ (dx * dx)) * (w @ (dy * dy))))
    return float((w @ (dx * dy)) / denom) if denom > 0 else math.nan


def _weighted_ranks(codes: np.ndarray, n_values: int, w: np.ndarray) -> np.ndarray:
    """Average (tie-aware) ranks each item would have in the sample that repeats item i w[i] times.

    ``codes`` are the items' indices into their sorted unique values. The items of value v
    occupy ranks (count below v) + 1 ... (count below v) + (count of v); their average rank is
    (count below v) + (count of v + 1) / 2.
    """
    per_value = np.bincount(codes, weights=w, minlength=n_values)
    below = np.cumsum(per_value) - per_value
    return (below + (per_value + 1) / 2)[codes]


def cluster_bootstrap(
    pred: Sequence[float],
    ref: Sequence[float],
    clusters: Sequence[Any] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_CI_LEVEL,
) -> dict[str, Any]:
    """Percentile bootstrap intervals for PCC and SCC, resampling whole clusters.

    ``clusters`` gives each item's cluster (e.g. its utterance); None makes every item its
    own cluster. Each resample draws ``n_clusters`` cluster indices with
    ``numpy.random.default_rng(seed).integers(0, n_clusters, n_clusters)`` (clusters numbered
    in order of first appearance) and takes every item of every drawn cluster, as often as it
    was drawn. Resamples in which a correlation is undefined (a constant side) are skipped;
    their count is returned as ``nan_resamples``.
    """
    pred, ref = _arrays(pred, ref)
    nan_pair = [math.nan, math.nan]
    out: dict[str, Any] = {"pcc_ci": nan_pair, "scc_ci": list(nan_pair), "nan_resamples": 0}
    if n_resamples <= 0 or not _correlation_defined(pred, ref):
        return out
    if clusters is None:
        cluster_codes = np.arange(len(pred))
    else:
        if len(clusters) != len(pred):
            raise ValueError(f"{len(clusters)} cluster labels for {len(pred)} items")
        # Number clusters in order of first appearance, so the draws do not depend on how
        # the labels sort.
        _, first, inverse = np.unique(np.asarray(clusters), return_index=True, return_inverse=True)
        cluster_codes = np.argsort(np.argsort(first))[inverse]
    n_clusters = int(cluster_codes.max()) + 1

    pred_values, pred_codes = np.unique(pred, return_inverse=True)
    ref_values, ref_codes = np.unique(ref, return_inverse=True)
    rng = np.random.default_rng(seed)
    pccs = np.full(n_resamples, math.nan)
    sccs = np.full(n_resamples, math.nan)
    for b in range(n_resamples):
        drawn = rng.integers(0, n_clusters, n_clusters)
        w = np.bincount(drawn, minlength=n_clusters)[cluster_codes].astype(float)
        # Undefined when all items that made it into the resample share one value on a side.
        if (np.count_nonzero(np.bincount(pred_codes, weights=w, minlength=len(pred_values))) < 2
                or np.count_nonzero(np.bincount(ref_codes, weights=w, minlength=len(ref_values))) < 2):
            continue
        pccs[b] = weighted_pearson(pred, ref, w)
        sccs[b] = weighted_pearson(_weighted_ranks(pred_codes, len(pred_values), w),
                                    _weighted_ranks(ref_codes, len(ref_values), w), w)
    n_nan = int(np.isnan(pccs).sum())
    out["nan_resamples"] = n_nan
    if n_nan < n_resamples:
        tail = (1 - level) / 2 * 100
        out["pcc_ci"] = [float(v) for v in np.nanpercentile(pccs, [tail, 100 - tail])]
        out["scc_ci"] = [float(v) for v in np.nanpercentile(sccs, [tail, 100 - tail])]
    return out


# --- one field ---------------------------------------------------------------------------


def _missing_mask(pred: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """Predictions as floats (NaN where missing) and a mask of the present ones."""
    values = np.array([math.nan if p is None else float(p) for p in pred], dtype=float)
    return values, ~np.isnan(values)


def _basic(pred: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    return {"pcc": pearson(pred, ref), "scc": spearman(pred, ref), "kendall": kendall(pred, ref),
            "rmse": rmse(pred, ref), "nan_reason": nan_reason(pred, ref)}


def field_metrics(
    pred: Sequence[float | None],
    ref: Sequence[float],
    clusters: Sequence[Any] | None = None,
    fill_value: float | None = None,
    n_bootstrap: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    ci_level: float = DEFAULT_CI_LEVEL,
) -> dict[str, Any]:
    """All metrics of one field: predictions ``pred`` (None or NaN = missing) vs ``ref``.

    Headline numbers (pcc, scc, kendall, rmse, pcc_ci, scc_ci) use every item, missing
    predictions replaced by ``fill_value``: a model that fails to answer must not look
    better by having its hard items dropped. ``*_covered`` use only items with a prediction.
    ``ref`` must be complete (drop items without a human score before calling).
    """
    values, present = _missing_mask(pred)
    ref_arr = np.asarray(ref, dtype=float)
    if ref_arr.shape != values.shape:
        raise ValueError(f"{len(values)} predictions for {len(ref_arr)} reference scores")
    if np.isnan(ref_arr).any():
        raise ValueError("reference scores contain missing values; drop those items first")
    n, n_covered = len(values), int(present.sum())
    if n_covered < n and fill_value is None:
        raise ValueError(f"{n - n_covered} of {n} predictions are missing and no fill_value was given")
    filled = np.where(present, values, fill_value if fill_value is not None else math.nan)

    out: dict[str, Any] = {"n": n, "n_covered": n_covered,
                           "coverage": n_covered / n if n else math.nan,
                           "fill_value": fill_value}
    out.update(_basic(filled, ref_arr))
    if n and n_covered == 0:
        out["nan_reason"] = f"no item has a prediction (all {n} filled with {_fmt(fill_value)})"
    boot = cluster_bootstrap(filled, ref_arr, clusters, n_resamples=n_bootstrap, seed=seed, level=ci_level)
    out["pcc_ci"], out["scc_ci"] = boot["pcc_ci"], boot["scc_ci"]
    out["ci_nan_resamples"] = boot["nan_resamples"]
    covered = _basic(values[present], ref_arr[present])
    if n and n_covered == 0:
        covered["nan_reason"] = "no item has a prediction"
    out.update({f"{key}_covered": value for key, value in covered.items()})
    return out


def json_safe(obj: Any) -> Any:
    """A copy fit for ``json.dumps(..., allow_nan=False)``: NaN/inf -> None, numpy -> Python."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj

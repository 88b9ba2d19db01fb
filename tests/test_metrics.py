"""apa.evaluation.metrics against independent hand-written computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from apa.evaluation import metrics


# --- independent reference implementations (numpy only, no scipy) --------------------------

def average_ranks(x):
    """1-based ranks; tied values share the mean of the ranks they occupy."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def hand_pcc(x, y):
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx, dy = x - x.mean(), y - y.mean()
    return float((dx * dy).sum() / math.sqrt((dx * dx).sum() * (dy * dy).sum()))


def hand_scc(x, y):
    return hand_pcc(average_ranks(x), average_ranks(y))


def hand_rmse(x, y):
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(x, y)) / len(x))


@pytest.fixture
def scores():
    rng = np.random.default_rng(7)
    ref = rng.integers(0, 11, 300).astype(float)
    pred = np.clip(ref + rng.integers(-3, 4, 300), 0, 10)  # integer ties everywhere
    return pred, ref


def test_average_ranks_helper():
    assert average_ranks([10, 20, 10, 30]).tolist() == [1.5, 3, 1.5, 4]


def test_correlations_match_hand_computation(scores):
    pred, ref = scores
    assert metrics.pearson(pred, ref) == pytest.approx(hand_pcc(pred, ref), abs=1e-9)
    assert metrics.spearman(pred, ref) == pytest.approx(hand_scc(pred, ref), abs=1e-9)
    assert metrics.rmse(pred, ref) == pytest.approx(hand_rmse(pred, ref), abs=1e-9)
    # Kendall tau-b by brute force over all pairs.
    n = len(pred)
    i, j = np.triu_indices(n, 1)
    sx, sy = np.sign(pred[i] - pred[j]), np.sign(ref[i] - ref[j])
    tau_b = (sx * sy).sum() / math.sqrt((sx != 0).sum() * (sy != 0).sum())
    assert metrics.kendall(pred, ref) == pytest.approx(tau_b, abs=1e-9)


def test_constant_reference_gives_nan_with_reason():
    result = metrics.field_metrics([7, 8, 9, 10], [10, 10, 10, 10], n_bootstrap=20)
    assert math.isnan(result["pcc"]) and math.isnan(result["scc"]) and math.isnan(result["kendall"])
    assert result["nan_reason"] == "reference scores have zero variance (all 10)"
    assert result["rmse"] == pytest.approx(hand_rmse([7, 8, 9, 10], [10] * 4))
    assert all(math.isnan(v) for v in result["pcc_ci"])


def test_constant_predictions_give_nan_with_reason():
    result = metrics.field_metrics([9, 9, 9], [1, 5, 10], n_bootstrap=0)
    assert math.isnan(result["pcc"])
    assert result["nan_reason"] == "predictions have zero variance (all 9)"


def test_too_few_items():
    assert metrics.field_metrics([1], [2], n_bootstrap=0)["nan_reason"] == "fewer than 2 items (n=1)"
    empty = metrics.field_metrics([], [], n_bootstrap=0)
    assert empty["n"] == 0 and empty["nan_reason"] == "no items with a reference score"


def test_missing_predictions_are_filled_and_counted(scores):
    pred, ref = scores
    with_missing = [None if k % 4 == 0 else p for k, p in enumerate(pred)]
    result = metrics.field_metrics(with_missing, ref, fill_value=6.5, n_bootstrap=0)
    filled = [6.5 if p is None else p for p in with_missing]
    present = [k for k, p in enumerate(with_missing) if p is not None]
    assert result["n"] == 300 and result["n_covered"] == 225
    assert result["coverage"] == pytest.approx(0.75)
    assert result["pcc"] == pytest.approx(hand_pcc(filled, ref), abs=1e-9)
    assert result["scc"] == pytest.approx(hand_scc(filled, ref), abs=1e-9)
    assert result["rmse"] == pytest.approx(hand_rmse(filled, ref), abs=1e-9)
    assert result["pcc_covered"] == pytest.approx(hand_pcc(pred[present], ref[present]), abs=1e-9)
    assert result["scc_covered"] == pytest.approx(hand_scc(pred[present], ref[present]), abs=1e-9)
    assert result["rmse_covered"] == pytest.approx(hand_rmse(pred[present], ref[present]), abs=1e-9)


def test_missing_without_fill_value_is_an_error():
    with pytest.raises(ValueError, match="fill_value"):
        metrics.field_metrics([1, None, 3], [1, 2, 3])


def test_all_missing_says_so():
    result = metrics.field_metrics([None, None], [1, 2], fill_value=1.5, n_bootstrap=0)
    assert result["coverage"] == 0
    assert "no item has a prediction" in result["nan_reason"]
    assert result["nan_reason_covered"] == "no item has a prediction"


def naive_cluster_bootstrap(pred, ref, clusters, n_resamples, seed):
    """The documented protocol, written out with expanded copies and scipy."""
    labels = list(dict.fromkeys(clusters))  # order of first appearance
    members = [[k for k, c in enumerate(clusters) if c == label] for label in labels]
    rng = np.random.default_rng(seed)
    pccs, sccs = [], []
    for _ in range(n_resamples):
        drawn = rng.integers(0, len(labels), len(labels))
        idx = [k for c in drawn for k in members[c]]
        p, r = pred[idx], ref[idx]
        if len(set(p)) < 2 or len(set(r)) < 2:
            pccs.append(math.nan)
            sccs.append(math.nan)
            continue
        pccs.append(stats.pearsonr(p, r).statistic)
        sccs.append(stats.spearmanr(p, r).statistic)
    return np.nanpercentile(pccs, [2.5, 97.5]), np.nanpercentile(sccs, [2.5, 97.5])


def test_cluster_bootstrap_matches_naive_resampling(scores):
    pred, ref = scores
    # Uneven cluster sizes, labels not in sorted order.
    clusters = [f"u{(k * 7) % 23:02d}" if k < 200 else "big" for k in range(300)]
    got = metrics.cluster_bootstrap(pred, ref, clusters, n_resamples=60, seed=3)
    pcc_ci, scc_ci = naive_cluster_bootstrap(pred, ref, clusters, 60, 3)
    np.testing.assert_allclose(got["pcc_ci"], pcc_ci, atol=1e-9)
    np.testing.assert_allclose(got["scc_ci"], scc_ci, atol=1e-9)


def test_bootstrap_is_seeded_and_brackets_the_estimate(scores):
    pred, ref = scores
    clusters = np.arange(300) // 10
    a = metrics.field_metrics(pred, ref, clusters=clusters, n_bootstrap=200, seed=1)
    b = metrics.field_metrics(pred, ref, clusters=clusters, n_bootstrap=200, seed=1)
    assert a["pcc_ci"] == b["pcc_ci"] and a["scc_ci"] == b["scc_ci"]
    assert a["pcc_ci"][0] < a["pcc"] < a["pcc_ci"][1]
    assert a["scc_ci"][0] < a["scc"] < a["scc_ci"][1]


def test_cluster_bootstrap_is_wider_for_correlated_items():
    # Each utterance's items are copies of one value pair: item-level resampling would
    # pretend to have 20x more evidence than there is.
    rng = np.random.default_rng(0)
    ref = rng.normal(size=30)
    pred = ref + rng.normal(size=30)
    pred_rep, ref_rep = np.repeat(pred, 20), np.repeat(ref, 20)
    clusters = np.repeat(np.arange(30), 20)
    by_cluster = metrics.cluster_bootstrap(pred_rep, ref_rep, clusters, n_resamples=300)
    by_item = metrics.cluster_bootstrap(pred_rep, ref_rep, None, n_resamples=300)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(by_cluster["pcc_ci"]) > 2 * width(by_item["pcc_ci"])


def test_json_safe_turns_nan_into_null():
    data = {"pcc": math.nan, "ci": [math.nan, 0.5], "n": np.int64(3), "x": np.float64(0.25)}
    text = json.dumps(metrics.json_safe(data), allow_nan=False)
    assert json.loads(text) == {"pcc": None, "ci": [None, 0.5], "n": 3, "x": 0.25}

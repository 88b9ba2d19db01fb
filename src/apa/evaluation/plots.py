"""Scatter plots of predicted against human scores, one per field (`apa evaluate`)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from apa.evaluation.markdown import format_number
from apa.evaluation.match import Matched
from apa.evaluation.metrics import DEFAULT_SEED


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
                         f"PCC {format_number(m['pcc'])} / SCC {format_number(m['scc'])}", fontsize=10)
            ax.legend(loc="upper left", fontsize=8)
            path = out_dir / f"{prefix}{level}_{aspect}.png"
            fig.savefig(path)
            written.append(path)
    return written

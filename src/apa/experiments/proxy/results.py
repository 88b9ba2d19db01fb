"""The real-data proof's results: every row's metrics, paired differences, the criterion."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from apa.data.manifest import Utterance
from apa.evaluation.metrics import weighted_pearson
from apa.experiments.proxy.baselines import duration_row
from apa.experiments.proxy.config import CRITERION_ASPECTS, ProxyConfig


def _metric_block(metrics: dict, task) -> dict:
    return {level: {aspect: {k: metrics[level][aspect].get(k) for k in ("pcc", "scc", "rmse", "coverage")}
                    for aspect in task.aspects(level)} for level in task.levels}


def row_items(pred_path: Path, references: list[Utterance], task, train_means: dict) -> dict:
    """{(level, aspect): (ref, argmax, expected, cluster)} arrays in reference order, missing
    values filled with the training mean (as apa evaluate's headline numbers do)."""
    from apa.evaluation.match import match_predictions
    from apa.predictions import read_predictions

    matched = match_predictions(read_predictions(pred_path), references, task)
    out = {}
    for (level, aspect), items in matched.fields.items():
        fill = train_means[level][aspect]
        values = [np.array([fill if v is None else v for v in column], dtype=float)
                  for column in (items.pred, items.expected)]
        out[(level, aspect)] = (np.asarray(items.ref, dtype=float), values[0], values[1],
                                np.asarray(items.cluster))
    return out


def paired_differences(a: dict, b: dict, n_bootstrap: int, seed: int = 0) -> dict:
    """PCC(a) - PCC(b) per field and kind (argmax, expected), with a 95% percentile interval
    from a paired cluster bootstrap: the same resampled utterances for both rows."""
    rng = np.random.default_rng(seed)
    n_utts = 1 + max(int(items[3].max()) for items in a.values() if len(items[3]))
    draws = [np.bincount(rng.integers(0, n_utts, n_utts), minlength=n_utts).astype(float)
             for _ in range(n_bootstrap)]
    result: dict = {}
    for (level, aspect), (ref, *columns_a, cluster) in a.items():
        ref_b, *columns_b, _ = b[(level, aspect)]
        ones = np.ones_like(ref)
        for kind, x, y in zip(("argmax", "expected"), columns_a, columns_b):
            diff = weighted_pearson(x, ref, ones) - weighted_pearson(y, ref_b, ones)
            samples = [weighted_pearson(x, ref, d[cluster]) - weighted_pearson(y, ref_b, d[cluster]) for d in draws]
            samples = [v for v in samples if not math.isnan(v)]
            ci = [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))] if samples else None
            result.setdefault(kind, {}).setdefault(level, {})[aspect] = {"diff": diff, "ci": ci}
    return result


def differences(config: ProxyConfig, out: Path) -> dict:
    """Paired-bootstrap PCC differences of the model row against each control row."""
    from apa.data.manifest import read_manifest
    from apa.evaluation.match import train_means_from
    from apa.tasks import get_task

    task = get_task(config.task)
    data = out / "data"
    if not (out / "model" / "pred.jsonl").is_file():
        return {}
    references = read_manifest(data / "model_test.jsonl")
    means = train_means_from(read_manifest(data / "model_train.jsonl"), task)
    model = row_items(out / "model" / "pred.jsonl", references, task, means)
    result = {}
    for control in ("swapped", "silence"):
        if (out / control / "pred.jsonl").is_file():
            items = row_items(out / control / "pred.jsonl", references, task, means)
            result[f"model - {control}"] = paired_differences(model, items, max(config.bootstrap, 1))
    return result


def collect_results(config: ProxyConfig, out: Path, window: dict, human: dict, commands: list[str],
                    timings: dict) -> dict:
    """Every row's PCC/SCC/RMSE from its eval/metrics.json, the gaps and the done-criterion."""
    from apa.tasks import get_task

    task = get_task(config.task)
    rows: dict[str, dict] = {}
    parse: dict[str, dict] = {}
    for row in [*config.rows, "gop_baseline", "constant"]:
        path = out / row / "eval" / "metrics.json"
        if not path.is_file():
            continue
        metrics = json.loads(path.read_text())  # NaN was written as null: None below
        if row == "constant":
            rows["constant"] = _metric_block(metrics, task)
            continue
        if row == "gop_baseline":  # the regression's own values; rounded ones say less
            rows["GOP baseline (pocketsphinx evidence + linear regression, no LLM)"] = _metric_block(
                metrics["expected"], task)
            continue
        rows[f"{row} argmax"] = _metric_block(metrics, task)
        if "expected" in metrics:
            rows[f"{row} expected"] = _metric_block(metrics["expected"], task)
        parse[row] = {k: metrics["parse"].get(k) for k in ("references", "matched", "missing", "with_problems")}
    if (out / "data" / "model_test.jsonl").is_file():
        from apa.data.manifest import read_manifest

        rows["duration only (minus clip seconds, no model)"] = duration_row(
            read_manifest(out / "data" / "model_test.jsonl"), task)
    if human:
        rows["human (one expert vs the other four)"] = {
            level: {aspect: {"pcc": v["pcc"], "scc": v["scc"], "rmse": None, "coverage": None}
                    for aspect, v in aspects.items()} for level, aspects in human.items()}

    criterion = {}
    for kind in ("expected", "argmax"):
        model, control = rows.get(f"model {kind}"), rows.get(f"swapped {kind}")
        if not model or not control:
            continue
        checks = {}
        for aspect in CRITERION_ASPECTS:
            if aspect not in task.sentence:
                continue
            m, c = model["sentence"][aspect]["pcc"], control["sentence"][aspect]["pcc"]
            gap = m - c if m is not None and c is not None else None
            checks[aspect] = {"model": m, "swapped": c, "gap": gap,
                              "met": bool(gap is not None and gap >= config.target_gap and m > config.target_pcc)}
        criterion[kind] = {"aspects": checks, "met": all(v["met"] for v in checks.values())}
    return {"config": dataclasses.asdict(config), "window": window, "rows": rows, "parse": parse,
            "criterion": criterion, "differences": differences(config, out), "target": {"gap": config.target_gap, "pcc": config.target_pcc},
            "human_detail": human, "commands": commands, "timings": timings}


def _cell(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN"
    return f"{value:.{digits}f}"


def render_results(results: dict) -> str:
    """results.md: PCC / SCC and RMSE tables, the criterion, window counts, timings, commands."""
    from apa.tasks import get_task

    config = results["config"]
    task = get_task(config["task"])
    fields = [(level, aspect) for level in ("sentence", "word") for aspect in task.aspects(level)]
    labels = [f"{'utt' if level == 'sentence' else 'word'} {aspect}" for level, aspect in fields]
    rows = results["rows"]
    window = results["window"]
    lines = [f"# Real-data proof: `{config['task']}` on speechocean762 test "
             f"({window['test_used']} utterances)", "",
             f"Model: `{config['size']}` from scratch, {config['window_seconds']} s audio window; "
             f"training: {json.dumps(config['train'])}.", "",
             "PCC / SCC (argmax = most likely score of constrained decoding, expected = its "
             "probability-weighted mean; NaN = undefined, zero variance):", "",
             "| row | " + " | ".join(labels) + " |", "|---|" + "---|" * len(fields)]
    for name, block in rows.items():
        cells = [f"{_cell(block[l][a]['pcc'])} / {_cell(block[l][a]['scc'])}" if l in block else "-"
                 for l, a in fields]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "RMSE (0-10 scale):", "", "| row | " + " | ".join(labels) + " |", "|---|" + "---|" * len(fields)]
    for name, block in rows.items():
        if name.startswith(("human", "duration")) or block is None:
            continue
        lines.append(f"| {name} | " + " | ".join(_cell(block[l][a]["rmse"]) for l, a in fields) + " |")
    target = results["target"]
    lines += ["", f"Criterion: model PCC - swapped-audio PCC >= {target['gap']} and model PCC > {target['pcc']} "
                  f"on sentence {', '.join(CRITERION_ASPECTS)}:", ""]
    for kind, crit in results["criterion"].items():
        parts = [f"{a} {_cell(v['model'])} vs {_cell(v['swapped'])} (gap {_cell(v['gap'])})"
                 for a, v in crit["aspects"].items()]
        lines.append(f"- {kind}: {'MET' if crit['met'] else 'NOT MET'}: " + "; ".join(parts))
    for name, by_kind in results.get("differences", {}).items():
        for kind, block in by_kind.items():
            lines += ["", f"PCC difference, {name} ({kind}), with a 95% paired cluster-bootstrap interval "
                          f"({config['bootstrap']} resamples of the test utterances):", "",
                      "| " + " | ".join(labels) + " |", "|" + "---|" * len(fields)]
            cells = []
            for level, aspect in fields:
                d = block.get(level, {}).get(aspect)
                if d is None or d["diff"] is None or (isinstance(d["diff"], float) and math.isnan(d["diff"])):
                    cells.append("NaN")
                else:
                    ci = d["ci"]
                    cells.append(f"{d['diff']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""))
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Window: train {window['train_used']} of {window['train_total']} clips used "
                  f"({len(window['train_skipped'])} longer than {window['window_seconds']} s left out); test "
                  f"{window['test_used']} of {window['test_total']} ({len(window['test_truncated'])} cut to the "
                  f"window: {', '.join(window['test_truncated']) or 'none'}).", ""]
    for row, p in results["parse"].items():
        lines.append(f"- {row}: {p['matched']} of {p['references']} test utterances predicted, "
                     f"{p['with_problems']} with parse problems")
    timings = results["timings"]
    lines += ["", "Wall time of each step (s; a step skipped by a later invocation keeps its time):", "",
              "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {seconds:.0f} |" for step, seconds in timings.items()]
    lines += [f"| **all steps** | **{sum(timings.values()):.0f}** |"]
    lines += ["", "The commands of the experiment, in order (`apa proxy` runs each unless its output exists):",
              "", "```", *results["commands"], "```", ""]
    return "\n".join(lines)

"""The steps of the real-data proof, in order; each is skipped when its output exists."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

from apa.data.manifest import Utterance
from apa.experiments.proxy.baselines import constant_predictions, human_agreement
from apa.experiments.proxy.config import ProxyConfig
from apa.experiments.proxy.controls import fit_to_window, silence_audio, swapped_audio
from apa.experiments.proxy.results import collect_results, render_results
from apa.experiments.proxy.runner import Runner
from apa.files import atomic_write_lines, atomic_write_text


def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with path.open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def _limit(utts: list[Utterance], n: int) -> list[Utterance]:
    return utts[:n] if n else utts


def prepare_rows(config: ProxyConfig, runner: Runner) -> dict:
    """apa prepare, the window fit, and the train/test manifests of every row."""
    from apa.data.manifest import read_manifest, write_manifest

    data = runner.out / "data"
    train_path, test_path = data / "so762_train.jsonl", data / "so762_test.jsonl"
    done = train_path.is_file() and test_path.is_file()
    runner.apa("prepare", ["prepare", "so762", "--root", config.corpus, "--out", str(data)],
               skip=f"{data} holds the manifests already" if done else None)

    def build() -> dict:
        train = _limit(read_manifest(train_path), config.limit_train)
        test = _limit(read_manifest(test_path), config.limit_test)
        train_fit = fit_to_window(train, config.window_seconds, "skip")
        test_fit = fit_to_window(test, config.window_seconds, "truncate")
        window = f"{config.window_seconds} s window"
        if train_fit.skipped:
            runner.say(f"warning: train: {len(train_fit.skipped)} of {len(train)} clips are longer than the "
                       f"{window} and are left out of training (e.g. {', '.join(train_fit.skipped[:5])})")
        if test_fit.truncated:
            runner.say(f"warning: test: {len(test_fit.truncated)} of {len(test)} clips are longer than the "
                       f"{window}; the processor keeps their first {config.window_seconds} s "
                       f"({', '.join(test_fit.truncated[:10])})")
        rows = {"model": (train_fit.kept, test_fit.kept)}
        if "swapped" in config.rows:
            rows["swapped"] = (swapped_audio(train_fit.kept, config.control_seed, data),
                               swapped_audio(test_fit.kept, config.control_seed + 1, data))
        if "silence" in config.rows:
            rows["silence"] = tuple(silence_audio(utts, data / "silence_audio", data, config.control_seed)
                                    for utts in (train_fit.kept, test_fit.kept))
        for row, (row_train, row_test) in rows.items():
            write_manifest(data / f"{row}_train.jsonl", row_train)
            write_manifest(data / f"{row}_test.jsonl", row_test)
        return {"train_total": len(train), "test_total": len(test), "train_used": len(train_fit.kept),
                "test_used": len(test_fit.kept), "train_skipped": train_fit.skipped,
                "test_truncated": test_fit.truncated, "window_seconds": config.window_seconds}

    window_path = data / "window.json"
    manifests = [data / f"{row}_{split}.jsonl" for row in ("model", *config.rows) for split in ("train", "test")]
    if window_path.is_file() and all(m.is_file() for m in manifests):
        runner.say(f"row manifests: skipped, {data} holds them already")
        return json.loads(window_path.read_text())
    info = runner.timed("row manifests", build)
    window_path.write_text(json.dumps(info, indent=2) + "\n")
    return info


def run_row(config: ProxyConfig, runner: Runner, row: str, init_model: Path) -> None:
    """apa train, apa predict and apa evaluate for one row."""
    import yaml

    data = runner.out / "data"
    folder = runner.out / row
    folder.mkdir(parents=True, exist_ok=True)
    train_dir = folder / "train"
    train_config = dict(config.train, task=config.task, evidence=config.evidence, model=str(init_model),
                        train=[{"path": str(data / f"{row}_train.jsonl"), "weight": 1.0}],
                        output_dir=str(train_dir))
    config_path = folder / "train.yaml"
    config_path.write_text(yaml.safe_dump(train_config, sort_keys=False))
    trained = train_dir / ("model" if train_config.get("full_finetune") else "adapter")
    done = (trained / "apa_run.json").is_file()
    resume = ["--resume"] if not done and any((train_dir / "checkpoints").glob("step-*")) else []
    runner.apa(f"{row}/train", ["train", "--config", str(config_path), "--no-progress", *resume],
               skip=f"{trained} exists" if done else None)

    model_args = (["--model", str(trained)] if train_config.get("full_finetune")
                  else ["--model", str(init_model), "--adapter", str(trained)])
    pred = folder / "pred.jsonl"
    n_test = _count_lines(data / f"{row}_test.jsonl")
    device = ["--device", config.device] if config.device else []
    runner.apa(f"{row}/predict", ["predict", *model_args, "--data", str(data / f"{row}_test.jsonl"),
                                  "--task", config.task, "--out", str(pred), "--decoding", config.decoding,
                                  "--batch-size", str(config.predict_batch_size), *device, "--no-progress"],
               skip=f"{pred} is complete" if _count_lines(pred) >= n_test else None)
    evaluate(config, runner, row, pred)


def evaluate(config: ProxyConfig, runner: Runner, row: str, pred: Path) -> None:
    data = runner.out / "data"
    metrics = runner.out / row / "eval" / "metrics.json"
    done = metrics.is_file() and metrics.stat().st_mtime >= pred.stat().st_mtime
    runner.apa(f"{row}/evaluate", ["evaluate", "--pred", str(pred), "--ref", str(data / "model_test.jsonl"),
                                   "--train", str(data / "model_train.jsonl"), "--task", config.task,
                                   "--out", str(runner.out / row / "eval"), "--bootstrap", str(config.bootstrap),
                                   "--no-plots"], skip=f"{metrics} is up to date" if done else None)


def run_gop_baseline(config: ProxyConfig, runner: Runner) -> None:
    """`apa baseline gop` fitted on the model row's training manifest (its evidence computed
    once, beside the manifest, and shared with the model row), then apa evaluate."""
    data = runner.out / "data"
    folder = runner.out / "gop_baseline"
    pred = folder / "pred.jsonl"
    runner.apa("gop_baseline/fit", ["baseline", "gop", "--train", str(data / "model_train.jsonl"),
                                    "--test", str(data / "model_test.jsonl"), "--task", config.task,
                                    "--out", str(folder), "--jobs", str(config.threads), "--no-progress"],
               skip=f"{pred} exists" if pred.is_file() else None)
    evaluate(config, runner, "gop_baseline", pred)


def run_baselines(config: ProxyConfig, runner: Runner) -> dict:
    """The constant train-mean predictor (through apa evaluate) and the human agreement."""
    from apa.data.manifest import read_manifest
    from apa.evaluation.match import train_means_from
    from apa.tasks import get_task

    task = get_task(config.task)
    data = runner.out / "data"
    train, test = read_manifest(data / "model_train.jsonl"), read_manifest(data / "model_test.jsonl")
    folder = runner.out / "constant"
    folder.mkdir(parents=True, exist_ok=True)
    means = train_means_from(train, task)
    if not (folder / "pred.jsonl").is_file():
        runner.timed("constant/predict", lambda: atomic_write_lines(
            folder / "pred.jsonl", (json.dumps(r) for r in constant_predictions(test, means, task))))
    evaluate(config, runner, "constant", folder / "pred.jsonl")

    experts_path = Path(config.corpus) / "resource" / "experts.json"
    if not experts_path.is_file():
        runner.say(f"warning: {experts_path} does not exist; no human-agreement row")
        return {}

    def agreement() -> dict:
        experts = json.loads(experts_path.read_text(encoding="utf-8"))
        return human_agreement(experts, [u.id for u in test], task)

    human = runner.timed("human agreement", agreement)
    from apa.evaluation.metrics import json_safe

    atomic_write_text(runner.out / "human.json", json.dumps(json_safe(human), indent=2) + "\n")
    runner.say(f"human agreement: {experts_path}, {len(test)} test utterances")
    return human


def run_experiment(config: ProxyConfig, echo: Callable[[str], None] = print) -> dict:
    """Every step of the experiment (see the module docstring); returns the results."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(out, config.threads, echo)
    import yaml

    (out / "proxy_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
    start = time.perf_counter()
    runner.say(f"proxy experiment -> {out} (size {config.size}, {config.window_seconds} s window, "
               f"rows {', '.join(config.rows)})")
    window = prepare_rows(config, runner)
    init_model = out / "init_model"
    runner.apa("tiny-model", ["tiny-model", str(init_model), "--backbone", config.backbone,
                              "--size", config.size, "--window", str(config.window_seconds),
                              "--seed", str(config.model_seed)],
               skip=f"{init_model} exists" if (init_model / "config.json").is_file() else None)
    human = run_baselines(config, runner)
    if config.evidence != "none":
        run_gop_baseline(config, runner)
    for row in config.rows:
        run_row(config, runner, row, init_model)
    runner.say(f"this invocation: {time.perf_counter() - start:.0f} s")
    results = collect_results(config, out, window, human, runner.commands, runner.timings)
    from apa.evaluation.metrics import json_safe

    atomic_write_text(out / "results.json", json.dumps(json_safe(results), indent=2) + "\n")
    atomic_write_text(out / "results.md", render_results(results))
    runner.say(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    return results

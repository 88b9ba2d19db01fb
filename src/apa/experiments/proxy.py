"""The real-data proof: the whole pipeline learns pronunciation scores from speechocean762 audio.

Pretrained Qwen2-Audio weights cannot be downloaded on these machines, so the paper's numbers
cannot be reproduced here. What can be shown is that the pipeline, end to end on the real
corpus, learns from the audio: a small Qwen2-Audio-shaped model trained from scratch with
our own `apa prepare` / `apa train` / `apa predict` / `apa evaluate`, against the same
model, trained and tested the same way, on audio that says nothing about the labels. A bug
anywhere (labels shifted, prompts mixed up between utterances, audio not reaching the text
model, metrics misaligned) shows up as a missing gap between the model and its controls.

Rows of the comparison (one test-set evaluation each, all 2,500 test utterances):

- ``model``: trained on the real training clips (those longer than the audio window are
  left out and counted), tested on every test clip (the few longer than the window are cut
  to it by the processor, with a warning, and counted).
- ``swapped``: the control. Every utterance's audio is replaced by another random
  utterance's of the same split (a derangement: no clip keeps its own audio), in training
  and in test, with the same training procedure: realistic speech carrying no information
  about the labels. The prompt still gives the utterance's own text.
- ``silence``: every clip replaced by near-silence (faint white noise at -54 dBFS, since
  `apa.data.audio` rightly refuses digital silence; 16-bit FLAC) of exactly the same number
  of samples: how much the duration alone explains.
- ``constant``: the training-set mean of every field for every item. PCC/SCC are undefined
  (zero variance); its RMSE is the floor a useful model must beat.
- ``human``: each of the five experts of ``resource/experts.json`` against the mean of the
  other four, on the same test utterances, averaged over the experts.

Model rows are decoded with constrained decoding, which gives both the most likely score
(``argmax``) and the expected score (``expected``, the probability-weighted mean).

Layout of OUT::

    data/            so762_{train,test}.jsonl (apa prepare), {row}_{train,test}.jsonl,
                     silence_audio/ID.flac
    init_model/      the random model every row starts from (apa tiny-model)
    ROW/train.yaml   the row's `apa train` config; ROW/train/ its run (ROW/train/model: the result)
    ROW/pred.jsonl   apa predict;  ROW/eval/ apa evaluate
    constant/        pred.jsonl and eval/ of the constant predictor
    human.json       the human-agreement numbers
    logs/            one log per command
    timings.json     wall time of every step
    results.json, results.md   the tables, the gaps and the exact commands

Every step whose output exists is skipped (an interrupted run continues where it stopped;
a skipped step keeps the wall time measured when it ran).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from apa.data.manifest import Utterance
from apa.errors import ApaError

ROWS = ("model", "swapped", "silence")
# Which sentence aspects the done-criterion looks at.
CRITERION_ASPECTS = ("accuracy", "fluency", "total")
# Near-silence: white noise at this RMS (-54 dBFS), above apa.data.audio.SILENCE_PEAK at its peaks.
SILENCE_RMS = 2e-3
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
DEFAULT_TRAIN = {"method": "sft", "full_finetune": True, "epochs": 4.0, "batch_size": 16, "grad_accum": 1,
                 "lr": 1e-3, "weight_decay": 0.01, "warmup_ratio": 0.05, "scheduler": "cosine",
                 "max_grad_norm": 1.0, "seed": 0, "save_every": 100, "keep_checkpoints": 1,
                 "group_by_length": True}


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------

def _f(default: Any, help: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ProxyConfig:
    corpus: str = _f("../shared/so762", "speechocean762 in the official layout")
    out: str = _f("runs/proxy", "output folder of the whole experiment")
    task: str = _f("word_sentence", "task trained and evaluated")
    size: str = _f("small", "model size (apa tiny-model --size): tiny, small, base")
    window_seconds: int = _f(12, "audio window of the model in whole seconds (apa tiny-model --window)")
    model_seed: int = _f(0, "seed of the random initial weights (the same for every row)")
    rows: list = _f(list(ROWS), "which trained rows to run: model, swapped, silence")
    control_seed: int = _f(0, "seed of the audio swap and of the silence noise")
    threads: int = _f(2, "CPU threads per command (OMP_NUM_THREADS)")
    device: str = _f("cpu", "device of apa predict: cpu, cuda, or '' for automatic")
    train: dict = _f(dict(DEFAULT_TRAIN), "apa train settings shared by every row (TrainConfig fields)")
    predict_batch_size: int = _f(32, "apa predict --batch-size")
    decoding: str = _f("constrained", "apa predict --decoding (constrained gives argmax and expected scores)")
    bootstrap: int = _f(1000, "apa evaluate --bootstrap")
    limit_train: int = _f(0, "use only the first N training utterances (0: all); for tests")
    limit_test: int = _f(0, "use only the first N test utterances (0: all); for tests")
    target_gap: float = _f(0.15, "done-criterion: model PCC minus swapped-audio PCC at least this")
    target_pcc: float = _f(0.4, "done-criterion: model PCC above this")

    def validate(self) -> "ProxyConfig":
        from apa.modeling import FULL_WINDOW_SECONDS, TINY_SIZES
        from apa.tasks import get_task

        get_task(self.task)
        if self.size not in TINY_SIZES:
            raise ApaError(f"size must be one of {', '.join(TINY_SIZES)}, not {self.size!r}")
        if not isinstance(self.window_seconds, int) or not 1 <= self.window_seconds <= FULL_WINDOW_SECONDS:
            raise ApaError(f"window_seconds must be a whole number from 1 to {FULL_WINDOW_SECONDS}")
        unknown = [r for r in self.rows if r not in ROWS]
        if unknown or not self.rows:
            raise ApaError(f"rows must be a non-empty list of {', '.join(ROWS)}; got {self.rows!r}")
        if not isinstance(self.train, dict):
            raise ApaError("train must be a mapping of apa train settings (e.g. epochs: 4)")
        reserved = {"task", "model", "train", "output_dir"} & set(self.train)
        if reserved:
            raise ApaError(f"train: {', '.join(sorted(reserved))} are set by the experiment itself; remove them")
        return self


def _coerce(name: str, current: Any, value: Any) -> Any:
    if isinstance(current, bool) or isinstance(value, bool):
        return value
    if isinstance(current, int) and isinstance(value, (int, float, str)):
        try:
            if float(value) == int(float(value)):
                return int(float(value))
        except ValueError:
            pass
        raise ApaError(f"{name} must be a whole number, got {value!r}")
    if isinstance(current, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ApaError(f"{name} must be a number, got {value!r}") from None
    if isinstance(current, list) and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def load_proxy_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> ProxyConfig:
    """YAML file (optional) + ``key=value`` overrides (``train.KEY=VALUE`` for apa train settings)."""
    import yaml

    from apa.training.config import read_yaml_mapping

    values = read_yaml_mapping(path)
    known = {f.name: f for f in dataclasses.fields(ProxyConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ApaError(f"unknown proxy config field(s) {', '.join(unknown)}; known: {', '.join(known)}")
    train = dict(DEFAULT_TRAIN)
    train.update(values.pop("train", None) or {})
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ApaError(f"override {item!r} must look like key=value (e.g. train.epochs=2)")
        key, value = key.strip(), yaml.safe_load(text)
        if key.startswith("train."):
            train[key[len("train."):]] = value
        elif key in known and key != "train":
            values[key] = value
        else:
            raise ApaError(f"unknown override {key!r}; use a proxy config field or train.FIELD")
    defaults = ProxyConfig()
    for key, value in list(values.items()):
        values[key] = _coerce(key, getattr(defaults, key), value)
    return ProxyConfig(**values, train=train).validate()


# --------------------------------------------------------------------------------------
# Data for the rows
# --------------------------------------------------------------------------------------

@dataclass
class WindowFit:
    """Which clips fit the audio window: ``kept`` utterances, and the ids of long clips that
    were left out (``skipped``) or kept to be cut by the processor (``truncated``)."""

    window_seconds: float
    kept: list[Utterance]
    skipped: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)


def clip_seconds(utt: Utterance) -> float:
    if utt.duration is not None:
        return float(utt.duration)
    from apa.data.audio import audio_info

    return audio_info(utt.audio_path)[0]


def fit_to_window(utts: Sequence[Utterance], window_seconds: float, long_clips: str = "skip") -> WindowFit:
    """Count the clips longer than the window; ``long_clips="skip"`` leaves them out (training:
    their labels describe audio the model would not hear), ``"truncate"`` keeps them (test: every
    utterance is scored; the processor keeps the first ``window_seconds``)."""
    if long_clips not in ("skip", "truncate"):
        raise ValueError(f"long_clips must be skip or truncate, not {long_clips!r}")
    fit = WindowFit(window_seconds=float(window_seconds), kept=[])
    for utt in utts:
        if clip_seconds(utt) > window_seconds:
            if long_clips == "skip":
                fit.skipped.append(utt.id)
                continue
            fit.truncated.append(utt.id)
        fit.kept.append(utt)
    return fit


def derangement(n: int, seed: int) -> np.ndarray:
    """A uniformly random permutation of range(n) without fixed points (rejection sampling)."""
    if n < 2:
        raise ApaError(f"cannot swap audio among {n} utterance(s): need at least 2")
    rng = np.random.default_rng([seed, n])
    identity = np.arange(n)
    while True:
        order = rng.permutation(n)
        if not np.any(order == identity):
            return order


def _audio_relative_to(utt: Utterance, folder: Path) -> str:
    return os.path.relpath(utt.audio_path.resolve(), folder.resolve())


def swapped_audio(utts: Sequence[Utterance], seed: int, manifest_dir: str | os.PathLike) -> list[Utterance]:
    """Each utterance with the audio (and duration) of another one of ``utts``: labels, text and
    words stay; ``audio`` is written relative to ``manifest_dir`` (where the manifest goes)."""
    folder = Path(manifest_dir)
    donors = derangement(len(utts), seed)
    return [dataclasses.replace(utt, audio=_audio_relative_to(utts[d], folder), duration=utts[d].duration,
                                base_dir=folder.resolve())
            for utt, d in zip(utts, donors)]


def silence_audio(utts: Sequence[Utterance], audio_dir: str | os.PathLike, manifest_dir: str | os.PathLike,
                  seed: int, rms: float = SILENCE_RMS) -> list[Utterance]:
    """Each utterance with a near-silent clip (white noise at ``rms``) of exactly its clip's
    number of 16 kHz samples, written once as AUDIO_DIR/ID.flac (16-bit FLAC: fast to write
    and read, and exact in length)."""
    import soundfile as sf

    from apa.data.audio import SAMPLE_RATE

    audio_dir, folder = Path(audio_dir), Path(manifest_dir)
    audio_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for utt in utts:
        info = sf.info(str(utt.audio_path))
        n = int(round(info.frames * SAMPLE_RATE / info.samplerate))
        path = audio_dir / f"{utt.id}.flac"
        if not path.is_file() or sf.info(str(path)).frames != n:
            rng = np.random.default_rng([seed, zlib.crc32(utt.id.encode())])
            samples = (rng.standard_normal(n) * rms).astype(np.float32)
            tmp = path.with_name(path.stem + ".tmp.flac")
            sf.write(str(tmp), samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
            os.replace(tmp, path)
        out.append(dataclasses.replace(utt, audio=os.path.relpath(path.resolve(), folder.resolve()),
                                       duration=round(n / SAMPLE_RATE, 4), base_dir=folder.resolve()))
    return out


# --------------------------------------------------------------------------------------
# Baselines without a model
# --------------------------------------------------------------------------------------

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
    from apa.metrics import pearson, spearman

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


# --------------------------------------------------------------------------------------
# Running commands
# --------------------------------------------------------------------------------------

class Runner:
    """Runs `apa` commands as subprocesses (the exact command lines a user would type), logs
    each to OUT/logs/NAME.log, times every step and keeps the times in OUT/timings.json."""

    def __init__(self, out: Path, threads: int, echo: Callable[[str], None] = print):
        self.out = out
        self.threads = threads
        self.echo = echo
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.timings_path = out / "timings.json"
        self.timings: dict[str, float] = (json.loads(self.timings_path.read_text())
                                          if self.timings_path.is_file() else {})
        self.commands: list[str] = []

    def say(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        self.echo(line)
        with (self.out / "proxy.log").open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def record(self, step: str, seconds: float) -> None:
        self.timings[step] = round(seconds, 1)
        self.timings_path.write_text(json.dumps(self.timings, indent=2) + "\n")

    def apa(self, step: str, args: list[str], skip: str | None = None) -> float | None:
        """Run ``apa ARGS`` as step ``step``; with ``skip`` (why), only record the command."""
        shown = "apa " + shlex.join(args)
        self.commands.append(shown)
        if skip:
            self.say(f"{step}: skipped, {skip}")
            return None
        self.say(f"{step}: {shown}")
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads),
                   TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
        log_path = self.logs / f"{step.replace('/', '_')}.log"
        start = time.perf_counter()
        with log_path.open("w", encoding="utf-8") as log:
            code = subprocess.run([sys.executable, "-m", "apa.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                  env=env).returncode
        seconds = time.perf_counter() - start
        if code:
            tail = "\n    ".join(log_path.read_text(errors="replace").strip().splitlines()[-8:])
            raise ApaError(f"{step} failed (exit {code}): {shown}\n  last lines of {log_path}:\n    {tail}\n"
                           "fix the cause and rerun: finished steps are skipped")
        self.record(step, seconds)
        self.say(f"{step}: done in {seconds:.0f} s")
        return seconds

    def timed(self, step: str, function: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = function()
        self.record(step, time.perf_counter() - start)
        return value


# --------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------

def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with path.open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def _write_records(path: Path, records: Iterable[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


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
    train_config = dict(config.train, task=config.task, model=str(init_model),
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


def run_baselines(config: ProxyConfig, runner: Runner) -> dict:
    """The constant train-mean predictor (through apa evaluate) and the human agreement."""
    from apa.data.manifest import read_manifest
    from apa.evaluation import train_means_from
    from apa.tasks import get_task

    task = get_task(config.task)
    data = runner.out / "data"
    train, test = read_manifest(data / "model_train.jsonl"), read_manifest(data / "model_test.jsonl")
    folder = runner.out / "constant"
    folder.mkdir(parents=True, exist_ok=True)
    means = train_means_from(train, task)
    if not (folder / "pred.jsonl").is_file():
        runner.timed("constant/predict", lambda: _write_records(folder / "pred.jsonl",
                                                                constant_predictions(test, means, task)))
    evaluate(config, runner, "constant", folder / "pred.jsonl")

    experts_path = Path(config.corpus) / "resource" / "experts.json"
    if not experts_path.is_file():
        runner.say(f"warning: {experts_path} does not exist; no human-agreement row")
        return {}

    def agreement() -> dict:
        experts = json.loads(experts_path.read_text(encoding="utf-8"))
        return human_agreement(experts, [u.id for u in test], task)

    human = runner.timed("human agreement", agreement)
    from apa.metrics import json_safe

    (runner.out / "human.json").write_text(json.dumps(json_safe(human), indent=2) + "\n")
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
    runner.apa("tiny-model", ["tiny-model", str(init_model), "--size", config.size,
                              "--window", str(config.window_seconds), "--seed", str(config.model_seed)],
               skip=f"{init_model} exists" if (init_model / "config.json").is_file() else None)
    human = run_baselines(config, runner)
    for row in config.rows:
        run_row(config, runner, row, init_model)
    runner.say(f"this invocation: {time.perf_counter() - start:.0f} s")
    results = collect_results(config, out, window, human, runner.commands, runner.timings)
    from apa.metrics import json_safe

    (out / "results.json").write_text(json.dumps(json_safe(results), indent=2) + "\n")
    (out / "results.md").write_text(render_results(results))
    runner.say(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    return results


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------

def _metric_block(metrics: dict, task) -> dict:
    return {level: {aspect: {k: metrics[level][aspect].get(k) for k in ("pcc", "scc", "rmse", "coverage")}
                    for aspect in task.aspects(level)} for level in task.levels}


def duration_row(references: Sequence[Utterance], task) -> dict:
    """PCC/SCC of minus the clip's duration against every field (a word gets its utterance's):
    how far the length of the recording alone goes, without any model."""
    from apa.metrics import pearson, spearman
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


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    total = w.sum()
    dx, dy = x - (w @ x) / total, y - (w @ y) / total
    denominator = math.sqrt(float((w @ (dx * dx)) * (w @ (dy * dy))))
    return float((w @ (dx * dy)) / denominator) if denominator > 0 else math.nan


def row_items(pred_path: Path, references: list[Utterance], task, train_means: dict) -> dict:
    """{(level, aspect): (ref, argmax, expected, cluster)} arrays in reference order, missing
    values filled with the training mean (as apa evaluate's headline numbers do)."""
    from apa.evaluation import match_predictions, read_predictions

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
            diff = _weighted_pearson(x, ref, ones) - _weighted_pearson(y, ref_b, ones)
            samples = [_weighted_pearson(x, ref, d[cluster]) - _weighted_pearson(y, ref_b, d[cluster]) for d in draws]
            samples = [v for v in samples if not math.isnan(v)]
            ci = [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))] if samples else None
            result.setdefault(kind, {}).setdefault(level, {})[aspect] = {"diff": diff, "ci": ci}
    return result


def differences(config: ProxyConfig, out: Path) -> dict:
    """Paired-bootstrap PCC differences of the model row against each control row."""
    from apa.data.manifest import read_manifest
    from apa.evaluation import train_means_from
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
    for row in [*config.rows, "constant"]:
        path = out / row / "eval" / "metrics.json"
        if not path.is_file():
            continue
        metrics = json.loads(path.read_text())  # NaN was written as null: None below
        if row == "constant":
            rows["constant"] = _metric_block(metrics, task)
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
        if name.startswith(("human", "duration")):
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

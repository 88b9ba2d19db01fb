"""The real-data proof's parts (apa.experiments.proxy) and the small-model builders it uses.

Fast tests: audio windows shorter than 30 s (processor frames, encoder positions and audio
tokens agree), counting clips longer than the window, the swapped-audio and silence
manifests, the human-agreement computation, the constant predictor, configs, full
fine-tuning. The slow test runs `apa proxy` end to end on 40 real speechocean762
utterances (skipped without the corpus).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from apa.cli import main
from apa.data.audio import audio_info, load_audio
from apa.data.manifest import read_manifest, write_manifest
from apa.errors import ApaError
from apa.experiments.proxy import baselines, controls
from apa.experiments.proxy import config as proxy_config
from apa.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
SO762 = Path(os.environ.get("APA_SO762") or REPO.parent / "shared" / "so762")


# --- window fit, swapped audio, silence ---------------------------------------------------

def test_long_clips_are_skipped_or_truncated_and_counted(utterances):
    # the corpus clips last 1.2, 0.6, 2.0 and 0.9 s
    skip = controls.fit_to_window(utterances, 1, "skip")
    assert [u.id for u in skip.kept] == ["utt2", "utt4"] and skip.skipped == ["utt1", "utt3"] and not skip.truncated
    cut = controls.fit_to_window(utterances, 1, "truncate")
    assert [u.id for u in cut.kept] == ["utt1", "utt2", "utt3", "utt4"] and cut.truncated == ["utt1", "utt3"]
    assert not controls.fit_to_window(utterances, 12, "skip").skipped


def test_derangement_moves_everything_and_is_seeded():
    for n in (2, 3, 10, 500):
        order = controls.derangement(n, seed=3)
        assert sorted(order) == list(range(n)) and not np.any(order == np.arange(n))
    assert list(controls.derangement(50, 1)) == list(controls.derangement(50, 1))
    assert list(controls.derangement(50, 1)) != list(controls.derangement(50, 2))
    with pytest.raises(ApaError, match="at least 2"):
        controls.derangement(1, 0)


def test_swapped_manifest_gives_every_utterance_another_real_clip(tmp_path, utterances):
    folder = tmp_path / "data"
    folder.mkdir()
    swapped = controls.swapped_audio(utterances, seed=0, manifest_dir=folder)
    write_manifest(folder / "swapped.jsonl", swapped)
    back = read_manifest(folder / "swapped.jsonl", check_audio=True)
    originals = {u.id: u for u in utterances}
    own = {u.id: u.audio_path.resolve() for u in utterances}
    assert [u.id for u in back] == [u.id for u in utterances]
    assert sorted(str(u.audio_path.resolve()) for u in back) == sorted(str(p) for p in own.values())
    for utt in back:
        assert utt.audio_path.resolve() != own[utt.id]  # a derangement: never its own clip
        donor = next(u for u in utterances if u.audio_path.resolve() == utt.audio_path.resolve())
        assert utt.duration == donor.duration  # the duration travels with the audio
        assert (utt.text, utt.scores, [w.to_dict() for w in utt.words]) == \
            (originals[utt.id].text, originals[utt.id].scores, [w.to_dict() for w in originals[utt.id].words])
        assert np.abs(load_audio(utt.audio_path)).max() > 0.1  # realistic audio, not silence


def test_silence_manifest_keeps_every_length_and_loads(tmp_path, utterances):
    folder = tmp_path / "data"
    silent = controls.silence_audio(utterances, folder / "silence_audio", folder, seed=0)
    write_manifest(folder / "silence.jsonl", silent)
    back = read_manifest(folder / "silence.jsonl", check_audio=True)
    for original, utt in zip(utterances, back):
        assert utt.id == original.id and utt.scores == original.scores
        assert utt.audio_path.parent.name == "silence_audio"
        samples = load_audio(utt.audio_path)  # not refused as silent, not too long
        assert len(samples) == len(load_audio(original.audio_path))
        assert audio_info(utt.audio_path)[0] == pytest.approx(audio_info(original.audio_path)[0], abs=1e-4)
        assert utt.duration == pytest.approx(original.duration, abs=1e-3)
        assert float(np.sqrt(np.mean(samples ** 2))) < 5 * controls.SILENCE_RMS
    # written once: a second call reuses the files
    mtime = (folder / "silence_audio" / "utt1.flac").stat().st_mtime_ns
    controls.silence_audio(utterances, folder / "silence_audio", folder, seed=0)
    assert (folder / "silence_audio" / "utt1.flac").stat().st_mtime_ns == mtime


# --- baselines ----------------------------------------------------------------------------

def _experts_entry(split, sentence, words):
    keys = ("accuracy_experts", "completeness_experts", "fluency_experts", "prosodic_experts", "total_experts")
    entry = {"split": split, "text": " ".join(f"W{i}" for i in range(len(words)))}
    entry.update({k: list(v) for k, v in zip(keys, sentence)})
    entry["words"] = [{"text": f"W{i}", "phones": ["AH0"], "accuracy_experts": list(w[0]),
                       "stress_experts": list(w[1]), "total_experts": list(w[2]), "phones_experts": ["AH0"] * 5}
                      for i, w in enumerate(words)]
    return entry


def _hand_pearson(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    dx, dy = x - x.mean(), y - y.mean()
    return float((dx * dy).sum() / np.sqrt((dx * dx).sum() * (dy * dy).sum()))


def test_human_agreement_is_each_expert_against_the_mean_of_the_other_four():
    acc = [[8, 9, 7, 8, 10], [4, 6, 5, 3, 5], [6, 6, 8, 7, 6], [9, 10, 10, 9, 10]]
    flu = [[8, 8, 9, 9, 10], [5, 5, 4, 6, 6], [7, 8, 7, 7, 8], [10, 9, 10, 9, 9]]
    data = {}
    for i in range(4):
        sentence = (acc[i], [1.0] * 5, flu[i], flu[i], acc[i])
        stress1 = [5 if k == i else 10 for k in range(5)]
        stress2 = [10, 10, 10, 10, 5 if i % 2 else 10]
        words = [([10, 10, 8, 10, 6 + i], stress1, [10, 10, 8, 10, 6]),
                 ([3 + i, 5, 4, 6 - i, 5], stress2, [3, 5 + i, 4, 6, 5])]
        data[f"u{i}"] = _experts_entry("test", sentence, words)
    data["other"] = _experts_entry("train", ([0] * 5,) * 5, [([0] * 5,) * 3])
    result = baselines.human_agreement(data, ["u0", "u1", "u2", "u3"], get_task("word_sentence"))

    # expert 0, sentence accuracy, by hand: others' means of u0..u3
    others0 = [(9 + 7 + 8 + 10) / 4, (6 + 5 + 3 + 5) / 4, (6 + 8 + 7 + 6) / 4, (10 + 10 + 9 + 10) / 4]
    assert result["sentence"]["accuracy"]["pcc_experts"][0] == pytest.approx(_hand_pearson([8, 4, 6, 9], others0))
    for (level, aspect), key in baselines.EXPERT_KEYS.items():
        if level == "sentence":
            matrix = np.array([data[f"u{i}"][key] for i in range(4)], float)
        else:
            matrix = np.array([w[key] for i in range(4) for w in data[f"u{i}"]["words"]], float)
        block = result[level][aspect]
        assert block["n"] == matrix.shape[0]
        if np.all(matrix == matrix[0, 0]):  # completeness here: every expert gives 1.0
            assert np.isnan(block["pcc"])
            continue
        hand = [_hand_pearson(matrix[:, k], np.delete(matrix, k, axis=1).mean(axis=1)) for k in range(5)]
        np.testing.assert_allclose(block["pcc_experts"], hand, rtol=1e-9)
        assert block["pcc"] == pytest.approx(np.mean(hand))
    with pytest.raises(ApaError, match="no entry"):
        baselines.human_agreement(data, ["u0", "missing"], get_task("word_sentence"))


def test_constant_predictor_gives_the_training_means(utterances):
    from apa.evaluation.evaluate import evaluate
    from apa.evaluation.match import train_means_from

    task = get_task("word_sentence")
    means = train_means_from(utterances, task)
    records = baselines.constant_predictions(utterances, means, task)
    assert [r["id"] for r in records] == [u.id for u in utterances]
    assert records[2]["scores"]["sentence"]["total"] == pytest.approx(np.mean([8, 6.4, 3, 10]))
    assert len(records[2]["scores"]["words"]) == 6
    result = evaluate(records, utterances, task, means, n_bootstrap=0)
    assert np.isnan(result["sentence"]["total"]["pcc"]) and "zero variance" in result["sentence"]["total"]["nan_reason"]
    assert result["sentence"]["total"]["rmse"] == pytest.approx(np.std([8, 6.4, 3, 10]))


# --- configs ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted((REPO / "configs" / "proxy").glob("*.yaml")), ids=lambda p: p.name)
def test_proxy_configs_resolve(path):
    from apa.training.config import TrainConfig

    config = proxy_config.load_proxy_config(path)
    assert config.train["method"] == "sft" and config.train["full_finetune"] and config.decoding == "constrained"
    if path.name == "cpu_gop_multi.yaml":  # the out-of-the-box scorer: phone scores, no controls
        assert config.task == "multi" and config.rows == ["model"] and config.evidence == "gop"
    else:
        assert config.task == "word_sentence" and config.rows == ["model", "swapped", "silence"]
        assert config.evidence == ("gop" if "gop" in path.name else "none")
    TrainConfig(**config.train, train=[{"path": "x"}]).validate()  # every train key is an apa train setting


def test_proxy_overrides_and_errors():
    config = proxy_config.load_proxy_config(None, ["train.epochs=2", "limit_test=40", "rows=model,swapped", "size=tiny"])
    assert config.train["epochs"] == 2 and config.limit_test == 40 and config.rows == ["model", "swapped"]
    assert config.train["lr"] == proxy_config.DEFAULT_TRAIN["lr"]
    for overrides, message in ((["nope=1"], "unknown config field"), (["train.nope=1"], "unknown apa train setting"),
                               (["rows=model,other"], "rows must be"),
                               (["train.output_dir=x"], "set by the experiment"), (["window_seconds=40"], "window")):
        with pytest.raises(ApaError, match=message):
            proxy_config.load_proxy_config(None, overrides)


# --- full fine-tuning -----------------------------------------------------------------------

def test_full_finetune_trains_every_weight_saves_a_model_and_resumes(tmp_path, tiny_model_dir, corpus_manifest):
    from safetensors.torch import load_file

    from apa.backbones.loading import load_model_and_processor

    def train(name, *extra):
        out = tmp_path / name
        assert main(["train", "--no-progress", f"model={tiny_model_dir}", f"train={corpus_manifest}",
                     f"output_dir={out}", "task=sentence_total", "batch_size=2", "grad_accum=1", "lr=1e-2",
                     "warmup_ratio=0", "scheduler=constant", "full_finetune=true", "save_every=1", *extra]) == 0
        return out

    whole = train("whole", "max_steps=3")
    model_dir = whole / "model"
    assert (model_dir / "config.json").is_file() and not (whole / "adapter").exists()
    assert json.loads((model_dir / "apa_run.json").read_text())["full_finetune"] is True
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(model_dir / "model.safetensors"))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("audio_tower.layers" in k for k in changed)
    assert any("language_model" in k and ".layers." in k for k in changed)
    assert any("multi_modal_projector" in k for k in changed)
    model, _ = load_model_and_processor(model_dir, device="cpu")  # a complete model folder
    assert model.config.audio_token_id

    part = train("part", "max_steps=2")
    import shutil

    shutil.rmtree(part / "model")
    assert main(["train", "--no-progress", f"model={tiny_model_dir}", f"train={corpus_manifest}",
                 f"output_dir={part}", "task=sentence_total", "batch_size=2", "grad_accum=1", "lr=1e-2",
                 "warmup_ratio=0", "scheduler=constant", "full_finetune=true", "save_every=1", "max_steps=3", "--resume"]) == 0
    resumed = load_file(str(part / "model" / "model.safetensors"))
    for key in after:
        assert torch.allclose(after[key], resumed[key], atol=1e-6), key


def test_full_finetune_refuses_dpo(corpus_manifest):
    from apa.training.config import load_train_config

    with pytest.raises(ApaError, match="full_finetune does not work with method dpo"):
        load_train_config(None, ["full_finetune=true", "method=dpo", f"train={corpus_manifest}"])


# --- end to end ---------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not (SO762 / "resource" / "scores.json").is_file(), reason=f"speechocean762 not at {SO762}")
def test_proxy_runs_end_to_end_on_40_real_utterances(tmp_path, capsys):
    out = tmp_path / "proxy"
    args = ["proxy", "--config", str(REPO / "configs" / "proxy" / "cpu.yaml"), "--root", str(SO762),
            "--out", str(out), "--limit", "40", "size=tiny", "train.epochs=1", "bootstrap=0",
            "predict_batch_size=8"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    for name in ("model argmax", "model expected", "swapped expected", "silence expected", "constant"):
        assert name in rows, name
    assert any(name.startswith("human") for name in rows)
    for row in ("model", "swapped", "silence"):
        assert results["parse"][row]["matched"] == 40 and results["parse"][row]["with_problems"] == 0
    assert set(results["criterion"]) == {"expected", "argmax"}
    assert any(c.startswith("apa train --config") for c in results["commands"])
    assert {"model/train", "model/predict", "swapped/train", "silence/evaluate"} <= set(results["timings"])
    swapped = read_manifest(out / "data" / "swapped_test.jsonl")
    real = read_manifest(out / "data" / "model_test.jsonl")
    assert all(a.audio_path.resolve() != b.audio_path.resolve() for a, b in zip(swapped, real))
    assert "Real-data proof" in (out / "results.md").read_text()
    # a second run skips every finished step and gives the same numbers
    assert main(args) == 0
    assert json.loads((out / "results.json").read_text())["rows"] == rows


def test_duration_row_correlates_minus_the_clip_length(utterances):
    block = baselines.duration_row(utterances, get_task("word_sentence"))
    seconds = [1.2, 0.6, 2.0, 0.9]
    totals = [8, 6.4, 3, 10]
    assert block["sentence"]["total"]["pcc"] == pytest.approx(_hand_pearson([-s for s in seconds], totals))
    word_x = [-s for s, utt in zip(seconds, utterances) for _ in utt.words]
    word_y = [w.scores["accuracy"] for utt in utterances for w in utt.words]
    assert block["word"]["accuracy"]["pcc"] == pytest.approx(_hand_pearson(word_x, word_y))

"""apa train on the tiny model: behaviour, not timings."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from apa.cli import main


def _train(tmp_path, tiny_model_dir, corpus_manifest, name, *overrides, resume=False):
    out = tmp_path / name
    args = ["train", "--no-progress", f"model={tiny_model_dir}", f"train={corpus_manifest}", f"output_dir={out}",
            "task=sentence_total", "batch_size=2", "grad_accum=1", "lr=1e-2", "warmup_ratio=0", "epochs=2",
            "save_every=0", *overrides]
    if resume:
        args.append("--resume")
    assert main(args) == 0
    return out


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _adapter(out, step=None):
    folder = out / "adapter" if step is None else out / "checkpoints" / f"step-{step:06d}" / "adapter"
    return load_file(str(folder / "adapter_model.safetensors"))


def test_sft_loss_falls_lora_changes_and_frozen_weights_do_not(tmp_path, tiny_model_dir, corpus_manifest):
    from apa.backbones.loading import load_model_and_processor

    out = _train(tmp_path, tiny_model_dir, corpus_manifest, "sft", "epochs=6")
    losses = [m["loss"] for m in _metrics(out)]
    assert losses[-1] < losses[0]
    adapter = _adapter(out)
    assert all("language_model" in key for key in adapter)
    assert any(t.abs().sum() > 0 for key, t in adapter.items() if "lora_B" in key)  # B starts at zero
    saved = json.loads((out / "adapter" / "apa_run.json").read_text())
    assert saved["task"] == "sentence_total"
    # the training set's most frequent values travel with the adapter: the parallel decoder's first guesses
    assert saved["first_guesses"] == {"sentence total": 10}  # totals 8, 6.4, 3, 10: a tie, to the higher
    _, with_adapter = load_model_and_processor(tiny_model_dir, adapter=out / "adapter", dtype="float32", device="cpu")
    assert with_adapter.first_guesses == {("sentence", "total"): 10}
    # frozen weights: the base model inside the trained run equals the saved base model
    base, _ = load_model_and_processor(tiny_model_dir, dtype="float32", device="cpu")
    tuned, _ = load_model_and_processor(tiny_model_dir, adapter=out / "adapter", dtype="float32", device="cpu")
    tuned_base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                  for k, v in tuned.state_dict().items() if "lora_" not in k}
    for key, value in base.state_dict().items():
        assert torch.equal(value, tuned_base[key]), key
    assert (out / "config.yaml").is_file()


def test_overfit_run_reproduces_its_targets(tmp_path, tiny_model_dir, corpus_manifest):
    out = _train(tmp_path, tiny_model_dir, corpus_manifest, "overfit", "limit=2", "epochs=30")
    pred = tmp_path / "pred.jsonl"
    assert main(["predict", "--model", str(tiny_model_dir), "--adapter", str(out / "adapter"), "--data",
                 str(corpus_manifest), "--task", "sentence_total", "--out", str(pred), "--limit", "2",
                 "--decoding", "free", "--no-progress"]) == 0
    records = [json.loads(line) for line in pred.read_text().splitlines()]
    assert [r["output"] for r in records] == ["Sentence Scores: 8", "Sentence Scores: 6"]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, tiny_model_dir, corpus_manifest):
    whole = _train(tmp_path, tiny_model_dir, corpus_manifest, "whole", "epochs=3", "save_every=2")
    part = _train(tmp_path, tiny_model_dir, corpus_manifest, "part", "epochs=3", "save_every=2", "keep_checkpoints=5")
    # interrupt: keep only the step-2 checkpoint, as if the process had died after it
    import shutil

    shutil.rmtree(part / "adapter")
    for checkpoint in (part / "checkpoints").glob("step-*"):
        if checkpoint.name != "step-000002":
            shutil.rmtree(checkpoint)
    (part / "metrics.jsonl").unlink()
    _train(tmp_path, tiny_model_dir, corpus_manifest, "part", "epochs=3", "save_every=2", resume=True)
    a, b = _adapter(whole), _adapter(part)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    assert [m["step"] for m in _metrics(part)] == [3, 4, 5, 6]


def test_restart_without_resume_refuses_to_overwrite(tmp_path, tiny_model_dir, corpus_manifest, capsys):
    _train(tmp_path, tiny_model_dir, corpus_manifest, "run", "epochs=1")
    args = ["train", f"model={tiny_model_dir}", f"train={corpus_manifest}", f"output_dir={tmp_path / 'run'}"]
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(
        tmp_path, tiny_model_dir, corpus_manifest, capsys, monkeypatch):
    from apa.training.objectives import Sft

    real = Sft.loss
    calls = {"n": 0}

    def poisoned(self, model, batch, totals):
        calls["n"] += 1
        loss, sums = real(self, model, batch, totals)
        if calls["n"] > 2:
            return loss * float("nan"), {k: float("nan") for k in sums}
        return loss, sums

    monkeypatch.setattr(Sft, "loss", poisoned)
    args = ["train", "--no-progress", f"model={tiny_model_dir}", f"train={corpus_manifest}",
            f"output_dir={tmp_path / 'nan'}", "task=sentence_total", "batch_size=2", "grad_accum=1",
            "epochs=3", "save_every=2"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "loss became nan at step 3" in err and "step-000002" in err
    assert [p.name for p in (tmp_path / "nan" / "checkpoints").glob("step-*")] == ["step-000002"]


@pytest.mark.parametrize("method", ["simpo", "dpo"])
def test_preference_methods_run_and_log_pair_statistics(tmp_path, tiny_model_dir, corpus_manifest, method):
    out = _train(tmp_path, tiny_model_dir, corpus_manifest, method, f"method={method}", "task=multi", "epochs=3")
    metrics = _metrics(out)
    assert all(m["pairs"] == 2 for m in metrics)
    assert all(0.0 <= m["pair_accuracy"] <= 1.0 for m in metrics)
    if method == "simpo":
        assert metrics[-1]["ce"] < metrics[0]["ce"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_compute_the_same_global_gradient_and_losses(tmp_path, tiny_model_dir, corpus_manifest):
    """A 2-process run (torchrun, 2 micro-batches each) against a 1-process run (4 micro-batches)
    over the same examples: the same global gradient and the same loss at every step.

    In float64, so that the check is of the arithmetic, not of rounding. The runs add the same
    terms in other orders (per process, then across processes; other thread counts), which
    moves a sum of n terms by at most n u times the sum of their magnitudes, u = 1.1e-16; with
    n < 1e4 and magnitudes within 1e3 of the largest gradient component g_max, the first
    step's gradients (same weights) agree to 1e-9 g_max. Losses: a weight that Adam moved
    differently moved because its gradient was near zero, so it changes the next loss by
    about g_i dw_i <= lr dg / 4 each; over the ~2e4 LoRA weights at lr 1e-2 that is below
    5e-8 g_max, under 1e-6 of the loss. Weights after Adam steps are not compared: Adam
    divides by the root of tiny second moments, so a rounding-level gradient difference near
    zero becomes a visible update with no bug at all (in float32 one weight differed by
    1.4e-4 that way). A normalisation or all-reduce bug changes gradients by a factor.
    """
    script = Path(__file__).with_name("record_gradients.py")
    common = ["train", "--no-progress", f"model={tiny_model_dir}", f"train={corpus_manifest}", "task=sentence_total",
              "batch_size=1", "lr=1e-2", "warmup_ratio=0", "epochs=2", "save_every=0", "group_by_length=false",
              "dtype=float64"]
    single, double = tmp_path / "single", tmp_path / "double"
    subprocess.run([sys.executable, str(script), str(single / "grads"), *common, f"output_dir={single}",
                    "grad_accum=4"], check=True, timeout=300, capture_output=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", str(_free_port()), str(script), str(double / "grads"), *common,
                    f"output_dir={double}", "grad_accum=2"], check=True, env=env, timeout=300,
                   capture_output=True)
    one, two = torch.load(single / "grads" / "step-1.pt"), torch.load(double / "grads" / "step-1.pt")
    g_max = max(float(g.abs().max()) for g in one)
    assert g_max > 0 and all(g.dtype == torch.float64 for g in one)
    for a, b in zip(one, two, strict=True):
        assert float((a - b).abs().max()) <= 1e-9 * g_max
    losses_one = [m["loss"] for m in _metrics(single)]
    losses_two = [m["loss"] for m in _metrics(double)]
    assert len(losses_one) == len(losses_two) == 2
    assert losses_one == pytest.approx(losses_two, rel=1e-6)


@pytest.mark.parametrize("fresh", [True, False])
def test_pairs_are_drawn_afresh_each_epoch_unless_configured(tiny_processor, utterances, fresh):
    from apa.training.config import TrainConfig
    from apa.training.loop import BatchBuilder
    from apa.training.objectives import make_objective

    config = TrainConfig(method="simpo", task="multi", train=[{"path": "unused"}], fresh_pairs_each_epoch=fresh)
    objective = make_objective(config, utterances, tiny_processor)
    rejected = [BatchBuilder(objective, epoch)(utterances)["input_ids"][4:].tolist()
                for epoch in range(4)]
    assert (len({str(r) for r in rejected}) > 1) == fresh

"""The README's main job: `apa demo` runs end to end offline and shows that the install learns."""

import json

import pytest

from apa.cli import main


def test_demo_runs_the_whole_pipeline(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--train-clips", "8", "--test-clips", "4", "--epochs", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| paper FT |" in printed and "ours" in printed
    assert "held-out PCC of the expected scores on 4 clips" in printed
    run = out / "train-qwen2-audio"
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["sentence"]["accuracy"]["coverage"] == 1.0
    assert metrics["expected"]["phone"]["accuracy"]["n"] > 0
    records = [json.loads(line) for line in (run / "pred.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["problems"] == [] and "expected" in r for r in records)
    # a second run reuses the folder (resume finds the finished run) and still succeeds
    assert main(args) == 0


def test_the_summary_claims_learning_only_above_chance():
    """Unrelated scores reach |PCC| >= 2 / sqrt(n) about 5% of the time: 0.32 for 40 clips."""
    from apa.commands.demo import held_out_summary

    def metrics(total):
        return {"expected": {"sentence": {"total": {"pcc": total}}}}

    assert "not pronunciation" in held_out_summary(metrics(0.91), 40, generated=True)
    for total in (0.06, -0.44, None):
        summary = held_out_summary(metrics(total), 40, generated=True)
        assert "did not learn" in summary and "0.32" in summary and "not pronunciation" not in summary
    assert "did not learn" not in held_out_summary(metrics(0.5), 40, generated=False)


@pytest.mark.slow
def test_the_default_demo_learns_what_its_clips_let_it_hear(tmp_path, capsys):
    """The default demo (160 generated training clips, 40 held out, about a minute of training
    on 2 cores): the held-out correlations of the sentence scores are clearly positive. The
    clips' scores follow one hidden skill that the audio reveals (noise, pauses, rate), so a
    model that hears the audio reaches far above 0.5; a model that does not, about 0 (+-0.3
    for 40 clips at 95%)."""
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    metrics = json.loads((tmp_path / "demo" / "train-qwen2-audio" / "eval" / "metrics.json").read_text())
    for aspect in ("accuracy", "fluency", "total"):
        assert metrics["expected"]["sentence"][aspect]["pcc"] > 0.5, aspect
    assert metrics["n_utterances"] >= 30

"""The README's main job: `apa demo` runs end to end offline and prints the metrics table."""

import json

from apa.cli import main


def test_demo_runs_the_whole_pipeline(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--train-clips", "6", "--test-clips", "4", "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| paper FT |" in printed and "ours" in printed
    metrics = json.loads((out / "train" / "eval" / "metrics.json").read_text())
    assert metrics["sentence"]["accuracy"]["coverage"] == 1.0
    assert metrics["expected"]["phone"]["accuracy"]["n"] > 0
    records = [json.loads(line) for line in (out / "train" / "pred.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["problems"] == [] and "expected" in r for r in records)
    # a second run reuses the folder (resume finds the finished run) and still succeeds
    assert main(["demo", "--out", str(out), "--train-clips", "6", "--test-clips", "4", "--epochs", "1"]) == 0

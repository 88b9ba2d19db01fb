"""Real speechocean762 clips through train -> predict (constrained and free) -> evaluate.

The tiny random model with a smoke adapter scores noise; what is checked is that the
pipeline runs on real audio: every constrained output parses with the reference's words and
phones, expected scores lie in 0-10, and free decoding reports its parse rate honestly.
Skipped when the corpus is absent (see test_real_so762).
"""

import json

import pytest

from apa.cli import main
from apa.data.manifest import read_manifest, write_manifest
from apa.targets import parse_scores
from apa.tasks import TASKS
from test_real_so762 import ROOT

pytestmark = pytest.mark.skipif(not (ROOT / "resource" / "scores.json").is_file(),
                                reason=f"speechocean762 not found at {ROOT} (set APA_SO762)")


def test_smoke_adapter_on_real_clips(tmp_path, tiny_model_dir, capsys):
    from apa.data.so762 import read_so762

    splits = read_so762(ROOT, out_dir=tmp_path)
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    write_manifest(train, splits["train"][:8])
    write_manifest(test, splits["test"][:6])
    run = tmp_path / "run"
    assert main(["train", "--no-progress", f"model={tiny_model_dir}", f"train={train}", f"output_dir={run}",
                 "task=multi", "epochs=1", "batch_size=2", "grad_accum=2", "lr=2e-3"]) == 0
    constrained, free = tmp_path / "constrained.jsonl", tmp_path / "free.jsonl"
    common = ["--model", str(tiny_model_dir), "--adapter", str(run / "adapter"), "--data", str(test),
              "--task", "multi", "--no-progress"]
    assert main(["predict", *common, "--out", str(constrained), "--decoding", "constrained"]) == 0
    assert main(["predict", *common, "--out", str(free), "--decoding", "free", "--max-new-tokens", "40"]) == 0
    assert "parse rate:" in capsys.readouterr().out

    utts = {u.id: u for u in read_manifest(test)}
    records = [json.loads(line) for line in constrained.read_text().splitlines()]
    assert len(records) == 6
    for record in records:
        utt = utts[record["id"]]
        parsed = parse_scores(record["output"], utt, TASKS["multi"])
        assert parsed.problems == []
        assert [len(p) for p in record["expected"]["phones"]] == [len(w.phones) for w in utt.words]
        values = list(record["expected"]["sentence"].values())
        values += [v for w in record["expected"]["words"] for v in w.values()]
        values += [v for p in record["expected"]["phones"] for v in p]
        assert all(0.0 <= v <= 10.0 for v in values)

    assert main(["evaluate", "--pred", str(free), "--ref", str(test), "--train", str(train), "--task", "multi",
                 "--out", str(tmp_path / "eval_free"), "--bootstrap", "50", "--no-plots"]) == 0
    metrics = json.loads((tmp_path / "eval_free" / "metrics.json").read_text())
    assert metrics["parse"]["with_problems"] == 6  # 40 tokens cannot hold a full response
    assert metrics["sentence"]["accuracy"]["coverage"] < 1.0


@pytest.fixture(scope="module")
def so762_train_manifest(tmp_path_factory):
    from apa.data.so762 import read_so762

    out = tmp_path_factory.mktemp("so762_smoke")
    path = out / "so762_train.jsonl"
    write_manifest(path, read_so762(ROOT, out_dir=out, check_audio=False)["train"][:16])
    return path


@pytest.mark.parametrize("config", ["smoke", "smoke_simpo", "smoke_dpo"])
def test_smoke_configs_finish_and_the_loss_falls(tmp_path, tiny_model_dir, so762_train_manifest, config):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / f"{config}.yaml"
    out = tmp_path / config
    assert main(["train", "--config", str(path), "--no-progress", f"model={tiny_model_dir}",
                 f"train={so762_train_manifest}", f"output_dir={out}"]) == 0
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 12
    assert sum(losses[-3:]) < sum(losses[:3])
    assert (out / "adapter" / "adapter_model.safetensors").is_file()

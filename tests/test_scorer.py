"""The out-of-the-box scorer (README, "A scorer on a CPU"): the small model trained by
`apa proxy --config configs/proxy/cpu_gop_multi.yaml` should score a real clip's own sentence
clearly above another utterance's sentence read against the same clip: the scorer learns
that from wrong-text readings in training (`wrong_text` in its config, apa.data.wrong_text).

Slow: it needs that trained model. It uses APA_SCORER (a model folder) or
runs/proxy_gop_multi/model/train/model when present, and otherwise trains it with the
documented command (about 14 minutes on an idle 2-core machine). Skipped without speechocean762."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SO762 = Path(os.environ.get("APA_SO762") or ROOT.parent / "shared" / "so762")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (SO762 / "resource" / "scores.json").is_file(),
                                 reason=f"speechocean762 not found at {SO762}")]


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> Path:
    given = os.environ.get("APA_SCORER")
    if given:
        return Path(given)
    default = ROOT / "runs" / "proxy_gop_multi" / "model" / "train" / "model"
    if (default / "apa_run.json").is_file():
        return default
    out = tmp_path_factory.mktemp("scorer")
    subprocess.run([sys.executable, "-m", "apa.cli", "proxy", "--config", str(ROOT / "configs/proxy/cpu_gop_multi.yaml"),
                    f"corpus={SO762}", f"out={out}"], check=True)
    return out / "model" / "train" / "model"


def _score(model: Path, audio: Path, text: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "apa.cli", "score", "--model", str(model), "--audio", str(audio),
                           "--text", text, "--device", "cpu", "--compact"], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_own_sentence_scores_above_another_sentence(scorer):
    from apa.data.so762 import read_so762_split

    utts = read_so762_split(SO762, "test", check_audio=False)
    good = [u for u in utts if u.scores.get("accuracy", 0) >= 8 and len(u.words) >= 4][:6]
    for k, utt in enumerate(good):
        other = good[(k + 3) % len(good)]
        own = _score(scorer, utt.audio_path, utt.text)
        wrong = _score(scorer, utt.audio_path, other.text)
        for aspect in ("accuracy", "completeness"):
            assert own["sentence"][aspect]["expected"] >= wrong["sentence"][aspect]["expected"] + 1.0, \
                (utt.id, other.id, aspect, own["sentence"][aspect], wrong["sentence"][aspect])
        assert own["words"][0]["start"] is not None

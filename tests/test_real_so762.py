"""The real speechocean762 copy: prepare, validate, and the exact score-text round trip.

Skipped when the corpus is absent. It is looked for at ``../shared/so762`` next to the repository
(or wherever the APA_SO762 environment variable points). Preparing with audio checks takes about
2 s on the local copy (5,000 Ogg clips opened), so it is not marked slow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from apa.data import so762
from apa.data.manifest import read_manifest
from apa.targets import format_scores, parse_scores, reference_scores, round_half_up
from apa.tasks import TASKS

ROOT = Path(os.environ.get("APA_SO762") or Path(__file__).resolve().parents[1].parent / "shared" / "so762")

pytestmark = pytest.mark.skipif(not (ROOT / "resource" / "scores.json").is_file(),
                                reason=f"speechocean762 not found at {ROOT} (set APA_SO762)")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("so762_manifests")
    lines: list[str] = []
    paths = so762.prepare_so762(ROOT, out, check_audio=True, log=lines.append)
    return {"out": out, "paths": paths, "log": lines,
            "train": read_manifest(paths["train"]), "test": read_manifest(paths["test"])}


def test_prepare_gives_2500_plus_2500_valid_records(prepared):
    train, test = prepared["train"], prepared["test"]
    assert len(train) == 2500 and len(test) == 2500
    assert not {u.id for u in train} & {u.id for u in test}
    assert [u.id for u in train] == sorted(u.id for u in train)
    assert len({u.speaker for u in train}) == 125 and len({u.speaker for u in test}) == 125
    for utt in train + test:
        assert utt.audio_path.is_file(), utt.audio
        assert not Path(utt.audio).is_absolute()
        assert set(utt.scores) == {"accuracy", "fluency", "prosody", "completeness", "total"}
        assert utt.speaker_info and isinstance(utt.speaker_info["age"], int)
        assert utt.duration is not None and 0 < utt.duration <= 30
        for word in utt.words:
            assert set(word.scores) == {"accuracy", "stress", "total"}
            # SO762 phone scores are means of five experts in 0.2 steps: x5 gives integers
            assert all(isinstance(s, int) for s in word.phone_scores), (utt.id, word)
    # README: 5.57 h in all
    hours = sum(u.duration for u in train + test) / 3600
    assert hours == pytest.approx(5.57, abs=0.01)
    assert any(line.startswith("train: 2,500 utterances") for line in prepared["log"])


def test_manifests_pass_read_manifest_with_audio_checks(prepared):
    for split in so762.SPLITS:
        assert len(read_manifest(prepared["paths"][split], check_audio=True)) == 2500


def test_manifest_scores_match_scores_json(prepared):
    raw = json.loads((ROOT / "resource" / "scores.json").read_text())
    for utt in prepared["train"] + prepared["test"]:
        entry = raw[utt.id]
        assert utt.text == entry["text"]
        assert utt.scores["prosody"] == entry["prosodic"]
        assert utt.scores["completeness"] == pytest.approx(entry["completeness"])
        for word, w in zip(utt.words, entry["words"], strict=True):
            assert word.phones == (w["phones"] if isinstance(w["phones"], list) else w["phones"].split())
            assert word.phone_scores == [round(p * 5) for p in w["phones-accuracy"]]


def test_score_text_round_trip_is_exact_for_every_task(prepared):
    for utt in prepared["train"] + prepared["test"]:
        reference = reference_scores(utt)
        for name, task in TASKS.items():
            text = format_scores(utt, task)
            result = parse_scores(text, utt, task)
            assert result.ok, (utt.id, name, result.problems, text)
            for level, aspect in task.fields:
                expected = [round_half_up(v) for v in reference.get(level, aspect)]
                assert result.scores.get(level, aspect) == expected, (utt.id, name, level, aspect)


def test_round_trip_without_audio_checks_matches(prepared):
    """The labels-only reader (no audio opened) gives the same records, durations aside."""
    splits = so762.read_so762(ROOT, prepared["out"], check_audio=False)
    for split in so762.SPLITS:
        fast = [u.to_dict() for u in splits[split]]
        full = [dict(u.to_dict(), duration=None) for u in prepared[split]]
        for record in fast:
            record["duration"] = None
        assert fast == full

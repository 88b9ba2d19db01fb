"""Acoustic evidence (apa.evidence): the record's arithmetic, the pretrained acoustic model on
real speechocean762 clips, `apa evidence` (resumable, a bad clip never stops it), the evidence
prompt, and the GOP baseline through the CLI.

The real-clip tests are skipped without ../shared/so762 (or APA_SO762). pocketsphinx decodes
deterministically (integer log scores, one thread), so exact values are stable across runs;
the tests still only assert what the arithmetic or the speech guarantees."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from apa.cli import main
from apa.data.manifest import read_manifest, write_manifest
from apa.evidence.acoustic import FRAMES_PER_SECOND, build_record
from apa.evidence.features import gop_level, phone_levels, word_levels
from apa.prompts import EVIDENCE_PROMPT_VERSION, PROMPT_VERSION, instruction, prompt_version
from apa.tasks import TASKS

from helpers import bear_utterance

SO762 = Path(os.environ.get("APA_SO762") or Path(__file__).resolve().parents[2] / "shared" / "so762")
needs_so762 = pytest.mark.skipif(not (SO762 / "resource" / "scores.json").is_file(),
                                 reason=f"speechocean762 not found at {SO762}")


# ---- the record's arithmetic ------------------------------------------------------------

def test_gop_is_forced_minus_free_loop_per_frame_and_times_come_from_frames():
    phones = [["W", "IY"], ["K", "AO", "L"]]
    # frames 0-9 silence, W 10-14, IY 15-24, a 30-frame pause, K 55-59, AO 60-69, L 70-74
    aligned = [[(10, 5, -50.0), (15, 10, -300.0)], [(55, 5, -20.0), (60, 10, -100.0), (70, 5, -5.0)]]
    loop = ([("SIL", -1.0)] * 10 + [("W", -8.0)] * 5 + [("IH", -10.0)] * 10 + [("SIL", -1.0)] * 30
            + [("K", -4.0)] * 5 + [("AO", -10.0)] * 5 + [("AA", -10.0)] * 5 + [("L", -1.0)] * 5 + [("SIL", -1.0)] * 5)
    record = build_record(phones, aligned, loop, seconds=len(loop) / FRAMES_PER_SECOND)
    we, call = record["words"]
    # W: (-50 - 5 * -8) / 5 = -2; IY: (-300 - 10 * -10) / 10 = -20 (the loop heard IH throughout)
    assert [p["gop"] for p in we["phones"]] == [-2.0, -20.0]
    assert [p["match"] for p in we["phones"]] == [1.0, 0.0]
    assert we["gop"] == -11.0 and we["match"] == 0.5
    assert [p["gop"] for p in call["phones"]] == [0.0, 0.0, 0.0]
    assert call["phones"][1]["match"] == 0.5  # AO heard in 5 of its 10 frames
    assert (we["start"], we["end"], call["start"], call["end"]) == (0.1, 0.25, 0.55, 0.75)
    u = record["utterance"]
    assert u["speech_seconds"] == 0.65 and u["pauses"] == 1 and u["pause_seconds"] == 0.3
    assert u["phones_per_second"] == round(5 / 0.65, 3)
    assert u["gop"] == round((-2 - 20 + 0 + 0 + 0) / 5, 2)
    assert record["aligned"] is True


def test_a_failed_alignment_still_gives_a_record_from_the_free_loop():
    loop = [("SIL", -1.0)] * 20 + [("AH", -3.0)] * 40 + [("SIL", -1.0)] * 25 + [("T", -3.0)] * 15 + [("SIL", -1.0)] * 10
    record = build_record([["HH", "AH"], ["T", "UW"]], None, loop, seconds=1.1)
    assert record["aligned"] is False
    assert all(w["gop"] is None and w["start"] is None for w in record["words"])
    assert [len(w["phones"]) for w in record["words"]] == [2, 2]
    u = record["utterance"]
    assert u["speech_seconds"] == 0.8 and u["pauses"] == 1 and u["pause_seconds"] == 0.25
    assert u["gop"] is None


def test_the_prompt_scale():
    assert gop_level(0.5) == "9" and gop_level(-0.01) == "8" and gop_level(-1e6) == "0"
    assert gop_level(None) == "?" and gop_level(math.nan) == "?"


# ---- the prompt --------------------------------------------------------------------------

def _with_evidence(utt):
    utt.evidence = {"evidence": "gop", "version": 1, "aligned": True, "seconds": 2.0,
                    "utterance": {"speech_seconds": 1.5, "phones_per_second": 6.7, "pauses": 1,
                                  "pause_seconds": 0.3, "gop": -3.0, "match": 0.45},
                    "words": [{"gop": g, "phones": [{"gop": g} for _ in w.phones]}
                              for g, w in zip((1.0, -30.0, -100.0, None), utt.words)]}
    return utt


def test_without_evidence_the_prompts_are_the_papers_byte_for_byte():
    utt = bear_utterance()
    plain = {name: instruction(task, utt) for name, task in TASKS.items()}
    assert prompt_version(utt) == PROMPT_VERSION
    with_evidence = _with_evidence(bear_utterance())
    for name, task in TASKS.items():
        text = instruction(task, with_evidence)
        assert text != plain[name]
        # the evidence lines are added; nothing of the paper's prompt is changed or lost
        added = ("Estimates from a pretrained", "Word accuracy estimates", "Phone goodness")
        assert [line for line in text.splitlines() if not line.startswith(added)] == plain[name].splitlines()
    assert prompt_version(with_evidence) == EVIDENCE_PROMPT_VERSION != PROMPT_VERSION


def test_the_evidence_prompt_gives_each_word_and_phone_its_level_in_order():
    utt = _with_evidence(bear_utterance())
    words = word_levels(utt)
    assert words[3] == "?" and all(0 <= int(level) <= 10 for level in words[:3])
    # the estimate grows with the word's GOP (all else equal: the same utterance)
    assert int(words[0]) >= int(words[1]) >= int(words[2]) and words[0] != words[2]
    assert phone_levels(utt) == [["9", "9"], ["1", "1", "1"], ["0", "0"], ["?", "?", "?"]]
    multi = instruction(TASKS["multi"], utt)
    assert f"Word accuracy estimates: WE {words[0]} CALL {words[1]} IT {words[2]} BEAR ?." in multi
    assert "that it hears something else): 9 9 - 1 1 1 - 0 0 - ? ? ?." in multi
    assert "Phone goodness" not in instruction(TASKS["word_sentence"], utt)
    assert "Word accuracy estimates" in instruction(TASKS["sentence_accuracy"], utt)


def test_the_sentence_estimate_follows_the_evidence():
    from apa.evidence.features import utterance_figures

    good = _with_evidence(bear_utterance()).evidence
    bad = {**good, "utterance": {**good["utterance"], "gop": -30.0, "match": 0.05},
           "words": [{"gop": -30.0, "phones": []} for _ in range(4)]}
    accuracy = [int(utterance_figures(r).split("accuracy ")[1].split(",")[0]) for r in (good, bad)]
    assert accuracy[0] > accuracy[1]
    assert utterance_figures({**good, "aligned": False}).startswith("alignment failed, accuracy ")


# ---- the acoustic model on real speech ----------------------------------------------------

@pytest.fixture(scope="module")
def real_clips(tmp_path_factory):
    if not (SO762 / "resource" / "scores.json").is_file():
        pytest.skip(f"speechocean762 not found at {SO762}")
    out = tmp_path_factory.mktemp("so762")
    assert main(["prepare", "so762", "--root", str(SO762), "--out", str(out)]) == 0
    return out


@needs_so762
def test_real_clips_align_phone_by_phone_and_their_own_text_sounds_better_than_another(real_clips):
    from apa.data.audio import load_audio
    from apa.evidence.acoustic import AcousticModel

    model = AcousticModel()
    utts = read_manifest(real_clips / "so762_test.jsonl")[:6]
    own_better = 0
    for k, utt in enumerate(utts):
        audio = load_audio(utt.audio_path)
        record = model.evidence(audio, [w.phones for w in utt.words])
        assert record["aligned"], utt.id
        assert [len(w["phones"]) for w in record["words"]] == [len(w.phones) for w in utt.words]
        starts = [w["start"] for w in record["words"]]
        assert starts == sorted(starts) and 0 <= starts[0] and record["words"][-1]["end"] <= len(audio) / 16000 + 0.01
        other = utts[(k + 3) % len(utts)]
        wrong = model.evidence(audio, [w.phones for w in other.words])
        own_better += (wrong["utterance"]["gop"] is None
                       or record["utterance"]["gop"] > wrong["utterance"]["gop"])
    assert own_better == len(utts)


@needs_so762
def test_apa_evidence_is_resumable_and_a_bad_clip_never_stops_it(real_clips, tmp_path, capsys):
    utts = read_manifest(real_clips / "so762_test.jsonl")[:4]
    for utt in utts:
        shutil.copy(utt.audio_path, tmp_path / Path(utt.audio).name)
        utt.audio = Path(utt.audio).name
    (tmp_path / "broken.ogg").write_bytes(b"OggS" + b"\x00" * 200)
    broken = read_manifest(real_clips / "so762_test.jsonl")[4]
    broken.audio = "broken.ogg"
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, [*utts[:2], broken, *utts[2:]])
    assert main(["evidence", str(manifest), "--jobs", "2", "--limit", "3", "--no-progress"]) == 0
    path = tmp_path / "m.evidence.jsonl"
    assert len(path.read_text().splitlines()) == 3
    assert main(["evidence", str(manifest), "--jobs", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "5 utterances (2 new, 3 already there)" in err and "1 unusable clips" in err
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in records] == [u.id for u in read_manifest(manifest)]
    bad = next(r for r in records if r["id"] == broken.id)
    assert bad["aligned"] is False and "broken.ogg" in bad["problem"]


@needs_so762
def test_gop_baseline_predicts_what_apa_evaluate_reads(real_clips, tmp_path):
    train = tmp_path / "train.jsonl"
    test = tmp_path / "test.jsonl"
    for source, target, n in ((real_clips / "so762_train.jsonl", train, 60), (real_clips / "so762_test.jsonl", test, 20)):
        utts = read_manifest(source)[:n]
        for utt in utts:
            utt.audio = str(utt.audio_path)
        write_manifest(target, utts)
    out = tmp_path / "gop"
    assert main(["baseline", "gop", "--train", str(train), "--test", str(test), "--task", "multi",
                 "--out", str(out), "--jobs", "2", "--no-progress"]) == 0
    assert (tmp_path / "train.evidence.jsonl").is_file() and (tmp_path / "test.evidence.jsonl").is_file()
    assert main(["evaluate", "--pred", str(out / "pred.jsonl"), "--ref", str(test), "--task", "multi",
                 "--out", str(out / "eval"), "--bootstrap", "10", "--no-plots"]) == 0
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["parse"]["matched"] == 20
    # Fitted on 60 clips, 20 to test: too few sentences or words to say more than chance, but
    # the 283 phones are enough. Unrelated scores reach |PCC| > 2/sqrt(n) about 5% of the time
    # (the rule apa demo uses); the evidence must do better than that.
    phones = metrics["expected"]["phone"]["accuracy"]
    assert phones["n"] == 283 and phones["pcc"] > 2 / math.sqrt(phones["n"])
    from apa.evaluation.runs import load_run

    assert load_run(out).name == "ours GOP baseline"


def test_a_clip_the_acoustic_model_cannot_take_is_still_a_record(make_sine):
    from apa.evidence.acoustic import clip_evidence

    record = clip_evidence(make_sine(1.0), [["HH", "QQ1"]])  # QQ is no phone of the model's
    assert record["aligned"] is False and "QQ" in record["problem"] and record["words"] == []


def test_a_model_trained_on_another_evidence_prompt_version_is_refused(tmp_path):
    import json

    from apa.backbones.loading import trained_evidence
    from apa.errors import ApaError

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "apa_run.json").write_text(json.dumps({"evidence": "gop", "prompt_version": EVIDENCE_PROMPT_VERSION}))
    assert trained_evidence(folder) == "gop"
    (folder / "apa_run.json").write_text(json.dumps({"evidence": "gop", "prompt_version": "1+gop.1"}))
    with pytest.raises(ApaError, match="evidence prompt version 1\\+gop.1"):
        trained_evidence(folder)
    (folder / "apa_run.json").write_text(json.dumps({"evidence": None, "prompt_version": "1"}))
    assert trained_evidence(folder) is None

"""Manifest schema: record_problems / read_manifest name every problem as FILE:LINE: field: message."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from apa.data.manifest import (ManifestProblems, Utterance, Word, read_manifest, record_problems,
                               round_score, utterance_from_dict, write_manifest)
from apa.errors import ApaError

GOOD = {"id": "000010011", "audio": "a.wav", "text": "WE CALL", "speaker": "0001",
        "speaker_info": {"age": 6, "gender": "m"}, "duration": 1.0,
        "scores": {"accuracy": 8, "fluency": 9, "prosody": 9, "completeness": 8.3, "total": 7},
        "words": [{"text": "WE", "phones": ["W", "IY0"], "scores": {"accuracy": 10, "stress": 10, "total": 10},
                   "phone_scores": [10, 10]},
                  {"text": "CALL", "phones": ["K", "AO0", "L"], "scores": {"accuracy": 9, "stress": 5, "total": 9},
                   "phone_scores": [10, 9, 9]}]}


def good(**changes) -> dict:
    record = copy.deepcopy(GOOD)
    record.update(changes)
    return record


def write_lines(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "a.wav"
    sf.write(path, 0.1 * np.sin(np.arange(16000) / 10), 16000)
    return path


def read_problems(path: Path, check_audio: bool = False) -> list[str]:
    with pytest.raises(ManifestProblems) as e:
        read_manifest(path, check_audio=check_audio)
    assert "Traceback" not in str(e.value)
    return e.value.problems


# --------------------------------------------------------------------------- record_problems


def test_good_record_has_no_problems():
    assert record_problems(GOOD) == []


def test_custom_corpus_without_phone_scores_or_some_aspects_is_valid():
    record = good(scores={"total": 6})
    for word in record["words"]:
        word["phone_scores"] = None
        word["scores"] = {"accuracy": 7}
    assert record_problems(record) == []


@pytest.mark.parametrize("mutate, expected", [
    (lambda r: r["scores"].update(accuracy=11), "scores.accuracy: score 11 is outside 0-10"),
    (lambda r: r["scores"].update(total=-1), "scores.total: score -1 is outside 0-10"),
    (lambda r: r["words"][1]["scores"].update(accuracy=11), "words[1].scores.accuracy: score 11 is outside 0-10"),
    (lambda r: r["words"][0]["scores"].update(stress=7), "words[0].scores.stress: stress score 7 must be 5 or 10"),
    (lambda r: r["words"][1].update(phone_scores=[10, 11, 9]), "words[1].phone_scores[1]: score 11 is outside 0-10"),
    (lambda r: r["words"][1].update(phone_scores=[10, 9]), "words[1].phone_scores: 2 scores for 3 phones (K AO0 L)"),
    (lambda r: r["words"][0]["scores"].update(accuracy="ten"), "words[0].scores.accuracy: score 'ten' is not a number"),
    (lambda r: r["scores"].update(prosodic=9), "scores.prosodic: unknown sentence aspect"),
    (lambda r: r.update(text="WE CALL IT"), "words: 2 words but text has 3"),
    (lambda r: r.update(words=[]), "words: missing or empty list"),
    (lambda r: r["words"][0].update(phones=[]), "words[0].phones: expected a non-empty list"),
    (lambda r: r.pop("audio"), "audio: missing or not a non-empty string"),
    (lambda r: r.update(id=10011), "id: missing or not a non-empty string"),
])
def test_record_problems_name_the_field(mutate, expected):
    record = good()
    mutate(record)
    problems = record_problems(record)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_record_that_is_not_an_object():
    assert record_problems([1, 2]) == ["record: expected a JSON object, got list"]


# --------------------------------------------------------------------------- read_manifest


def test_read_manifest_resolves_audio_against_its_folder(tmp_path, clip):
    path = write_lines(tmp_path / "m.jsonl", [good()])
    (utt,) = read_manifest(path, check_audio=True)
    assert utt.audio == "a.wav"
    assert utt.audio_path == clip.resolve()
    assert utt.words[1].phone_scores == [10, 9, 9]


def test_read_manifest_score_out_of_range_names_file_line_field(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [good(), good(id="b", scores={"fluency": 11})])
    assert read_problems(path) == [f"{path}:2: scores.fluency: score 11 is outside 0-10"]


def test_read_manifest_phone_count_mismatch(tmp_path):
    record = good()
    record["words"][0]["phone_scores"] = [10]
    path = write_lines(tmp_path / "m.jsonl", [record])
    (problem,) = read_problems(path)
    assert problem == f"{path}:1: words[0].phone_scores: 1 scores for 2 phones (W IY0)"


def test_read_manifest_duplicate_id(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [good(), good(id="other"), good()])
    assert read_problems(path) == [f"{path}:3: id: duplicate id '000010011' (first on line 1)"]


def test_read_manifest_bad_json_line(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [good(), '{"id": "x", "audio": ', good(id="c")])
    (problem,) = read_problems(path)
    assert problem.startswith(f"{path}:2: not valid JSON (")
    assert "column" in problem


def test_read_manifest_unreadable_audio_with_check_audio(tmp_path, clip):
    (tmp_path / "broken.wav").write_bytes(b"RIFF but not really")
    path = write_lines(tmp_path / "m.jsonl", [good(), good(id="b", audio="broken.wav"),
                                             good(id="c", audio="gone.wav")])
    read_manifest(path)  # without check_audio the files are not opened
    problems = read_problems(path, check_audio=True)
    assert len(problems) == 2
    assert problems[0].startswith(f"{path}:2: audio: cannot read audio ")
    assert "broken.wav" in problems[0]
    assert problems[1] == f"{path}:3: audio: audio file {tmp_path.resolve() / 'gone.wav'} does not exist"


def test_read_manifest_collects_every_problem_and_caps_the_message(tmp_path):
    records = [good(id=f"u{i}", scores={"accuracy": 11}) for i in range(25)]
    path = write_lines(tmp_path / "m.jsonl", records)
    with pytest.raises(ManifestProblems) as e:
        read_manifest(path)
    assert len(e.value.problems) == 25
    assert f"{path}:25: scores.accuracy" in e.value.problems[-1]
    assert "... and 5 more" in str(e.value)
    assert str(e.value).startswith("25 problem(s) in manifest:")


def test_read_manifest_missing_or_empty_file(tmp_path):
    with pytest.raises(ApaError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ApaError, match="holds no utterances"):
        read_manifest(tmp_path / "empty.jsonl")


def test_write_then_read_round_trip_is_byte_identical(tmp_path, clip):
    utt = utterance_from_dict(good())
    path = tmp_path / "out.jsonl"
    write_manifest(path, [utt])
    first = path.read_bytes()
    (again,) = read_manifest(path, check_audio=True)
    assert again == utt
    write_manifest(path, [again])
    assert path.read_bytes() == first
    assert not (tmp_path / "out.jsonl.tmp").exists()


def test_utterance_phone_sequence():
    utt = Utterance(id="x", audio="a.wav", text="WE CALL",
                    words=[Word("WE", ["W", "IY0"]), Word("CALL", ["K", "AO0", "L"])])
    assert utt.phone_sequence == "W IY0 - K AO0 L"


def test_round_score():
    assert round_score(1.8 * 5) == 9 and isinstance(round_score(1.8 * 5), int)
    assert round_score(8.3) == 8.3
    assert round_score(1.4 * 5) == 7
    assert round_score(10.0) == 10 and isinstance(round_score(10.0), int)

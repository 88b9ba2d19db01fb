"""speechocean762 reader and `apa prepare` / `apa validate` on a generated corpus in the official layout."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import apa.cli
from apa.data import so762, so762_hub
from apa.data.manifest import read_manifest
from apa.errors import ApaError

RATE = 16000

# id -> (split, speaker, text, words: (text, phones, phones-accuracy, accuracy, stress, total)).
# Phones alternate between the final release's list and the README's space-separated string.
FAKE = {
    "000010011": ("train", "0001", "WE CALL IT BEAR", [
        ("WE", ["W", "IY0"], [2, 2], 10, 10, 10),
        ("CALL", "K AO0 L", [2, 1.8, 1.8], 10, 10, 10),
        ("IT", ["IH0", "T"], [2, 2], 10, 10, 10),
        ("BEAR", "B EH0 R", [2, 1.2, 1.4], 6, 10, 6)]),
    "000010035": ("train", "0001", "ZERO THREE", [
        ("ZERO", ["Z", "IH1", "R", "OW0"], [2, 1.6, 2, 2], 8, 10, 8),
        ("THREE", "TH R IY0", [1, 2, 2], 7, 5, 7)]),
    "000020004": ("train", "0002", "GOOD", [
        ("GOOD", ["G", "UH0", "D"], [2, 2, 0], 5, 10, 5)]),
    "000030012": ("test", "0003", "MARK IS", [
        ("MARK", "M AA0 R K", [2, 2, 1.8, 2], 10, 10, 10),
        ("IS", ["IH0", "Z"], [2, 1.8], 10, 10, 10)]),
    "000030024": ("test", "0003", "KATE", [
        ("KATE", ["K", "EY0", "T"], [2, 2, 2], 9, 10, 9)]),
}
SENTENCE = {"000010011": (8, 10, 9, 9, 7), "000010035": (7, 8.3, 6, 7, 6), "000020004": (5, 10, 5, 6, 5),
            "000030012": (9, 10, 9, 9, 9), "000030024": (10, 10, 9, 8, 9)}
SPEAKERS = {"0001": (6, "m"), "0002": (37, "f"), "0003": (31, "m")}


def make_fake_so762(root: Path, ext: str = "WAV") -> Path:
    """A tiny speechocean762 tree in the official layout: Kaldi files, sine-wave clips, scores.json."""
    scores = {}
    for k, (utt_id, (split, speaker, text, words)) in enumerate(sorted(FAKE.items())):
        split_dir = root / split
        split_dir.mkdir(parents=True, exist_ok=True)
        rel = f"WAVE/SPEAKER{speaker}/{utt_id}.{ext}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        seconds = 0.5 + 0.25 * k
        t = np.arange(int(seconds * RATE)) / RATE
        sf.write(root / rel, 0.3 * np.sin(2 * np.pi * 220 * t), RATE, format="WAV", subtype="PCM_16")
        with (split_dir / "wav.scp").open("a") as f:
            f.write(f"{utt_id}\t{rel}\n")
        with (split_dir / "text").open("a") as f:
            f.write(f"{utt_id}\t{text}\n")
        with (split_dir / "utt2spk").open("a") as f:
            f.write(f"{utt_id} {speaker}\n")
        acc, comp, flu, pro, tot = SENTENCE[utt_id]
        scores[utt_id] = {"accuracy": acc, "completeness": comp, "fluency": flu, "prosodic": pro,
                          "text": text, "total": tot,
                          "words": [{"text": w, "phones": ph, "phones-accuracy": pa, "accuracy": a,
                                     "stress": s, "total": t_} for w, ph, pa, a, s, t_ in words]}
    for split in so762.SPLITS:
        speakers = sorted({spk for s, spk, *_ in FAKE.values() if s == split})
        (root / split / "spk2age").write_text("".join(f"{s}\t{SPEAKERS[s][0]}\n" for s in speakers))
        (root / split / "spk2gender").write_text("".join(f"{s}\t{SPEAKERS[s][1]}\n" for s in speakers))
    (root / "resource").mkdir(parents=True, exist_ok=True)
    (root / "resource" / "scores.json").write_text(json.dumps(scores, indent=2))
    return root


def run_apa(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    # Only this module's commands: a sibling command module that fails to import must not
    # break these tests (its own tests cover it).
    monkeypatch.setattr(apa.cli, "COMMANDS", {k: v for k, v in apa.cli.COMMANDS.items()
                                              if k in ("prepare", "validate")})
    capsys.readouterr()
    rc = apa.cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_fake_so762(tmp_path / "so762")


def prepare(monkeypatch, capsys, root: Path, out: Path, *extra: str):
    return run_apa(monkeypatch, capsys, "prepare", "so762", "--root", str(root), "--out", str(out), *extra)


def assert_one_error(rc: int, err: str, *fragments: str) -> str:
    assert rc == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# --------------------------------------------------------------------------- happy path


def test_prepare_writes_manifests_read_manifest_accepts(corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    rc, stdout, err = prepare(monkeypatch, capsys, corpus, out)
    assert rc == 0, err
    train = read_manifest(out / "so762_train.jsonl", check_audio=True)
    test = read_manifest(out / "so762_test.jsonl", check_audio=True)
    assert [u.id for u in train] == ["000010011", "000010035", "000020004"]
    assert [u.id for u in test] == ["000030012", "000030024"]
    first = train[0]
    assert first.text == "WE CALL IT BEAR"
    assert first.speaker == "0001"
    assert first.speaker_info == {"age": 6, "gender": "m"}
    assert first.scores == {"accuracy": 8, "fluency": 9, "prosody": 9, "completeness": 10, "total": 7}
    assert list(first.scores) == ["accuracy", "fluency", "prosody", "completeness", "total"]
    # phones given as a string are split; phone scores are x5 and stored as clean numbers
    assert first.words[1].phones == ["K", "AO0", "L"]
    assert first.words[1].phone_scores == [10, 9, 9]
    assert first.words[3].phone_scores == [10, 6, 7]
    assert all(isinstance(s, int) for w in first.words for s in w.phone_scores)
    assert train[1].scores["completeness"] == 8.3
    assert train[1].words[1].scores == {"accuracy": 7, "stress": 5, "total": 7}
    assert [u.duration for u in train] == [0.5, 0.75, 1.0]
    # audio path: relative to the manifest's folder, taken from wav.scp (extension kept)
    for utt in train + test:
        assert not Path(utt.audio).is_absolute()
        assert utt.audio.endswith(".WAV")
        assert utt.audio_path.resolve() == (corpus / "WAVE" / f"SPEAKER{utt.speaker}" / f"{utt.id}.WAV").resolve()
    # ids are strings in the JSON itself
    assert json.loads((out / "so762_train.jsonl").read_text().splitlines()[0])["id"] == "000010011"
    # durations reported per split on stdout
    assert "train: 3 utterances, 2 speakers" in stdout
    assert "test: 2 utterances, 1 speakers" in stdout
    assert "h, mean" in stdout and "max" in stdout


def test_prepare_twice_is_byte_identical(corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert prepare(monkeypatch, capsys, corpus, out)[0] == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert prepare(monkeypatch, capsys, corpus, out)[0] == 0
    second = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(first) == {"so762_train.jsonl", "so762_test.jsonl"}
    assert first == second


def test_audio_path_always_from_wav_scp(tmp_path, monkeypatch, capsys):
    corpus = make_fake_so762(tmp_path / "so762", ext="flac")  # not the release's .WAV name
    out = tmp_path / "out"
    rc, _, err = prepare(monkeypatch, capsys, corpus, out)
    assert rc == 0, err
    assert all(u.audio.endswith(".flac") for u in read_manifest(out / "so762_train.jsonl", check_audio=True))


def test_no_audio_check_leaves_durations_empty(tmp_path, monkeypatch, capsys):
    corpus = make_fake_so762(tmp_path / "so762")
    out = tmp_path / "out"
    rc, stdout, err = prepare(monkeypatch, capsys, corpus, out, "--no-audio-check")
    assert rc == 0, err
    assert all(u.duration is None for u in read_manifest(out / "so762_train.jsonl"))
    assert "durations not measured" in stdout


def test_read_so762_without_out_dir_gives_absolute_paths(corpus):
    splits = so762.read_so762(corpus, check_audio=False)
    assert sorted(splits) == ["test", "train"]
    assert all(Path(u.audio).is_absolute() and u.audio_path.is_file() for u in splits["train"])


# --------------------------------------------------------------------------- bad inputs


def _edit_scores(root: Path, edit) -> None:
    path = root / "resource" / "scores.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def test_missing_wav(corpus, tmp_path, monkeypatch, capsys):
    (corpus / "WAVE" / "SPEAKER0001" / "000010035.WAV").unlink()
    rc, _, err = prepare(monkeypatch, capsys, corpus, tmp_path / "out")
    line = assert_one_error(rc, err, "train/wav.scp:2", "000010035.WAV", "does not exist", "000010035")
    assert "nothing was written" in line
    assert not (tmp_path / "out").exists()


def test_unreadable_wav(corpus, tmp_path, monkeypatch, capsys):
    (corpus / "WAVE" / "SPEAKER0003" / "000030024.WAV").write_bytes(b"not audio at all")
    rc, _, err = prepare(monkeypatch, capsys, corpus, tmp_path / "out")
    assert_one_error(rc, err, "test/wav.scp:2", "audio", "cannot read audio", "000030024")


def test_truncated_scores_json(corpus, tmp_path, monkeypatch, capsys):
    path = corpus / "resource" / "scores.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    rc, _, err = prepare(monkeypatch, capsys, corpus, tmp_path / "out")
    assert_one_error(rc, err, "resource/scores.json", "not valid JSON at line", "column", "truncated")


def test_score_of_eleven(corpus, tmp_path, monkeypatch, capsys):
    _edit_scores(corpus, lambda d: d["000010011"]["words"][2].update(accuracy=11))
    rc, _, err = prepare(monkeypatch, capsys, corpus, tmp_path / "out")
    assert_one_error(rc, err, "scores.json", "utterance 000010011", "words[2] (IT).accuracy", "11",
                     "outside 0-10")


def test_sentence_score_of_eleven(corpus, tmp_path, monkeypatch, capsys):
    _edit_scores(corpus, lambda d: d["000030012"].update(prosodic=11))
    rc, _, err = prepare(monkeypatch, capsys, corpus, tmp_path / "out")
    assert_one_error(rc, err, "utterance 000030012", "prosodic", "11", "outside 0-10")


def test_phone_score_out_of_range(corpus, tmp_path, monkeypatch, capsys):
    _edit_scores(corpus, lambda d: d["000030024"]["words"][0].update({"phones-accuracy": [2, 2, 3]}))
    rc, _, err = prepare(monkeypatch, capsys, corpus, tmp_path / "out")
    assert_one_error(rc, err, "utterance 000030024", "words[0] (KATE).phones-accuracy[2] (T)", "outside 0-2")


def test_phone_count_mismatch(corpus, tmp_path, monkeypatch, capsys):
    _edit_scores(corpus, lambda d: d["000010011"]["words"][3].update({"phones-accuracy": [2, 1.2]}))
    rc, _, err = prepare(monkeypatch, capsys, corpus, tmp_path / "out")
    assert_one_error(rc, err, "utterance 000010011", "words[3] (BEAR).phones-accuracy",
                     "2 scores for 3 phones (B EH0 R)")


def test_utterance_missing_from_scores_json(corpus, tmp_path, monkeypatch, capsys):
    _edit_scores(corpus, lambda d: d.pop("000020004"))
    rc, _, err = prepare(monkeypatch, capsys, corpus, tmp_path / "out")
    assert_one_error(rc, err, "train/wav.scp:3", "utterance 000020004 has no entry in", "scores.json")


def test_bad_stress(corpus, tmp_path, monkeypatch, capsys):
    _edit_scores(corpus, lambda d: d["000030024"]["words"][0].update(stress=7))
    rc, _, err = prepare(monkeypatch, capsys, corpus, tmp_path / "out")
    assert_one_error(rc, err, "utterance 000030024", "stress", "must be 5 or 10")


def test_speaker_missing_from_utt2spk(corpus, tmp_path, monkeypatch, capsys):
    path = corpus / "test" / "utt2spk"
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if "000030024" not in line))
    rc, _, err = prepare(monkeypatch, capsys, corpus, tmp_path / "out")
    assert_one_error(rc, err, "test/utt2spk", "000030024", "is missing")


def test_malformed_kaldi_line_and_bad_age(corpus, tmp_path, monkeypatch, capsys):
    with (corpus / "train" / "wav.scp").open("a") as f:
        f.write("000099999\n")
    (corpus / "test" / "spk2age").write_text("0003\tthirty\n")
    rc, _, err = prepare(monkeypatch, capsys, corpus, tmp_path / "out")
    assert rc == 2 and "Traceback" not in err
    assert err.startswith("error: 2 problems in speechocean762; nothing was written:")
    assert "train/wav.scp:4: expected 'KEY VALUE'" in err
    assert "test/spk2age:1: age 'thirty'" in err


def test_all_problems_listed_at_once_and_capped(corpus, tmp_path, monkeypatch, capsys):
    def edit(d):
        for utt in d.values():
            for word in utt["words"]:
                word["accuracy"] = 11
    _edit_scores(corpus, edit)  # 10 words -> 10 problems
    for wav in (corpus / "WAVE").rglob("*.WAV"):
        wav.unlink()  # 5 more
    (corpus / "train" / "text").write_text("")  # 3 more: text lines missing (scores still bad -> none)
    rc, _, err = prepare(monkeypatch, capsys, corpus, tmp_path / "out")
    assert rc == 2 and "Traceback" not in err
    assert "15 problems in speechocean762" in err
    # 10 words, 5 files: listed in full (under the cap of 20)
    assert err.count("outside 0-10") == 10 and err.count("does not exist") == 5

    def edit_more(d):
        for utt in d.values():
            for word in utt["words"]:
                word["stress"] = 11
                word["total"] = 11
    _edit_scores(corpus, edit_more)
    rc, _, err = prepare(monkeypatch, capsys, corpus, tmp_path / "out")
    assert "35 problems" in err
    assert "... and 15 more" in err
    assert len(err.strip().splitlines()) == 1 + 20 + 1


def test_root_that_does_not_exist(tmp_path, monkeypatch, capsys):
    rc, _, err = prepare(monkeypatch, capsys, tmp_path / "nowhere", tmp_path / "out")
    assert_one_error(rc, err, "--root", "nowhere", "is not a folder")


def test_root_without_official_layout(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    rc, _, err = prepare(monkeypatch, capsys, tmp_path / "empty", tmp_path / "out")
    assert rc == 2 and "Traceback" not in err
    assert "scores.json: file does not exist" in err
    assert "train/wav.scp: file does not exist" in err


def test_prepare_needs_root_or_hub(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:
        run_apa(monkeypatch, capsys, "prepare", "so762", "--out", str(tmp_path))
    assert e.value.code == 2


# --------------------------------------------------------------------------- --hub


def _install_fake_datasets(monkeypatch, load_dataset) -> None:
    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset
    module.Audio = lambda decode=True: ("Audio", decode)
    monkeypatch.setitem(sys.modules, "datasets", module)


def test_hub_offline_gives_clear_error(tmp_path, monkeypatch, capsys):
    calls = []

    def load_dataset(name, split=None, **kwargs):
        calls.append((name, split))
        raise ConnectionError("Couldn't reach 'mispeech/speechocean762' on the Hub (LocalEntryNotFoundError)")

    _install_fake_datasets(monkeypatch, load_dataset)
    rc, _, err = run_apa(monkeypatch, capsys, "prepare", "so762", "--hub", "--out", str(tmp_path / "out"))
    assert_one_error(rc, err, "mispeech/speechocean762", "ConnectionError", "--root DIR", "local copy")
    assert calls == [("mispeech/speechocean762", "train")]
    assert not (tmp_path / "out").exists()


def test_hub_without_datasets_installed(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    rc, _, err = run_apa(monkeypatch, capsys, "prepare", "so762", "--hub", "--out", str(tmp_path / "out"))
    assert_one_error(rc, err, "pip install 'apa[hub]'", "--root DIR")


class _FakeHubSplit:
    def __init__(self, rows):
        self.rows = rows
        self.cast = None

    def cast_column(self, column, feature):
        assert column == "audio" and feature == ("Audio", False)
        self.cast = feature
        return self

    def __iter__(self):
        assert self.cast is not None, "audio must be read undecoded"
        return iter(self.rows)


def _hub_rows(split: str, rate: int = 44100) -> list[dict]:
    rows = []
    for utt_id, (s, speaker, text, words) in sorted(FAKE.items(), reverse=True):  # unsorted on purpose
        if s != split:
            continue
        buf = io.BytesIO()
        t = np.arange(int(0.5 * rate)) / rate
        sf.write(buf, 0.3 * np.sin(2 * np.pi * 220 * t), rate, format="WAV", subtype="PCM_16")
        acc, comp, flu, pro, tot = SENTENCE[utt_id]
        rows.append({"accuracy": acc, "completeness": float(comp), "fluency": flu, "prosodic": pro,
                     "text": text, "total": tot,
                     "words": [{"text": w, "phones": ph if isinstance(ph, list) else ph.split(),
                                "phones-accuracy": [float(x) for x in pa], "accuracy": a, "stress": st,
                                "total": tt, "mispronunciations": []} for w, ph, pa, a, st, tt in words],
                     "speaker": speaker, "gender": SPEAKERS[speaker][1], "age": SPEAKERS[speaker][0],
                     "audio": {"path": f"{utt_id}.wav", "bytes": buf.getvalue()}})
    return rows


def test_hub_writes_flac_and_manifests(tmp_path, monkeypatch, capsys):
    _install_fake_datasets(monkeypatch, lambda name, split=None: _FakeHubSplit(_hub_rows(split)))
    out = tmp_path / "out"
    rc, stdout, err = run_apa(monkeypatch, capsys, "prepare", "so762", "--hub", "--out", str(out))
    assert rc == 0, err
    train = read_manifest(out / "so762_train.jsonl", check_audio=True)
    assert [u.id for u in train] == ["000010011", "000010035", "000020004"]
    assert train[0].audio == "audio/000010011.flac"
    info = sf.info(str(train[0].audio_path))
    assert info.samplerate == 16000 and info.format == "FLAC"
    assert train[0].duration == pytest.approx(0.5)
    assert train[0].words[3].phone_scores == [10, 6, 7]
    assert train[0].speaker_info == {"age": 6, "gender": "m"}
    first = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert prepare_hub_again(monkeypatch, capsys, out) == 0
    assert first == {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}


def prepare_hub_again(monkeypatch, capsys, out: Path) -> int:
    return run_apa(monkeypatch, capsys, "prepare", "so762", "--hub", "--out", str(out))[0]


def test_hub_bad_row_is_reported(tmp_path, monkeypatch, capsys):
    def load_dataset(name, split=None):
        rows = _hub_rows(split)
        if split == "test":
            rows[0]["words"][0]["accuracy"] = 11
        return _FakeHubSplit(rows)

    _install_fake_datasets(monkeypatch, load_dataset)
    rc, _, err = run_apa(monkeypatch, capsys, "prepare", "so762", "--hub", "--out", str(tmp_path / "out"))
    assert_one_error(rc, err, "mispeech/speechocean762 test[0] (utterance 000030024)", "accuracy", "11")


def test_hub_error_while_iterating(tmp_path, monkeypatch, capsys):
    class Broken(_FakeHubSplit):
        def __iter__(self):
            raise OSError("connection reset by peer")

    _install_fake_datasets(monkeypatch, lambda name, split=None: Broken([]))
    rc, _, err = run_apa(monkeypatch, capsys, "prepare", "so762", "--hub", "--out", str(tmp_path / "out"))
    assert_one_error(rc, err, "connection reset", "--root DIR")


def test_hub_failure_is_an_apa_error_from_the_library(tmp_path, monkeypatch):
    _install_fake_datasets(monkeypatch, lambda name, split=None: (_ for _ in ()).throw(TimeoutError("timed out")))
    with pytest.raises(ApaError, match="--root DIR"):
        so762_hub.prepare_so762_hub(tmp_path / "out", log=lambda _: None)


# --------------------------------------------------------------------------- apa validate


def test_validate_prepared_manifest(corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert prepare(monkeypatch, capsys, corpus, out)[0] == 0
    rc, stdout, err = run_apa(monkeypatch, capsys, "validate", str(out / "so762_train.jsonl"), "--check-audio")
    assert rc == 0, err
    assert "3 utterances, 2 speakers, 7 words, 20 phones" in stdout
    assert "phone accuracy (all)" in stdout and "sentence prosody (all)" in stdout
    assert "multi" in stdout
    assert "durations: 3 clips, 0.00 h, mean 0.75 s, max 1.00 s" in stdout


def test_validate_custom_corpus_without_phone_scores(tmp_path, monkeypatch, capsys):
    clip = tmp_path / "a.flac"
    sf.write(clip, 0.1 * np.ones(RATE), RATE)
    record = {"id": "u1", "audio": "a.flac", "text": "HELLO WORLD", "speaker": "s1",
              "scores": {"accuracy": 7, "total": 6.5},
              "words": [{"text": "HELLO", "phones": ["HH", "AH0", "L", "OW1"], "scores": {"accuracy": 8},
                         "phone_scores": None},
                        {"text": "WORLD", "phones": ["W", "ER1", "L", "D"], "scores": {"accuracy": 6},
                         "phone_scores": None}]}
    path = tmp_path / "custom.jsonl"
    path.write_text(json.dumps(record) + "\n")
    rc, stdout, err = run_apa(monkeypatch, capsys, "validate", str(path), "--check-audio")
    assert rc == 0, err
    assert "trainable tasks (every field labelled): word_accuracy, sentence_accuracy, sentence_total" in stdout
    assert "durations: 1 clips, 0.00 h, mean 1.00 s" in stdout  # measured: the manifest had none


def test_validate_lists_every_problem(tmp_path, monkeypatch, capsys):
    good = {"id": "u1", "audio": "missing.wav", "text": "HI", "scores": {"accuracy": 7},
            "words": [{"text": "HI", "phones": ["HH", "AY1"], "scores": {"accuracy": 8}, "phone_scores": [10, 10]}]}
    lines = [json.dumps(good)]
    for i in range(2, 26):  # 24 bad lines, over the error's own cap of 20
        bad = dict(good, id=f"u{i}", scores={"accuracy": 11})
        lines.append(json.dumps(bad))
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rc, stdout, err = run_apa(monkeypatch, capsys, "validate", str(path), "--check-audio")
    assert rc == 2 and "Traceback" not in err
    problem_lines = [line for line in err.splitlines() if not line.startswith("error: ")]
    assert len(problem_lines) == 25  # every one, uncapped: 24 scores + 1 missing audio
    assert f"{path}:1: audio: audio file" in err
    assert f"{path}:25: scores.accuracy: score 11 is outside 0-10" in err
    assert err.strip().splitlines()[-1].startswith("error: 25 problem(s) in")


def test_validate_missing_manifest(tmp_path, monkeypatch, capsys):
    rc, _, err = run_apa(monkeypatch, capsys, "validate", str(tmp_path / "nope.jsonl"))
    assert rc == 2 and "nope.jsonl does not exist" in err and "Traceback" not in err


def test_read_so762_split_alone(corpus, tmp_path):
    (tmp_path / "m").mkdir()
    utts = so762.read_so762_split(corpus, "test", out_dir=tmp_path / "m")
    assert [u.id for u in utts] == ["000030012", "000030024"]
    assert utts[0].audio_path.is_file() and utts[0].duration == 1.25
    (corpus / "WAVE" / "SPEAKER0003" / "000030012.WAV").unlink()
    with pytest.raises(so762.CorpusProblems) as e:
        so762.read_so762_split(corpus, "test")
    assert len(e.value.problems) == 1 and "000030012.WAV" in e.value.problems[0]

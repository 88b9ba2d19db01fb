"""Scoring one recording against its text (apa.inference.score and `apa score`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from apa.cli import main
from apa.errors import ApaError
from apa.data.lexicon import UnknownWords, read_lexicon
from apa.data.textnorm import normalise_words
from apa.inference.score import ScoreResult, build_result, score_recordings, text_to_reference, text_to_utterance
from apa.tasks import TASKS




def check_schema(result) -> None:
    """Validate against the published schema (the one FastAPI documents), extra keys forbidden."""
    pydantic = pytest.importorskip("pydantic")
    pydantic.TypeAdapter(ScoreResult).validate_python(result, strict=True)


# --------------------------------------------------------------------------------------
# Text -> words and phones
# --------------------------------------------------------------------------------------

def test_normalise_words():
    assert normalise_words("We call it, bear!") == ["WE", "CALL", "IT", "BEAR"]
    assert normalise_words("Don\u2019t say 'naïve' -- well-known \"quotes\"; rock'n'roll.") == \
        ["DON'T", "SAY", "NAIVE", "WELL", "KNOWN", "QUOTES", "ROCK'N'ROLL"]
    assert normalise_words("I have 2 cats") == ["I", "HAVE", "TWO", "CATS"]
    assert normalise_words(" ... ") == []
    # issue 17: invisible characters and case folding split words ("HEL LO", "I STANBUL")
    assert normalise_words("Hel\u200blo wor\u00adld \ufeff\u0130stanbul a\u200db") == ["HELLO", "WORLD", "ISTANBUL", "AB"]


def test_a_number_too_long_to_say_is_refused_by_name():
    from apa.errors import ApaError

    with pytest.raises(ApaError, match="a 400-digit number .* type it in words or digit by digit"):
        normalise_words("I owe you " + "9" * 400)
    assert normalise_words("pi is 3.14159265358979323846264")[-1] == "FOUR"  # decimals are read digit by digit


def test_text_to_utterance_uses_first_cmudict_pronunciation():
    utt = text_to_utterance("We call it bear.")
    assert utt.text == "WE CALL IT BEAR"
    assert [w.text for w in utt.words] == ["WE", "CALL", "IT", "BEAR"]
    assert utt.phone_sequence == "W IY1 - K AO1 L - IH1 T - B EH1 R"  # stress marks as CMUdict has them
    assert text_to_utterance("a").words[0].phones == ["AH0"]  # first of AH0 / EY1
    assert text_to_utterance("don't").words[0].phones == ["D", "OW1", "N", "T"]


def test_unknown_words_are_all_named_when_guessing_is_off():
    with pytest.raises(UnknownWords) as info:
        text_to_reference("the xyzzy saw 42 qwzx xyzzy", guess=False)
    message = str(info.value)
    assert info.value.words == ["XYZZY", "QWZX"]  # 42 is read as FORTY TWO
    assert message.startswith("not in the CMU Pronouncing Dictionary: XYZZY, QWZX;")
    assert "check the spelling or give a --lexicon file" in message


@pytest.mark.parametrize("text", ["", "   ", "?!"])
def test_empty_text_is_an_error(text):
    with pytest.raises(ApaError, match="empty|holds no words"):
        text_to_utterance(text)


def test_lexicon_comes_before_cmudict(tmp_path):
    path = tmp_path / "lexicon.txt"
    path.write_text("# SO762 style\nBEAR\tB EH0 R\nBEAR\tB EH1 R\nXYZZY  Z IH1 Z IY0\n", encoding="utf-8")
    lexicon = read_lexicon(path)
    utt = text_to_utterance("we call it bear xyzzy", lexicon)
    assert utt.phone_sequence == "W IY1 - K AO1 L - IH1 T - B EH0 R - Z IH1 Z IY0"
    (tmp_path / "bad.txt").write_text("BEAR\n", encoding="utf-8")
    with pytest.raises(ApaError, match="bad.txt:1: .* has no phones"):
        read_lexicon(tmp_path / "bad.txt")
    with pytest.raises(ApaError, match="does not exist"):
        read_lexicon(tmp_path / "missing.txt")


# --------------------------------------------------------------------------------------
# Result schema
# --------------------------------------------------------------------------------------

def test_build_result_schema_and_practice_order():
    utt = text_to_utterance("we call it bear")
    task = TASKS["multi"]
    record = {
        "scores": {"sentence": {"accuracy": 8, "fluency": 9, "prosody": 9, "completeness": 10, "total": 8},
                   "words": [{"accuracy": 10, "stress": 10, "total": 10}, {"accuracy": 7, "stress": 10, "total": 7},
                             {"accuracy": 9, "stress": 10, "total": 9}, {"accuracy": 6, "stress": 10, "total": 6}],
                   "phones": [[10, 10], [8, 6, 9], [10, 10], [10, 5, 5]]},
        "expected": {"sentence": {"accuracy": 7.91234, "fluency": 8.8, "prosody": 8.9, "completeness": 9.9,
                                  "total": 8.1},
                     "words": [{"accuracy": 9.5, "stress": 9.9, "total": 9.5},
                               {"accuracy": 7.4, "stress": 9.8, "total": 7.5},
                               {"accuracy": 8.6, "stress": 9.7, "total": 8.7},
                               {"accuracy": 6.2, "stress": 9.9, "total": 6.3}],
                     "phones": [[9.8, 9.7], [8.1, 6.4, 8.7], [9.6, 9.9], [9.5, 5.4, 4.9]]},
        "problems": [],
    }
    result = build_result(utt, task, record, "constrained", threshold=8.0)
    check_schema(result)
    assert result["sentence"]["accuracy"] == {"score": 8, "expected": 7.912}
    assert result["words"][1] == {
        "word": "CALL", "phones": ["K", "AO1", "L"], "guessed": False,
        "scores": {"accuracy": {"score": 7, "expected": 7.4}, "stress": {"score": 10, "expected": 9.8},
                   "total": {"score": 7, "expected": 7.5}},
        "phone_scores": [{"phone": "K", "score": 8, "expected": 8.1}, {"phone": "AO1", "score": 6, "expected": 6.4},
                         {"phone": "L", "score": 9, "expected": 8.7}],
        "start": None, "end": None}  # no evidence given: where the word was said is unknown
    practice = result["practice"]
    assert practice["threshold"] == 8.0
    assert [(w["word"], w["expected"]) for w in practice["words"]] == [("BEAR", 6.2), ("CALL", 7.4)]
    assert [(p["word"], p["phone"], p["expected"]) for p in practice["phones"]] == \
        [("BEAR", "R", 4.9), ("BEAR", "EH1", 5.4), ("CALL", "AO1", 6.4)]
    assert practice["phones"][0] == {"word_index": 3, "word": "BEAR", "phone_index": 2, "phone": "R",
                                     "score": 5, "expected": 4.9}


def test_build_result_without_expected_and_task_levels():
    utt = text_to_utterance("the book")
    task = TASKS["word_accuracy"]
    record = {"scores": {"sentence": {}, "words": [{"accuracy": 9}, {"accuracy": None}],
                         "phones": [[None, None], [None, None, None]]},
              "problems": ["word 1 (BOOK): 0 scores, expected 1"]}
    result = build_result(utt, task, record, "free")
    check_schema(result)
    assert result["sentence"] == {}
    assert result["words"][0]["scores"] == {"accuracy": {"score": 9, "expected": None}}
    assert result["words"][1]["phone_scores"] == []
    assert result["practice"]["words"] == [] and result["practice"]["phones"] == []  # 9 >= 8; None unranked
    assert result["problems"] == ["word 1 (BOOK): 0 scores, expected 1"]


# --------------------------------------------------------------------------------------
# With the tiny model
# --------------------------------------------------------------------------------------

def test_score_recordings_constrained_batched_equals_one_by_one(tiny_model, make_sine):
    model, processor = tiny_model
    items = [(make_sine(0.7, 220.0), "I see."), (make_sine(0.6, 330.0), "I like it"),
             (np.stack([make_sine(0.8, 440.0), make_sine(0.8, 200.0)], axis=1), "the book")]  # stereo
    batched = score_recordings(model, processor, items, task="multi", batch_size=3)
    single = [score_recordings(model, processor, [item], task="multi")[0] for item in items]
    assert batched == single
    for result, (_, text) in zip(batched, items):
        check_schema(result)
        utt = text_to_utterance(text)
        assert result["text"] == utt.text and result["task"] == "multi" and result["decoding"] == "constrained"
        assert result["problems"] == []  # constrained output always parses
        assert set(result["sentence"]) == set(TASKS["multi"].sentence)
        assert [w["word"] for w in result["words"]] == [w.text for w in utt.words]
        for word, ref in zip(result["words"], utt.words):
            assert [p["phone"] for p in word["phone_scores"]] == ref.phones
            for value in [*word["scores"].values(), *word["phone_scores"]]:
                assert isinstance(value["score"], int) and 0 <= value["score"] <= 10
                assert 0.0 <= value["expected"] <= 10.0
            assert word["scores"]["stress"]["score"] in (5, 10)


def test_score_recordings_checks_inputs_before_the_model(tiny_model, make_sine):
    model, processor = tiny_model
    good = make_sine(0.5)
    with pytest.raises(ApaError, match="item 1: the reference text '[?]!' holds no words"):
        score_recordings(model, processor, [(good, "the book"), (good, "?!")])
    with pytest.raises(ApaError, match="silent"):
        score_recordings(model, processor, [(np.zeros(8000, dtype=np.float32), "the book")])
    with pytest.raises(ApaError, match="empty"):
        score_recordings(model, processor, [(np.zeros(0, dtype=np.float32), "the book")])
    with pytest.raises(ApaError, match="31.0 s long"):
        score_recordings(model, processor, [(make_sine(31.0), "the book")])
    with pytest.raises(ApaError, match="unknown decoding mode 'beam'"):
        score_recordings(model, processor, [(good, "the book")], decoding="beam")


# --------------------------------------------------------------------------------------
# `apa score`
# --------------------------------------------------------------------------------------

def test_score_cli_wav_and_stereo_flac(tiny_model_dir, make_sine, write_wav, tmp_path, capsys):
    import soundfile as sf

    wav = write_wav(tmp_path / "bear.wav", make_sine(1.0, 220.0))
    assert main(["score", "--model", str(tiny_model_dir), "--audio", str(wav), "--text", "We call it bear.",
                 "--device", "cpu", "--dtype", "fp32"]) == 0
    result = json.loads(capsys.readouterr().out)
    check_schema(result)
    assert result["text"] == "WE CALL IT BEAR" and result["problems"] == []
    assert [p["phone"] for p in result["words"][3]["phone_scores"]] == ["B", "EH1", "R"]

    t = np.arange(int(44100 * 0.8)) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], axis=1)
    flac = tmp_path / "book.flac"
    sf.write(str(flac), stereo, 44100, format="FLAC")
    assert main(["score", "--model", str(tiny_model_dir), "--audio", str(flac), "--text", "the book",
                 "--task", "word_accuracy", "--compact", "--device", "cpu", "--dtype", "fp32"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    result = json.loads(out)
    check_schema(result)
    assert result["task"] == "word_accuracy" and result["sentence"] == {}
    assert [w["word"] for w in result["words"]] == ["THE", "BOOK"]
    assert all(set(w["scores"]) == {"accuracy"} and w["phone_scores"] == [] for w in result["words"])


def _bad_inputs(tmp_path, make_sine, write_wav):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    return {
        "missing": (tmp_path / "nope.wav", "the book", "nope.wav does not exist"),
        "unreadable": (junk, "the book", "cannot read audio"),
        "empty": (empty, "the book", "is empty"),
        "no samples": (write_wav(tmp_path / "zero.wav", np.zeros(0, dtype=np.float32)), "the book", "empty"),
        "silent": (write_wav(tmp_path / "silent.wav", np.zeros(16000, dtype=np.float32)), "the book", "silent"),
        "unknown word": (write_wav(tmp_path / "ok.wav", make_sine(0.5)), "the blorptastic book",
                         "not in the CMU Pronouncing Dictionary: BLORPTASTIC;"),  # with --no-guess
    }


@pytest.mark.parametrize("case", ["missing", "unreadable", "empty", "no samples", "silent", "unknown word"])
def test_score_cli_bad_input_one_line_exit_2(case, tmp_path, make_sine, write_wav, capsys):
    audio, text, expected = _bad_inputs(tmp_path, make_sine, write_wav)[case]
    # The model is never loaded for a bad input: a model path that does not exist proves it.
    code = main(["score", "--model", str(tmp_path / "no-model"), "--audio", str(audio), "--text", text, "--no-guess"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert expected in lines[0]
    assert "Traceback" not in captured.err


def test_score_cli_clip_longer_than_the_models_window(tiny_model_dir, tmp_path, make_sine, write_wav, capsys):
    audio = write_wav(tmp_path / "long.wav", make_sine(31.0))
    code = main(["score", "--model", str(tiny_model_dir), "--audio", str(audio), "--text", "the book"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "31.0 s long" in err[0] and "at most 30 s" in err[0]


# --------------------------------------------------------------------------------------
# `apa score`: no traceback for any input, strictly valid JSON (issue 10, cases 3 and 9)
# --------------------------------------------------------------------------------------

def _env() -> dict:
    import os
    from pathlib import Path

    return dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"), CUDA_VISIBLE_DEVICES="")


def _run_cli(*args: str, stdin: str | None = None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "apa.cli", "score", *args], capture_output=True, text=True,
                          input=stdin, env=_env(), timeout=120)


def test_score_cli_text_from_a_file_and_stdin_and_a_closed_pipe(tiny_model_dir, tmp_path, make_sine, write_wav):
    import subprocess
    import sys

    audio = write_wav(tmp_path / "a.wav", make_sine(1.0))
    (tmp_path / "text.txt").write_text("I have 3 cats.\n", encoding="utf-8")
    common = ["--model", str(tiny_model_dir), "--audio", str(audio), "--device", "cpu", "--dtype", "fp32"]
    from_file = _run_cli(*common, "--text-file", str(tmp_path / "text.txt"), "--compact")
    from_stdin = _run_cli(*common, "--text", "-", "--compact", stdin="I have 3 cats.")
    assert from_file.returncode == 0 and from_stdin.returncode == 0, from_file.stderr
    assert json.loads(from_file.stdout)["text"] == json.loads(from_stdin.stdout)["text"] == "I HAVE THREE CATS"
    # `apa score ... | true`: the reader is gone before the JSON is printed; no BrokenPipeError traceback
    command = [sys.executable, "-m", "apa.cli", "score", *common, "--text", "the book"]
    pipe = subprocess.run(" ".join(f"'{c}'" for c in command) + " | true", shell=True, capture_output=True,
                          text=True, env=_env(), timeout=120)
    assert "Traceback" not in pipe.stderr and "BrokenPipeError" not in pipe.stderr, pipe.stderr


@pytest.mark.parametrize("extra, message", [
    (["--device", "cuda"], "--device cuda: this machine has no CUDA GPU"),
    (["--text-file", "/nonexistent/text.txt"], "text file /nonexistent/text.txt does not exist"),
])
def test_score_cli_device_and_text_file_errors_are_one_line(tmp_path, make_sine, write_wav, extra, message):
    audio = write_wav(tmp_path / "a.wav", make_sine(1.0))
    args = ["--model", str(tmp_path / "no-model"), "--audio", str(audio), *extra]
    if "--text-file" not in extra:
        args += ["--text", "the book"]
    result = _run_cli(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr


def test_score_cli_folder_audio_is_named_a_folder(tmp_path, capsys):
    code = main(["score", "--model", str(tmp_path / "no-model"), "--audio", str(tmp_path), "--text", "the book"])
    assert code == 2 and "is a folder, not an audio file" in capsys.readouterr().err


def test_non_finite_scores_become_null_so_the_json_is_strict():
    """A broken model's NaN scores would have printed NaN, which is not JSON."""
    utt = text_to_utterance("the book")
    nan = float("nan")
    record = {"scores": {"sentence": {"accuracy": nan}, "words": [{"accuracy": 9}, {"accuracy": float("inf")}],
                         "phones": [[nan, 5], [5, 5, 5]]},
              "expected": {"sentence": {"accuracy": nan}, "words": [{"accuracy": nan}, {"accuracy": 7.0}],
                           "phones": [[nan, 5.0], [5.0, 5.0, 5.0]]}, "problems": []}
    result = build_result(utt, TASKS["multi"], record, "constrained")
    text = json.dumps(result, allow_nan=False)  # raises on NaN
    assert json.loads(text)["sentence"]["accuracy"] == {"score": None, "expected": None}


def test_score_cli_refuses_an_endless_flac_before_the_model_within_300_mb(tmp_path):
    """Issue 17: a 546 KB FLAC with no length field reached 1.82 GB and 13 s in `apa score`
    before it was refused. Now it is decoded within the caps before torch is imported:
    71 MiB peak RSS measured for the whole process (bench/audio_decode_memory.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import audio_inputs

    path = tmp_path / "no_length.flac"
    path.write_bytes(audio_inputs.without_length(audio_inputs.flac_silence(3600)))
    # VmHWM, the peak of this process's memory (ru_maxrss would carry pytest's peak over fork + exec)
    code = ("import re, sys; from apa import cli; status = cli.main(sys.argv[1:]); print(re.search("
            "r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1), file=sys.stderr); sys.exit(status)")
    proc = subprocess.run([sys.executable, "-c", code, "score", "--model", str(tmp_path / "no-model"), "--audio",
                           str(path), "--text", "hello"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "longer than 300 s" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert int(lines[-1]) < 300 * 1024, lines[-1]  # KiB

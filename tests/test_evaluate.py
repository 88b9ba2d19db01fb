"""apa.evaluation and `apa evaluate`, on small utterances built in code."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from apa.cli import main
from apa.data.manifest import Utterance, Word, write_manifest
from apa.evaluation.evaluate import evaluate
from apa.evaluation.markdown import render_markdown
from apa.evaluation.match import match_predictions, train_means_from
from apa.predictions import read_predictions
from apa.errors import ApaError
from apa.targets import format_scores, reference_scores
from apa.tasks import TASKS

MULTI = TASKS["multi"]
WORDS = [("WE", ["W", "IY0"]), ("CALL", ["K", "AO0", "L"]), ("IT", ["IH0", "T"]), ("BEAR", ["B", "EH0", "R"])]


def make_utterance(k: int, phone_scores: bool = True) -> Utterance:
    """Utterance k with varied, deterministic scores (completeness always 10, as in SO762)."""
    words = []
    for i, (text, phones) in enumerate(WORDS[: 2 + k % 3]):
        acc = (k + 3 * i) % 11
        words.append(Word(text=text, phones=list(phones),
                          scores={"accuracy": acc, "stress": 10 if (k + i) % 3 else 5, "total": (acc + k) % 11},
                          phone_scores=[((k + i + j) % 6) * 2 for j in range(len(phones))] if phone_scores else None))
    text = " ".join(w.text for w in words)
    return Utterance(id=f"u{k:03d}", audio=f"u{k:03d}.wav", text=text, words=words,
                     scores={"accuracy": k % 11, "fluency": (2 * k) % 11, "prosody": (3 * k + 1) % 11,
                             "completeness": 10, "total": (k * 5 + 2) % 11})


@pytest.fixture
def refs():
    return [make_utterance(k) for k in range(12)]


def perfect_predictions(refs, task=MULTI):
    return [{"id": u.id, "output": format_scores(u, task)} for u in refs]


def test_perfect_output_is_parsed_and_scores_one(refs):
    result = evaluate(perfect_predictions(refs), refs, MULTI, train_means=None, n_bootstrap=0)
    for level, aspect in MULTI.fields:
        m = result[level][aspect]
        if aspect == "completeness":
            # Perfect predictions of an all-10 field: both sides are constant.
            assert math.isnan(m["pcc"]) and m["nan_reason"] == (
                "reference scores have zero variance (all 10); predictions have zero variance (all 10)")
            continue
        assert m["pcc"] == pytest.approx(1.0) and m["scc"] == pytest.approx(1.0), (level, aspect)
        assert m["rmse"] == 0 and m["coverage"] == 1
    assert result["parse"]["with_problems"] == 0 and result["parse"]["missing"] == 0
    assert result["phone"]["accuracy"]["n"] == sum(len(w.phones) for u in refs for w in u.words)
    assert result["word"]["accuracy"]["n"] == sum(len(u.words) for u in refs)
    assert result["sentence"]["accuracy"]["n"] == len(refs)
    assert result["fill"] == "reference mean (no training manifest given)"


def test_items_are_matched_by_position(refs):
    """Pooled items follow reference order, whatever order the prediction lines come in."""
    rng = np.random.default_rng(0)
    preds = []
    for u in refs:
        s = reference_scores(u)
        s.words = [{a: float(rng.integers(0, 11)) for a in ("accuracy", "stress", "total")} for _ in u.words]
        s.phones = [[float(rng.integers(0, 11)) for _ in w.phones] for w in u.words]
        preds.append({"id": u.id, "output": "ignored when scores is given", "scores": s.to_dict()})
    matched = match_predictions(list(reversed(preds)), refs, MULTI)
    expected_words = [w["accuracy"] for p in preds for w in p["scores"]["words"]]
    expected_phones = [v for p in preds for word in p["scores"]["phones"] for v in word]
    assert matched.fields[("word", "accuracy")].pred == expected_words
    assert matched.fields[("word", "accuracy")].ref == [w.scores["accuracy"] for u in refs for w in u.words]
    assert matched.fields[("phone", "accuracy")].pred == expected_phones
    assert matched.fields[("phone", "accuracy")].cluster == [k for k, u in enumerate(refs)
                                                             for w in u.words for _ in w.phones]
    assert matched.parse["from_scores"] == len(refs)
    assert matched.parse["with_problems"] == 0

    result = evaluate(preds, refs, MULTI, train_means=None, n_bootstrap=0)
    ref_words = [w.scores["accuracy"] for u in refs for w in u.words]
    assert result["word"]["accuracy"]["pcc"] == pytest.approx(np.corrcoef(expected_words, ref_words)[0, 1])


def test_problems_recorded_with_scores_are_counted(refs):
    """`apa predict` writes parsed scores with the parser's problems; those must still count."""
    preds = [{"id": u.id, "output": "Sentence Scores: 8", "scores": {"sentence": {"accuracy": 8}},
              "problems": ["sentence: 1 scores, expected 5", "missing 'Word Scores:' line"]} for u in refs]
    result = evaluate(preds, refs, MULTI, train_means=None, n_bootstrap=0)
    parse = result["parse"]
    assert parse["with_problems"] == len(refs) and parse["from_scores"] == len(refs)
    assert {p["problem"]: p["outputs"] for p in parse["top_problems"]}["missing 'Word Scores:' line"] == len(refs)
    assert result["sentence"]["accuracy"]["n_covered"] == len(refs)
    assert result["sentence"]["fluency"]["n_covered"] == 0


def test_missing_and_unparsable_predictions_are_filled_with_train_means(refs):
    preds = perfect_predictions(refs)
    del preds[0]  # u000: no line at all
    preds[0]["output"] = "I think this speaker is pretty good."  # u001: nothing parsable
    # u002: a word line with one garbled score; the rest parses.
    preds[1]["output"] = preds[1]["output"].replace("Word Scores: WE/", "Word Scores: WE/x", 1)
    train = [make_utterance(k) for k in range(100, 130)]
    means = train_means_from(train, MULTI)
    result = evaluate(preds, refs, MULTI, train_means=means, n_bootstrap=0)

    n_words = sum(len(u.words) for u in refs)
    lost_words = len(refs[0].words) + len(refs[1].words) + 1  # two whole utterances + one word
    m = result["word"]["accuracy"]
    assert m["n"] == n_words and m["n_covered"] == n_words - lost_words
    assert m["coverage"] == pytest.approx((n_words - lost_words) / n_words)
    assert m["fill_value"] == pytest.approx(np.mean([w.scores["accuracy"] for u in train for w in u.words]))
    assert m["fill_source"] == "train"
    assert result["sentence"]["fluency"]["n_covered"] == len(refs) - 2
    assert result["fill"] == "training-set mean"

    # Headline = filled values; covered = the predicted items only (here: perfect).
    ref_words = np.array([w.scores["accuracy"] for u in refs for w in u.words], dtype=float)
    filled = ref_words.copy()
    first = len(refs[0].words) + len(refs[1].words)
    filled[:first + 1] = m["fill_value"]
    assert m["pcc"] == pytest.approx(np.corrcoef(filled, ref_words)[0, 1], abs=1e-9)
    assert m["pcc_covered"] == pytest.approx(1.0) and m["rmse_covered"] == 0

    parse = result["parse"]
    assert parse["missing"] == 1 and parse["missing_examples"] == ["u000"]
    assert parse["with_problems"] == 2
    problems = {p["problem"] for p in parse["top_problems"]}
    assert "missing 'Sentence Scores:' line" in problems
    assert "word N (...) accuracy: '...' is not a number" in problems


def test_phone_rmse_on_both_scales(refs):
    preds = []
    for u in refs:
        s = reference_scores(u)
        s.phones = [[min(v + 5, 10) for v in word] for word in s.phones]
        preds.append({"id": u.id, "output": "", "scores": s.to_dict()})
    result = evaluate(preds, refs, MULTI, train_means=None, n_bootstrap=0)
    ref = np.array([v for u in refs for w in u.words for v in w.phone_scores], dtype=float)
    rmse = math.sqrt(np.mean((np.minimum(ref + 5, 10) - ref) ** 2))
    assert result["phone"]["accuracy"]["rmse"] == pytest.approx(rmse)
    assert result["phone"]["accuracy"]["rmse_0_2"] == pytest.approx(rmse / 5)


def test_expected_scores_are_a_second_column(refs):
    preds = perfect_predictions(refs)
    for k, (p, u) in enumerate(zip(preds, refs)):
        if k == 3:
            continue  # no expected scores on this line: filled like a missing prediction
        s = reference_scores(u)
        s.sentence = {a: v + 0.25 if k % 2 else v - 0.25 for a, v in s.sentence.items()}
        p["expected"] = s.to_dict()
    result = evaluate(preds, refs, MULTI, train_means=None, n_bootstrap=0)
    assert set(result["expected"]) == {"sentence", "word", "phone"}
    m = result["expected"]["sentence"]["fluency"]
    assert m["n_covered"] == len(refs) - 1
    assert m["pcc_covered"] < 1 and m["pcc_covered"] > 0.95
    assert result["sentence"]["fluency"]["pcc"] == pytest.approx(1.0)
    assert result["parse"]["expected_lines"] == len(refs) - 1
    assert "ours, expected score" in render_markdown(result, MULTI)


def test_reference_without_phone_scores_is_skipped():
    refs = [make_utterance(k, phone_scores=k % 2 == 0) for k in range(8)]
    result = evaluate(perfect_predictions([make_utterance(k) for k in range(8)]), refs, MULTI,
                      train_means=None, n_bootstrap=0)
    labelled = [u for u in refs if u.words[0].phone_scores is not None]
    assert result["phone"]["accuracy"]["n"] == sum(len(w.phones) for u in labelled for w in u.words)


def test_unknown_ids_warn_but_no_overlap_is_an_error(refs):
    preds = perfect_predictions(refs) + [{"id": "stranger", "output": ""}]
    result = evaluate(preds, refs, MULTI, train_means=None, n_bootstrap=0)
    assert result["parse"]["unknown_ids"] == 1 and result["parse"]["unknown_id_examples"] == ["stranger"]
    with pytest.raises(ApaError, match="none of the 1 prediction ids"):
        evaluate([{"id": "stranger", "output": ""}], refs, MULTI, train_means=None, n_bootstrap=0)


def test_single_aspect_task_markdown_shows_only_its_columns(refs):
    task = TASKS["sentence_fluency"]
    result = evaluate(perfect_predictions(refs, task), refs, task, train_means=None, n_bootstrap=0)
    assert set(result) >= {"sentence"} and "word" not in result
    md = render_markdown(result, task)
    header = next(line for line in md.splitlines() if line.startswith("| system"))
    assert header == "| system | utt flu |"
    assert "| paper FT | 0.79 / 0.78 |" in md and "| paper DPO | 0.79 / 0.78 |" in md
    assert "zero-shot" not in md  # no number for this column


# --- the command, end to end ---------------------------------------------------------------


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_cli_writes_metrics_markdown_and_plots(tmp_path, refs, capsys):
    write_manifest(tmp_path / "so762_test.jsonl", refs)
    write_manifest(tmp_path / "so762_train.jsonl", [make_utterance(k) for k in range(50, 70)])
    preds = perfect_predictions(refs)[1:]
    preds[0]["expected"] = reference_scores(refs[1]).to_dict()
    write_jsonl(tmp_path / "pred.jsonl", preds)
    out = tmp_path / "eval"
    code = main(["evaluate", "--pred", str(tmp_path / "pred.jsonl"), "--ref", str(tmp_path / "so762_test.jsonl"),
                     "--task", "multi", "--out", str(out), "--bootstrap", "20"])
    assert code == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["sentence"]["completeness"]["pcc"] is None  # NaN -> null, with its reason
    assert data["sentence"]["completeness"]["nan_reason"].startswith("reference scores have zero variance")
    assert data["fill"] == f"training-set mean ({tmp_path / 'so762_train.jsonl'})"  # found beside --ref
    assert data["inputs"]["train"] == str(tmp_path / "so762_train.jsonl")
    assert data["parse"]["missing"] == 1
    assert len(data["word"]["total"]["pcc_ci"]) == 2
    assert "expected" in data

    md = (out / "metrics.md").read_text()
    assert "| system | phone RMSE (0-2) | phone | word acc | word stress | word total | utt acc | utt flu " \
           "| utt pro | utt comp | utt total |" in md
    assert "| GOPT | 0.29 | 0.61 / - |" in md and "| **ours** |" in md and "human" in md
    assert "1 references without a prediction" in md
    printed = capsys.readouterr()
    assert "| **ours** |" in printed.out
    assert "1 of 12 reference utterances have no prediction" in printed.err

    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert len(pngs) == 2 * len(MULTI.fields)  # predicted and expected, per field
    assert "phone_accuracy.png" in pngs and "expected_sentence_total.png" in pngs
    assert (out / "plots" / "phone_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_without_train_manifest_records_reference_fill(tmp_path, refs):
    write_manifest(tmp_path / "dev.jsonl", refs)
    write_jsonl(tmp_path / "pred.jsonl", perfect_predictions(refs, TASKS["word_accuracy"]))
    out = tmp_path / "eval"
    assert main(["evaluate", "--pred", str(tmp_path / "pred.jsonl"), "--ref", str(tmp_path / "dev.jsonl"),
                     "--task", "word_accuracy", "--out", str(out), "--bootstrap", "0", "--no-plots"]) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["fill"] == "reference mean (no training manifest given)"
    assert list(data["word"]) == ["accuracy"] and "sentence" not in data
    assert not (out / "plots").exists()


def test_cli_bad_jsonl_line_exits_2_naming_file_and_line(tmp_path, refs, capsys):
    write_manifest(tmp_path / "ref.jsonl", refs)
    pred = tmp_path / "pred.jsonl"
    pred.write_text(json.dumps({"id": "u000", "output": ""}) + "\n" + '{"id": "u001", "outp\n', encoding="utf-8")
    code = main(["evaluate", "--pred", str(pred), "--ref", str(tmp_path / "ref.jsonl"), "--task", "multi",
                     "--out", str(tmp_path / "eval")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{pred}:2: not valid JSON" in err and "fix or delete" in err


@pytest.mark.parametrize("record, message", [
    ({"output": "x"}, "id: missing"),
    ({"id": "u000"}, 'neither "output" nor "scores"'),
    ({"id": "u000", "output": 3}, "output: expected text"),
    ({"id": "u000", "scores": {"words": "bad"}}, "scores.words"),
])
def test_bad_prediction_records(tmp_path, record, message):
    pred = tmp_path / "pred.jsonl"
    write_jsonl(pred, [record])
    with pytest.raises(ApaError, match=message) as info:
        read_predictions(pred)
    assert f"{pred}:1:" in str(info.value)


def test_duplicate_ids_and_missing_file(tmp_path, refs, capsys):
    pred = tmp_path / "pred.jsonl"
    write_jsonl(pred, [{"id": "u000", "output": ""}, {"id": "u000", "output": ""}])
    with pytest.raises(ApaError, match="duplicate id 'u000' \\(first on line 1\\)"):
        read_predictions(pred)
    write_manifest(tmp_path / "ref.jsonl", refs)
    code = main(["evaluate", "--pred", str(tmp_path / "nope.jsonl"), "--ref", str(tmp_path / "ref.jsonl"),
                     "--task", "multi", "--out", str(tmp_path / "eval")])
    assert code == 2
    assert "nope.jsonl does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("name, sibling", [("so762_test.jsonl", "so762_train.jsonl"), ("test.jsonl", "train.jsonl"),
                                           ("a-test.jsonl", "a-train.jsonl"), ("contest.jsonl", None)])
def test_sibling_train_manifest(tmp_path, name, sibling):
    from apa.commands.evaluate import sibling_train_manifest

    for candidate in ("so762_train.jsonl", "train.jsonl", "a-train.jsonl", "contrain.jsonl"):
        (tmp_path / candidate).write_text("")
    found = sibling_train_manifest(tmp_path / name)
    assert found == (None if sibling is None else tmp_path / sibling)

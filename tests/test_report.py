"""`apa report`: evaluations of several runs -> the paper's Tables 1-3 (apa.evaluation.report).

The run folders hold real `apa evaluate` output, made from small hand-built predictions.
"""

from __future__ import annotations

import json

import pytest
import yaml

from apa.cli import main
from apa.data.manifest import Utterance, Word, write_manifest
from apa.errors import ApaError
from apa.evaluation.report import build_report
from apa.evaluation.runs import find_metrics, load_run
from apa.targets import ScoreSet, format_scores, reference_scores
from apa.tasks import TASKS

WORDS = [("WE", ["W", "IY0"]), ("CALL", ["K", "AO0", "L"]), ("IT", ["IH0", "T"]), ("BEAR", ["B", "EH0", "R"])]




def make_utterance(k: int) -> Utterance:
    words = []
    for i, (text, phones) in enumerate(WORDS[: 2 + k % 3]):
        acc = (k + 3 * i) % 11
        words.append(Word(text=text, phones=list(phones),
                          scores={"accuracy": acc, "stress": 10 if (k + i) % 3 else 5, "total": (acc + k) % 11},
                          phone_scores=[((k + i + j) % 6) * 2 for j in range(len(phones))]))
    return Utterance(id=f"u{k:03d}", audio=f"u{k:03d}.wav", text=" ".join(w.text for w in words), words=words,
                     scores={"accuracy": k % 11, "fluency": (2 * k) % 11, "prosody": (3 * k + 1) % 11,
                             "completeness": 10, "total": (k * 5 + 2) % 11})


def noisy(utt: Utterance, k: int) -> ScoreSet:
    """The reference scores, nudged so that the correlations are high but not 1."""
    ref = reference_scores(utt)
    def bump(v, j):
        return None if v is None else min(10, max(0, v + ((k + j) % 3) - 1))

    return ScoreSet(sentence={a: (v if a == "completeness" else bump(v, i))
                              for i, (a, v) in enumerate(ref.sentence.items())},
                    words=[{a: (v if a == "stress" else bump(v, i + j)) for j, (a, v) in enumerate(w.items())}
                           for i, w in enumerate(ref.words)],
                    phones=[[bump(v, i + j) for j, v in enumerate(p)] for i, p in enumerate(ref.phones)])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_data")
    refs = [make_utterance(k) for k in range(16)]
    write_manifest(root / "so762_test.jsonl", refs)
    write_manifest(root / "so762_train.jsonl", [make_utterance(k) for k in range(40, 60)])
    return root, refs


def make_run(data, runs, name, task_name, config=None, records=None, eval_dir="eval"):
    """A run folder: config.yaml (when given), pred.jsonl, and `apa evaluate` output in eval_dir."""
    root, refs = data
    run = runs / name
    run.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (run / "config.yaml").write_text(yaml.safe_dump({"task": task_name, **config}))
    task = TASKS[task_name]
    if records is None:
        records = [{"id": u.id, "output": format_scores(u, task, noisy(u, k))} for k, u in enumerate(refs)]
    (run / "pred.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = run / eval_dir if eval_dir else run
    assert main(["evaluate", "--pred", str(run / "pred.jsonl"), "--ref", str(root / "so762_test.jsonl"),
                 "--task", task_name, "--out", str(out), "--bootstrap", "0", "--no-plots"]) == 0
    return run


def table(markdown: str, number: int) -> list[str]:
    """The rows of Table ``number`` in the report."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"## Table {number}:"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def row(rows: list[str], name: str) -> list[str]:
    found = [r for r in rows if r.split("|")[1].strip() == name]
    assert len(found) == 1, (name, rows)
    return [c.strip() for c in found[0].strip("|").split("|")]


def test_report_tables_1_and_3_with_expected_row_and_zero_shot(data, tmp_path, capsys):
    root, refs = data
    runs = tmp_path / "runs"

    # Table 1: an SFT run whose predictions also carry continuous expected scores.
    task = TASKS["multi"]
    records = []
    for k, u in enumerate(refs):
        scores = noisy(u, k)
        expected = noisy(u, k + 1).to_dict()
        expected["sentence"]["completeness"] = 9.5 + 0.01 * k  # varies: a number, not NaN
        records.append({"id": u.id, "output": format_scores(u, task, scores), "expected": expected})
    sft = make_run(data, runs, "multi_sft", "multi", {"method": "sft", "train": [{"path": "a"}]}, records)
    simpo = make_run(data, runs, "multi_simpo", "multi", {"method": "simpo", "train": [{"path": "a"}]},
                     eval_dir="")  # metrics.json directly in the run folder
    # Table 3: two DPO single-aspect runs -> one row; a zero-shot word-accuracy run (no config).
    dpo_word = make_run(data, runs, "word_dpo", "word_accuracy", {"method": "dpo"})
    dpo_flu = make_run(data, runs, "flu_dpo", "sentence_fluency", {"method": "dpo"}, eval_dir="eval_free")
    zs_records = [{"id": u.id, "output": "I cannot score audio." if k % 4 else format_scores(u, TASKS["word_accuracy"])}
                  for k, u in enumerate(refs)]
    zero = make_run(data, runs, "zero_shot", "word_accuracy", None, zs_records)

    out = tmp_path / "report" / "tables.md"
    capsys.readouterr()
    assert main(["report", str(sft), str(simpo), str(dpo_word), str(dpo_flu), str(zero), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    md = out.read_text()
    assert md == printed
    assert "## Table 2" not in md  # no run of ours for it

    t1 = table(md, 1)
    assert t1[0].split("|")[1:-1] == [" system ", " phone RMSE (0-2) ", " phone ", " word acc ", " word stress ",
                                      " word total ", " utt acc ", " utt flu ", " utt pro ", " utt comp ",
                                      " utt total "]
    # Published rows beside ours.
    assert row(t1, "paper FT")[1:] == ["0.39", "0.38 / 0.34", "0.51 / 0.46", "0.11 / 0.11", "0.52 / 0.46",
                                       "0.69 / 0.63", "0.74 / 0.70", "0.73 / 0.67", "NaN", "0.72 / 0.67"]
    assert row(t1, "GOPT")[2] == "0.61 / -" and row(t1, "HMamba")[1] == "0.25"
    assert row(t1, "Azure PA")[1:3] == ["-", "-"]
    assert row(t1, "human (one expert vs rest)")[6] == "-"  # no sentence accuracy reported
    assert row(t1, "paper SimPO")

    metrics = json.loads((sft / "eval" / "metrics.json").read_text())
    ours = row(t1, "ours FT")
    pcc, scc = metrics["word"]["accuracy"]["pcc"], metrics["word"]["accuracy"]["scc"]
    assert ours[3] == f"{pcc:.2f} / {scc:.2f}"
    assert ours[1] == f"{metrics['phone']['accuracy']['rmse_0_2']:.2f}"
    assert all(" / " in cell for k, cell in enumerate(ours[2:]) if k != 7)
    assert ours[9] == "NaN"  # completeness predicted constant 10: undefined
    exp = row(t1, "ours FT (expected)")
    e = metrics["expected"]["sentence"]["completeness"]
    assert exp[9] == "NaN"  # the reference is constant too
    assert e["pcc"] is None
    assert exp[6] == (f"{metrics['expected']['sentence']['accuracy']['pcc']:.2f} / "
                      f"{metrics['expected']['sentence']['accuracy']['scc']:.2f}")
    assert row(t1, "ours SimPO")[3] != "-"
    assert not [r for r in t1 if "SimPO (expected)" in r]

    t3 = table(md, 3)
    assert [c.strip() for c in t3[0].strip("|").split("|")] == ["system", "word acc", "utt acc", "utt flu",
                                                                 "utt pro", "utt total"]
    dpo = row(t3, "ours DPO")
    assert dpo[1] != "-" and dpo[3] != "-" and " / " in dpo[1] and " / " in dpo[3]
    assert dpo[2] == "-" and dpo[4] == "-" and dpo[5] == "-"  # not run
    assert row(t3, "paper DPO")[1:] == ["0.60 / 0.55", "0.76 / 0.70", "0.79 / 0.78", "0.78 / 0.76", "0.76 / 0.71"]
    assert row(t3, "paper zero-shot")[1:] == ["-0.03 / -0.02", "-", "-", "-", "-"]
    assert row(t3, "HMamba")[1] == "0.71 / -"  # borrowed from Table 1, with a note
    zs = row(t3, "zero-shot")
    assert " / " in zs[1] and zs[2:] == ["-", "-", "-", "-"]
    assert "- zero-shot: zero-shot (word_accuracy" in md
    assert "4 of 16 outputs parse without problems (25.0%)" in md
    zero_metrics = json.loads((zero / "eval" / "metrics.json").read_text())
    assert f"coverage: word acc {zero_metrics['word']['accuracy']['coverage']:.1%}" in md
    assert "HMamba: Table 1 numbers" in md
    assert "utt comp: NaN, " in md  # the reason of our NaN
    assert "no config.yaml: taken as a zero-shot run" in md


def test_names_table_2_and_missing_cells(data, tmp_path, capsys):
    root, refs = data
    runs = tmp_path / "runs"
    # Word scores present, sentence fluency missing in every output (-> filled, NaN PCC).
    records = []
    for k, u in enumerate(refs):
        s = noisy(u, k)
        records.append({"id": u.id, "scores": {"sentence": {a: v for a, v in s.sentence.items() if a != "fluency"},
                                               "words": s.words, "phones": []}})
    ws = make_run(data, runs, "ws", "word_sentence", {"method": "sft", "train": [{"path": "a"}, {"path": "b"}]},
                  records)
    md = build_report([ws / "eval" / "metrics.json"], names=["mine"])
    t2 = table(md, 2)
    assert [c.strip() for c in t2[0].strip("|").split("|")] == ["system", "word acc", "word stress", "word total",
                                                                 "utt acc", "utt flu", "utt pro", "utt total"]
    assert row(t2, "paper FT + private data")[1:4] == ["0.63 / -", "0.15 / -", "0.64 / -"]
    assert row(t2, "GOPT")[1] == "0.53 / -"  # peers from Table 1
    mine = row(t2, "mine")
    assert mine[5] == "NaN"  # all fluency filled with one value: undefined
    assert " / " in mine[1]
    assert "mine, utt comp (not a column of the paper's Table 2)" in md
    assert "coverage: mine (word_sentence" in md
    # Default name from the config: two training manifests.
    assert load_run(ws).name == "ours FT + extra data"
    # Clear errors for what cannot be reported.
    with pytest.raises(ApaError, match="no metrics.json"):
        find_metrics(_empty(tmp_path))
    with pytest.raises(ApaError, match="--names gives 2 names for 1"):
        build_report([ws], names=["a", "b"])
    with pytest.raises(ApaError, match="two runs named 'x'"):
        build_report([ws, ws], names=["x", "x"])
    assert main(["report", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_nan_and_missing_cells_formatting():
    from apa.evaluation.report import TABLES, _cells

    block = {"word": {"accuracy": {"n": 3, "pcc": None, "scc": 0.5}},
             "sentence": {"accuracy": {"n": 3, "pcc": None, "scc": None}}}
    cells = _cells([block], TABLES[3])
    assert cells == ["NaN / 0.50", "NaN", "-", "-", "-"]

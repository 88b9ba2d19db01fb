"""Simulated preference pairs: the move, the consistency chain, the fits, reproducibility."""

import argparse
import json
from collections import Counter

import numpy as np
import pytest

from apa.data.manifest import Utterance, Word, write_manifest
from apa.errors import ApaError
from apa.targets import ScoreSet, parse_scores
from apa.tasks import TASKS
from apa.training.pairs import (Target, draw_new_value, draw_target, make_pair, make_pairs, pair_rng,
                                rejected_scores, rounded_reference)
from apa.training.slopes import Fit, Slopes, fit_slopes


def word(text, phones, acc, stress, total, phone_scores):
    return Word(text=text, phones=phones, scores={"accuracy": acc, "stress": stress, "total": total},
                phone_scores=phone_scores)


def make_utt(uid="u1"):
    # flat phone indices: W 0, IY0 1 | K 2, AO0 3, L 4 | IH0 5, T 6 | B 7, EH0 8, R 9 | AH0 10
    words = [word("WE", ["W", "IY0"], 10, 10, 10, [10, 10]),
             word("CALL", ["K", "AO0", "L"], 10, 10, 10, [10, 9, 9]),
             word("IT", ["IH0", "T"], 9, 10, 9, [10, 8]),
             word("BEAR", ["B", "EH0", "R"], 6, 10, 6, [10, 5, 5]),
             word("A", ["AH0"], 10, 5, 8, [9.8])]  # 9.8 is written as 10
    return Utterance(id=uid, audio=f"{uid}.wav", text="WE CALL IT BEAR A", words=words,
                     scores={"accuracy": 8, "fluency": 9, "prosody": 9, "completeness": 10, "total": 8})


SLOPES = Slopes(
    word_accuracy=Fit(coef={"phone_mean": 1.3}, intercept=0.0, n=10),
    sentence_accuracy=Fit(coef={"word_accuracy_mean": 0.9}, intercept=0.0, n=10),
    word_total=Fit(coef={"accuracy": 0.6, "stress": 0.3}, intercept=0.0, n=10),
    sentence_total=Fit(coef={"accuracy": 0.7, "fluency": 0.3, "prosody": 0.2}, intercept=0.0, n=10),
)
ZERO = Slopes(**{name: Fit(coef={k: 0.0 for k in fit.coef}, intercept=0.0, n=1)
                 for name, fit in vars(SLOPES).items()})


def flat(scores: ScoreSet, task):
    return {(level, aspect, k): v for level, aspect in task.fields
            for k, v in enumerate(scores.get(level, aspect))}


def diff(a: ScoreSet, b: ScoreSet, task):
    fa, fb = flat(a, task), flat(b, task)
    return {key: (fa[key], fb[key]) for key in fa if fa[key] != fb[key]}


# --- the move -------------------------------------------------------------------------------

def test_move_is_2_to_4_towards_the_side_with_room():
    rngs = [np.random.default_rng(i) for i in range(300)]
    assert {draw_new_value(10, "sentence", "accuracy", r) for r in rngs} == {6, 7, 8}
    assert {draw_new_value(0, "phone", "accuracy", r) for r in rngs} == {2, 3, 4}
    assert {draw_new_value(9, "word", "total", r) for r in rngs} == {5, 6, 7}
    assert {draw_new_value(5, "word", "accuracy", r) for r in rngs} == {1, 2, 3, 7, 8, 9}
    # 7: +2 and +3 fit, +4 does not
    assert {draw_new_value(7, "sentence", "fluency", r) for r in rngs} == {3, 4, 5, 9, 10}


def test_stress_flips():
    rng = np.random.default_rng(0)
    assert draw_new_value(10, "word", "stress", rng) == 5
    assert draw_new_value(5, "word", "stress", rng) == 10


def test_one_field_moves_when_nothing_depends_on_it():
    utt = make_utt()
    for name in ("word_accuracy", "sentence_accuracy", "sentence_fluency", "sentence_prosody", "sentence_total"):
        task = TASKS[name]
        for seed in range(40):
            pair = make_pair(utt, task, SLOPES, np.random.default_rng(seed))
            chosen = parse_scores(pair.chosen_text, utt, task)
            rejected = parse_scores(pair.rejected_text, utt, task)
            assert chosen.ok and rejected.ok, rejected.problems
            changed = diff(chosen.scores, rejected.scores, task)
            assert len(changed) == 1 and len(pair.changed) == 1
            (level, aspect, item), (old, new) = next(iter(changed.items()))
            assert (level, aspect, item) == tuple(pair.target) and new - old == pair.delta
            assert 2 <= abs(new - old) <= 4 and 0 <= new <= 10
            if old == 10:
                assert new < old


def test_multi_pairs_change_exactly_what_they_report_and_parse():
    task = TASKS["multi"]
    utt = make_utt()
    targets = Counter()
    for seed in range(200):
        pair = make_pair(utt, task, SLOPES, pair_rng(seed, 0, utt.id))
        assert pair.chosen_text == make_pair(utt, task, SLOPES, pair_rng(seed, 1, utt.id)).chosen_text
        chosen = parse_scores(pair.chosen_text, utt, task)
        rejected = parse_scores(pair.rejected_text, utt, task)
        assert chosen.ok and rejected.ok, rejected.problems
        reported = {(c.level, c.aspect, c.item): (c.old, c.new) for c in pair.changed}
        assert diff(chosen.scores, rejected.scores, task) == reported
        assert (pair.changed[0].level, pair.changed[0].aspect, pair.changed[0].item) == tuple(pair.target)
        if pair.target.aspect == "stress":
            assert {pair.changed[0].old, pair.changed[0].new} == {5, 10}
        else:
            assert 2 <= abs(pair.delta) <= 4
        targets[(pair.target.level, pair.target.aspect)] += 1
    assert set(targets) == set(task.fields)  # every field gets drawn


def test_field_then_item_drawn_uniformly_and_missing_items_skipped():
    task = TASKS["multi"]
    utt = make_utt()
    scores = rounded_reference(utt)
    scores.words[1]["accuracy"] = None
    scores.phones[3][1] = None  # EH0, flat index 8
    counts = Counter(draw_target(utt, task, np.random.default_rng(i), scores) for i in range(4500))
    by_field = Counter()
    for t, n in counts.items():
        by_field[(t.level, t.aspect)] += n
    # 9 fields: each about 500 although phones have 11 items and the sentence 1
    assert all(350 < n < 650 for n in by_field.values()), by_field
    assert Target("word", "accuracy", 1) not in counts and Target("phone", "accuracy", 8) not in counts
    assert {t.item for t in counts if t[:2] == ("word", "accuracy")} == {0, 2, 3, 4}


# --- the consistency chain -----------------------------------------------------------------

def test_phone_change_moves_word_accuracy_and_word_total_only():
    utt, task = make_utt(), TASKS["multi"]
    ref = rounded_reference(utt)
    # EH0 of BEAR (flat 8): 5 -> 9, +4. Word accuracy 6 + round(1.3 * 4 / 3 = 1.73) = 8.
    # Word total 6 + round(0.6 * 2 = 1.2) = 7. Sentence accuracy 8 + round(0.9 * 2 / 5 = 0.36) = 8: unchanged.
    scores, changes = rejected_scores(utt, task, SLOPES, Target("phone", "accuracy", 8), 9)
    assert [(c.level, c.aspect, c.item, c.old, c.new) for c in changes] == [
        ("phone", "accuracy", 8, 5, 9), ("word", "accuracy", 3, 6, 8), ("word", "total", 3, 6, 7)]
    assert changes[0].label == "EH0" and changes[1].label == "BEAR"
    assert diff(ref, scores, task) == {("phone", "accuracy", 8): (5, 9), ("word", "accuracy", 3): (6, 8),
                                       ("word", "total", 3): (6, 7)}
    assert rounded_reference(utt) == ref  # the reference is untouched


def test_phone_change_runs_the_whole_chain():
    utt, task = make_utt(), TASKS["multi"]
    # AH0 of A (flat 10, the word's only phone): 10 -> 6, -4.
    # word accuracy: 10 + round_half_up(1.3 * -4 / 1 = -5.2) = 10 - 5 = 5
    # word total:    8 + round_half_up(0.6 * -5 = -3.0) = 5
    # sentence accuracy: 8 + round_half_up(0.9 * -5 / 5 = -0.9) = 7
    # sentence total:    8 + round_half_up(0.7 * -1 = -0.7) = 7
    scores, changes = rejected_scores(utt, task, SLOPES, Target("phone", "accuracy", 10), 6)
    assert [(c.level, c.aspect, c.item, c.old, c.new) for c in changes] == [
        ("phone", "accuracy", 10, 10, 6), ("word", "accuracy", 4, 10, 5), ("word", "total", 4, 8, 5),
        ("sentence", "accuracy", 0, 8, 7), ("sentence", "total", 0, 8, 7)]
    assert len(diff(rounded_reference(utt), scores, task)) == 5


def test_propagated_scores_are_clipped():
    utt, task = make_utt(), TASKS["multi"]
    # T of IT (flat 6): 8 -> 4 would give word accuracy 9 + round(1.3 * -4 / 2 = -2.6) = 6;
    # upwards 8 -> 10 on a word of accuracy 9 with a steep slope clips at 10.
    steep = Slopes(word_accuracy=Fit(coef={"phone_mean": 10.0}, intercept=0.0, n=1),
                   sentence_accuracy=SLOPES.sentence_accuracy, word_total=SLOPES.word_total,
                   sentence_total=SLOPES.sentence_total)
    scores, changes = rejected_scores(utt, task, steep, Target("phone", "accuracy", 6), 10)
    assert changes[1].new == 10 and scores.words[2]["accuracy"] == 10
    _, changes = rejected_scores(utt, task, SLOPES, Target("phone", "accuracy", 6), 4)
    assert (changes[1].old, changes[1].new) == (9, 6)


def test_sentence_and_word_targets_move_their_totals():
    utt, task = make_utt(), TASKS["word_sentence"]
    # fluency 9 -> 5: total 8 + round(0.3 * -4 = -1.2) = 7
    _, changes = rejected_scores(utt, task, SLOPES, Target("sentence", "fluency", 0), 5)
    assert [(c.aspect, c.old, c.new) for c in changes] == [("fluency", 9, 5), ("total", 8, 7)]
    # completeness moves nothing
    _, changes = rejected_scores(utt, task, SLOPES, Target("sentence", "completeness", 0), 7)
    assert len(changes) == 1
    # stress of A 5 -> 10: word total 8 + round(0.3 * 5 = 1.5) = 10
    _, changes = rejected_scores(utt, task, SLOPES, Target("word", "stress", 4), 10)
    assert [(c.level, c.aspect, c.old, c.new) for c in changes] == [
        ("word", "stress", 5, 10), ("word", "total", 8, 10)]
    # word accuracy of BEAR 6 -> 10: word total 6 + round(2.4) = 8; sentence accuracy 8 + round(0.9*4/5=0.72) = 9;
    # sentence total 8 + round(0.7) = 9
    _, changes = rejected_scores(utt, task, SLOPES, Target("word", "accuracy", 3), 10)
    assert [(c.level, c.aspect, c.old, c.new) for c in changes] == [
        ("word", "accuracy", 6, 10), ("word", "total", 6, 8),
        ("sentence", "accuracy", 8, 9), ("sentence", "total", 8, 9)]
    # a total target moves nothing
    _, changes = rejected_scores(utt, task, SLOPES, Target("sentence", "total", 0), 4)
    assert len(changes) == 1


def test_no_propagation_into_fields_the_task_lacks():
    utt = make_utt()
    _, changes = rejected_scores(utt, TASKS["sentence_accuracy"], SLOPES, Target("sentence", "accuracy", 0), 4)
    assert len(changes) == 1
    _, changes = rejected_scores(utt, TASKS["word_accuracy"], SLOPES, Target("word", "accuracy", 3), 10)
    assert len(changes) == 1
    # unfitted slopes are only needed where a dependent field exists
    _, changes = rejected_scores(utt, TASKS["word_accuracy"], Slopes(), Target("word", "accuracy", 3), 10)
    assert len(changes) == 1
    with pytest.raises(ApaError, match="word total"):
        rejected_scores(utt, TASKS["word_sentence"], Slopes(), Target("word", "accuracy", 3), 10)


# --- slopes --------------------------------------------------------------------------------

def synthetic_corpus(n=60, seed=0, constant_stress=False):
    rng = np.random.default_rng(seed)
    utts = []
    for u in range(n):
        words = []
        for w in range(int(rng.integers(2, 6))):
            phones = [float(p) for p in rng.integers(4, 11, size=int(rng.integers(1, 5)))]
            acc = 0.8 * float(np.mean(phones)) + 1.5
            stress = 10.0 if constant_stress else float(rng.choice([5, 10]))
            total = 0.7 * acc + 0.2 * stress + 0.3
            words.append(word(f"W{w}", [f"P{k}" for k in range(len(phones))], acc, stress, total, phones))
        acc = 0.9 * float(np.mean([x.scores["accuracy"] for x in words])) + 0.5
        flu, pro = float(rng.uniform(3, 10)), float(rng.uniform(3, 10))
        total = 0.5 * acc + 0.3 * flu + 0.2 * pro + 0.1
        utts.append(Utterance(id=f"s{u:03d}", audio="x.wav", text=" ".join(x.text for x in words), words=words,
                              scores={"accuracy": acc, "fluency": flu, "prosody": pro, "completeness": 10,
                                      "total": total}))
    return utts


def test_fit_slopes_recovers_known_linear_relations(tmp_path):
    slopes = fit_slopes(synthetic_corpus())
    assert slopes.coef("word_accuracy", "phone_mean") == pytest.approx(0.8)
    assert slopes.word_accuracy.intercept == pytest.approx(1.5)
    assert slopes.coef("sentence_accuracy", "word_accuracy_mean") == pytest.approx(0.9)
    assert slopes.word_total.coef == pytest.approx({"accuracy": 0.7, "stress": 0.2})
    assert slopes.sentence_total.coef == pytest.approx({"accuracy": 0.5, "fluency": 0.3, "prosody": 0.2})
    assert slopes.sentence_total.intercept == pytest.approx(0.1)
    assert slopes.sentence_total.r2 == pytest.approx(1.0)
    slopes.save(tmp_path / "slopes.json")
    assert Slopes.load(tmp_path / "slopes.json") == slopes
    assert len(slopes.describe()) == 4


def test_fit_slopes_degenerate_data():
    utts = synthetic_corpus(n=10, constant_stress=True)
    for u in utts:
        for w in u.words:
            w.phone_scores = None
    slopes = fit_slopes(utts)
    assert slopes.word_accuracy is None
    assert slopes.word_total.coef["stress"] == 0.0 and "stress is constant" in slopes.word_total.note
    assert slopes.word_total.coef["accuracy"] == pytest.approx(0.7)
    with pytest.raises(ApaError, match="word accuracy"):
        slopes.coef("word_accuracy", "phone_mean")


# --- reproducibility -----------------------------------------------------------------------

def test_same_seed_and_epoch_give_the_same_pairs_in_any_order():
    utts = [make_utt(f"u{k}") for k in range(30)]
    a = make_pairs(utts, "multi", SLOPES, seed=7, epoch=2)
    b = make_pairs(list(reversed(utts)), "multi", SLOPES, seed=7, epoch=2)
    assert a == list(reversed(b))
    assert make_pairs(utts[5:6], "multi", SLOPES, seed=7, epoch=2) == a[5:6]
    other_epoch = make_pairs(utts, "multi", SLOPES, seed=7, epoch=3)
    other_seed = make_pairs(utts, "multi", SLOPES, seed=8, epoch=2)
    assert sum(x.rejected_text != y.rejected_text for x, y in zip(a, other_epoch)) > 15
    assert sum(x.rejected_text != y.rejected_text for x, y in zip(a, other_seed)) > 15
    assert all(x.chosen_text == y.chosen_text for x, y in zip(a, other_epoch))
    # different ids in one epoch get different draws
    assert len({p.rejected_text for p in a}) > 10


def test_missing_reference_score_is_reported():
    utt = make_utt()
    utt.words[0].phone_scores = None
    with pytest.raises(ApaError, match="u1"):
        make_pairs([utt], "multi", SLOPES)
    assert len(make_pairs([utt], "word_sentence", SLOPES)) == 1


# --- command -------------------------------------------------------------------------------

def test_pairs_command_writes_jsonl_and_slopes(tmp_path, capsys):
    from apa.cli import COMMANDS
    from apa.commands import pairs as command

    assert COMMANDS["pairs"][0] == "pairs"
    manifest = tmp_path / "train.jsonl"
    write_manifest(manifest, synthetic_corpus(n=8))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    out = tmp_path / "p" / "pairs.jsonl"
    args = parser.parse_args(["--manifest", str(manifest), "--task", "multi", "--out", str(out),
                              "--seed", "3", "--epoch", "1"])
    assert command.run(args) == 0
    printed = capsys.readouterr().out
    assert "word accuracy = 0.8000 * mean phone accuracy" in printed
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 8
    assert set(lines[0]) == {"id", "chosen", "rejected", "target", "delta", "changed"}
    assert lines[0]["chosen"] != lines[0]["rejected"]
    slopes = Slopes.load(out.with_suffix(".slopes.json"))
    # re-running from the saved slopes gives the same file
    again = tmp_path / "again.jsonl"
    args = parser.parse_args(["--manifest", str(manifest), "--task", "multi", "--out", str(again),
                              "--seed", "3", "--epoch", "1", "--slopes", str(out.with_suffix(".slopes.json"))])
    assert command.run(args) == 0
    assert again.read_text() == out.read_text()
    assert slopes.coef("word_total", "stress") == pytest.approx(0.2)

import random

import pytest

from apa.targets import format_scores, parse_scores, reference_scores, round_half_up
from apa.tasks import TASKS
from helpers import bear_utterance

METHOD_EXAMPLE = (
    "Sentence Scores: 8 9 9 10 8\n"
    "Word Scores: WE/10/10/10 CALL/10/10/10 IT/10/10/10 BEAR/6/10/6\n"
    "Phone Scores: W/10 IY0/10 - K/10 AO0/9 L/9 - IH0/10 T/10 - B/10 EH0/5 R/5"
)


def test_format_matches_method_example():
    assert format_scores(bear_utterance(), TASKS["multi"]) == METHOD_EXAMPLE


def test_simplified_tasks_keep_order_and_drop_absent_aspects():
    utt = bear_utterance()
    assert format_scores(utt, TASKS["word_accuracy"]) == "Word Scores: WE/10 CALL/10 IT/10 BEAR/6"
    assert format_scores(utt, TASKS["sentence_fluency"]) == "Sentence Scores: 9"
    assert format_scores(utt, TASKS["word_sentence"]) == "\n".join(METHOD_EXAMPLE.splitlines()[:2])


def test_round_half_up():
    assert [round_half_up(x) for x in (8.5, 8.49, 9.5, 0.5, 8.3, 6.7)] == [9, 8, 10, 1, 8, 7]


@pytest.mark.parametrize("task", list(TASKS))
def test_round_trip_every_task(task):
    utt = bear_utterance()
    result = parse_scores(format_scores(utt, TASKS[task]), utt, TASKS[task])
    assert result.problems == []
    ref = reference_scores(utt)
    for level, aspect in TASKS[task].fields:
        assert result.scores.get(level, aspect) == [round_half_up(v) for v in ref.get(level, aspect)]


def test_parser_reads_what_it_can_and_lists_problems():
    utt = bear_utterance()
    text = ("Sentence Scores: 8 9 x\n"
            "Word Scores: WE/10/10/10 CALL/11/10/10 IT/10/7/10\n"
            "garbage line")
    result = parse_scores(text, utt, TASKS["multi"])
    assert result.scores.sentence == {"accuracy": 8, "fluency": 9, "prosody": None}
    assert result.scores.words[0] == {"accuracy": 10, "stress": 10, "total": 10}
    assert result.scores.words[1]["accuracy"] is None  # 11 is out of range
    assert result.scores.words[3] == {}
    problems = "\n".join(result.problems)
    for expected in ("sentence: 3 scores, expected 5", "'x' is not a number", "outside 0-10",
                     "word: 3 entries, expected 4", "neither 5 nor 10", "missing 'Phone Scores:' line"):
        assert expected in problems


def test_phone_groups_matched_by_position():
    utt = bear_utterance()
    text = METHOD_EXAMPLE.replace("B/10 EH0/5 R/5", "B/10 EH0/5").replace("K/10", "G/10")
    result = parse_scores(text, utt, TASKS["multi"])
    assert result.scores.phones[3] == [10, 5, None]
    assert result.scores.phones[1][0] == 10
    assert any("got phone 'G'" in p for p in result.problems)
    assert any("2 phones, expected 3" in p for p in result.problems)


def test_fuzzed_garbage_never_raises():
    utt = bear_utterance()
    rng = random.Random(0)
    alphabet = "Sentence Word Phone Scores: /-0123456789.\n\t WE CALL BEAR xyz\u00e9\u4e2d"
    samples = [METHOD_EXAMPLE[:i] for i in range(len(METHOD_EXAMPLE))]
    for _ in range(2000):
        chars = list(METHOD_EXAMPLE)
        for _ in range(rng.randint(1, 12)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        samples.append("".join(chars))
        samples.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200))))
    samples += ["", "\n\n", "Sentence Scores:", "Word Scores: ////", "Phone Scores: - - -", None, 42]
    for text in samples:
        for task in TASKS.values():
            result = parse_scores(text, utt, task)
            assert len(result.scores.words) == 4
            assert [len(p) for p in result.scores.phones] == [2, 3, 2, 3]
            for level, aspect in task.fields:
                for value in result.scores.get(level, aspect):
                    assert value is None or 0 <= value <= 10

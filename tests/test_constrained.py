"""Constrained decoding (parallel and sequential) against brute force (stock forward, no cache)
and against free greedy."""

import math

import pytest

from apa.inference.decoding import decode_batch
from apa.targets import ScoreSet, parse_scores, reference_scores
from apa.tasks import TASKS
from decoding_checks import brute_force, overfit, slot_values

MODES = ("constrained", "constrained-sequential")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("task", ["multi", "word_accuracy", "sentence_fluency"])
def test_scores_and_expected_values_equal_brute_force(tiny_model, utterances, task, mode):
    """Expected values to 1e-5: the decoders compute the same probabilities from float32
    logits of another layout (cache, chunks, tree masks) than the stock forward; a softmax of
    logits that differ by ~1e-6 moves a 0-10 mean by less than 1e-5."""
    model, processor = tiny_model
    utt = utterances[1]
    result = decode_batch(model, processor, [utt], TASKS[task], decoding=mode)[0]
    values, expected = brute_force(model, processor, utt, TASKS[task])
    parsed = parse_scores(result["output"], utt, TASKS[task])
    assert parsed.problems == []
    assert slot_values(parsed.scores, utt, TASKS[task]) == values
    ours = slot_values(ScoreSet.from_dict(result["expected"]), utt, TASKS[task])
    assert ours == pytest.approx(expected, abs=1e-5)


def test_every_output_parses_with_reference_words_and_expected_in_range(tiny_model, utterances):
    model, processor = tiny_model
    for task in TASKS.values():
        for result, utt in zip(decode_batch(model, processor, utterances, task, decoding="constrained"), utterances):
            parsed = parse_scores(result["output"], utt, task)
            assert parsed.problems == [], parsed.problems
            for value in slot_values(ScoreSet.from_dict(result["expected"]), utt, task):
                assert 0.0 <= value <= 10.0


@pytest.mark.parametrize("mode", MODES)
def test_batch_equals_one_by_one(tiny_model, utterances, mode):
    model, processor = tiny_model
    task = TASKS["multi"]
    batched = decode_batch(model, processor, utterances, task, decoding=mode)
    for utt, together in zip(utterances, batched):
        alone = decode_batch(model, processor, [utt], task, decoding=mode)[0]
        assert alone["output"] == together["output"]
        a = slot_values(ScoreSet.from_dict(alone["expected"]), utt, task)
        b = slot_values(ScoreSet.from_dict(together["expected"]), utt, task)
        assert a == pytest.approx(b, abs=1e-5)


@pytest.fixture(scope="module")
def overfit_model(tiny_model_dir, utterances):
    """The tiny model trained (all weights) until greedy decoding reproduces the targets of
    two utterances, so that free decoding follows the template."""
    from apa.backbones.loading import load_model_and_processor

    model, processor = load_model_and_processor(tiny_model_dir, dtype="float32", device="cpu")
    chosen = [utterances[0], utterances[1]]
    overfit(model, processor, chosen, TASKS["multi"], steps=150)
    return model, processor, chosen


def test_constrained_agrees_with_free_greedy_when_greedy_follows_the_template(overfit_model):
    model, processor, chosen = overfit_model
    task = TASKS["multi"]
    free = decode_batch(model, processor, chosen, task, decoding="free")
    constrained = decode_batch(model, processor, chosen, task, decoding="constrained")
    sequential = decode_batch(model, processor, chosen, task, decoding="constrained-sequential")
    assert [c["output"] for c in constrained] == [s["output"] for s in sequential]
    followed = 0
    for utt, f, c in zip(chosen, free, constrained):
        if parse_scores(f["output"], utt, task).problems:
            continue
        followed += 1
        assert f["output"] == c["output"]
    assert followed >= 1, "the overfit model should follow the template on its training utterances"
    # and it reproduces its targets
    reference = [slot_values(reference_scores(u), u, task) for u in chosen]
    got = [slot_values(parse_scores(c["output"], u, task).scores, u, task) for u, c in zip(chosen, constrained)]
    assert [[math.floor(v + 0.5) for v in r] for r in reference] == got


@pytest.mark.parametrize("task", ["multi", "word_sentence", "word_accuracy", "sentence_total"])
def test_parallel_equals_sequential_on_a_random_model_in_fewer_calls(tiny_model, utterances, task):
    """A random model's choices depend on everything before them, so its fixed-point
    iteration converges slowest: still the sequential values exactly, the expected scores to
    1e-5 (float32 logits of two layouts, as above), in at most slots + 1 passes after the
    prefill, against the sequential decoder's 2 x slots + 1 calls."""
    from apa.inference.decoding import DecodeStats
    from apa.inference.slots import TemplateTokens

    model, processor = tiny_model
    parallel, sequential = DecodeStats(), DecodeStats()
    a = decode_batch(model, processor, utterances, TASKS[task], decoding="constrained", stats=parallel)
    b = decode_batch(model, processor, utterances, TASKS[task], decoding="constrained-sequential", stats=sequential)
    for utt, x, y in zip(utterances, a, b):
        assert x["output"] == y["output"]
        assert slot_values(ScoreSet.from_dict(x["expected"]), utt, TASKS[task]) == pytest.approx(
            slot_values(ScoreSet.from_dict(y["expected"]), utt, TASKS[task]), abs=1e-5)
    tokens = TemplateTokens(processor.tokenizer, processor.end_of_turn_id)
    plans = [tokens.plan(u, TASKS[task]) for u in utterances]
    slots = max(len(p.slots) for p in plans)
    probes = sum(any(k < len(p.tries) and p.tries[k].side_paths for p in plans) for k in range(slots))
    assert sequential.model_calls == 1 + slots + probes  # a slot where no row has a "1" to probe needs one call
    assert parallel.model_calls <= slots + 2

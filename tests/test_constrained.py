"""Constrained decoding against brute force (stock forward, no cache) and against free greedy."""

import math

import pytest
import torch

from apa.collate import build_generation_batch, build_training_batch, load_audios
from apa.forward import response_logps
from apa.inference.constrained import TemplateTokens
from apa.inference.decoding import decode_batch
from apa.targets import parse_scores, reference_scores, response_template
from apa.tasks import TASKS


def _prompt_ids(processor, utt, task):
    batch = build_generation_batch(processor, [utt], task)
    return batch, batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()


def _next_token_probs(model, batch, ids):
    """Stock Qwen2AudioForConditionalGeneration forward on one full sequence, no cache."""
    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
              "input_features": batch["input_features"], "feature_attention_mask": batch["feature_attention_mask"]}
    with torch.no_grad():
        return torch.softmax(model(**inputs).logits[0, -1].double(), dim=-1)


def _brute_force(model, processor, utt, task):
    """Greedy values and expected values computed slot by slot from full forwards."""
    tokens = TemplateTokens(processor.tokenizer, processor.end_of_turn_id)
    plan = tokens.plan(utt, task)
    batch, ids = _prompt_ids(processor, utt, task)
    one, zero = tokens.digit_ids[1], tokens.digit_ids[0]
    values, expected = [], []
    for k, slot in enumerate(plan.slots):
        ids = ids + plan.stretches[k]
        p = _next_token_probs(model, batch, ids)
        q = _next_token_probs(model, batch, ids + [one])
        digits = [float(p[t]) for t in tokens.digit_ids]
        q0, qc = float(q[zero]), float(q[plan.stretches[k + 1][0]])
        if slot.aspect == "stress":
            probs = {5: digits[5], 10: digits[1]}
            first = 5 if digits[5] > digits[1] else 1
            value = 10 if first == 1 else 5
        else:
            probs = {d: digits[d] for d in range(10) if d != 1}
            probs[1] = digits[1] * qc / (q0 + qc)
            probs[10] = digits[1] * q0 / (q0 + qc)
            first = max(range(10), key=lambda d: digits[d])
            value = (10 if q0 > qc else 1) if first == 1 else first
        total = sum(probs.values())
        expected.append(sum(v * pv for v, pv in probs.items()) / total)
        values.append(value)
        ids = ids + tokens.value_ids(value)
    return values, expected


def _slot_values(scores, utt, task):
    return [slot.value(scores) for slot in response_template(utt, task) if not isinstance(slot, str)]


@pytest.mark.parametrize("task", ["multi", "word_accuracy", "sentence_fluency"])
def test_scores_and_expected_values_equal_brute_force(tiny_model, utterances, task):
    model, processor = tiny_model
    utt = utterances[1]
    result = decode_batch(model, processor, [utt], TASKS[task], decoding="constrained")[0]
    values, expected = _brute_force(model, processor, utt, TASKS[task])
    parsed = parse_scores(result["output"], utt, TASKS[task])
    assert parsed.problems == []
    assert _slot_values(parsed.scores, utt, TASKS[task]) == values
    from apa.targets import ScoreSet

    ours = _slot_values(ScoreSet.from_dict(result["expected"]), utt, TASKS[task])
    assert ours == pytest.approx(expected, abs=1e-5)


def test_every_output_parses_with_reference_words_and_expected_in_range(tiny_model, utterances):
    model, processor = tiny_model
    for task in TASKS.values():
        for result, utt in zip(decode_batch(model, processor, utterances, task, decoding="constrained"), utterances):
            parsed = parse_scores(result["output"], utt, task)
            assert parsed.problems == [], parsed.problems
            from apa.targets import ScoreSet

            for value in _slot_values(ScoreSet.from_dict(result["expected"]), utt, task):
                assert 0.0 <= value <= 10.0


def test_batch_equals_one_by_one(tiny_model, utterances):
    model, processor = tiny_model
    task = TASKS["multi"]
    batched = decode_batch(model, processor, utterances, task, decoding="constrained")
    for utt, together in zip(utterances, batched):
        alone = decode_batch(model, processor, [utt], task, decoding="constrained")[0]
        assert alone["output"] == together["output"]
        a = _slot_values(__import__("apa.targets").targets.ScoreSet.from_dict(alone["expected"]), utt, task)
        b = _slot_values(__import__("apa.targets").targets.ScoreSet.from_dict(together["expected"]), utt, task)
        assert a == pytest.approx(b, abs=1e-5)


@pytest.fixture(scope="module")
def overfit_model(tiny_model_dir, utterances):
    """The tiny model trained (all weights) until greedy decoding reproduces the targets of
    two utterances, so that free decoding follows the template."""
    from apa.backbones.loading import load_model_and_processor

    torch.manual_seed(0)
    model, processor = load_model_and_processor(tiny_model_dir, dtype="float32", device="cpu")
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    chosen = [utterances[0], utterances[1]]
    task = TASKS["multi"]
    batch = build_training_batch(processor, chosen, task, audios=load_audios(chosen))
    for _ in range(150):
        logps = response_logps(model, processor, batch)
        loss = -logps.sum_logp.sum() / logps.n_tokens.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    model.eval()
    return model, processor, chosen


def test_constrained_agrees_with_free_greedy_when_greedy_follows_the_template(overfit_model):
    model, processor, chosen = overfit_model
    task = TASKS["multi"]
    free = decode_batch(model, processor, chosen, task, decoding="free")
    constrained = decode_batch(model, processor, chosen, task, decoding="constrained")
    followed = 0
    for utt, f, c in zip(chosen, free, constrained):
        if parse_scores(f["output"], utt, task).problems:
            continue
        followed += 1
        assert f["output"] == c["output"]
    assert followed >= 1, "the overfit model should follow the template on its training utterances"
    # and it reproduces its targets
    reference = [_slot_values(reference_scores(u), u, task) for u in chosen]
    got = [_slot_values(parse_scores(c["output"], u, task).scores, u, task) for u, c in zip(chosen, constrained)]
    assert [[math.floor(v + 0.5) for v in r] for r in reference] == got

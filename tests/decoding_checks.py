"""Brute-force references for constrained decoding, for any backbone: every probability
from the stock forward of the whole sequence, no cache, no tree mask, no side tokens."""

from __future__ import annotations

import math

import torch

from apa.collate import build_generation_batch, build_training_batch, load_audios
from apa.forward import response_logps
from apa.inference.slots import END, TemplateTokens
from apa.targets import response_template


def prompt_ids(processor, utt, task):
    batch = build_generation_batch(processor, [utt], task)
    return batch, batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()


def next_logits(model, processor, batch, ids) -> torch.Tensor:
    """The stock forward of the model on one whole sequence (its audio included): the last
    position's logits, in float64."""
    inputs = processor.generate_inputs({**batch, "input_ids": torch.tensor([ids]),
                                        "attention_mask": torch.ones(1, len(ids), dtype=torch.long)})
    with torch.no_grad():
        return model(**inputs).logits[0, -1].double()


def brute_force(model, processor, utt, task) -> tuple[list[int], list[float]]:
    """Greedy values (the sequential rule: at each trie node the highest logit among the end
    and the children, the end first on a tie) and expected values, slot by slot."""
    tokens = TemplateTokens(processor.tokenizer, processor.end_of_turn_id)
    plan = tokens.plan(utt, task)
    batch, ids = prompt_ids(processor, utt, task)
    values, expected = [], []
    for k, trie in enumerate(plan.tries):
        ids = ids + plan.stretches[k]
        continuation = plan.continuation(k)

        def candidate_logits(path):
            logits = next_logits(model, processor, batch, ids + list(path))
            return [float(logits[continuation if c == END else c]) for c in trie.node(path).candidates()]

        node = trie.root
        while True:
            candidates = node.candidates()
            logits = candidate_logits(node.path) if len(candidates) > 1 else [0.0]
            best = max(range(len(candidates)), key=lambda i: (logits[i], -i))
            if candidates[best] == END:
                value = node.value
                break
            node = node.children[candidates[best]]
        mean, todo = 0.0, [(trie.root, 1.0)]
        while todo:
            node, weight = todo.pop()
            candidates = node.candidates()
            logits = candidate_logits(node.path) if len(candidates) > 1 else [0.0]
            top = max(logits)
            probs = [math.exp(v - top) for v in logits]
            for candidate, p in zip(candidates, probs):
                p /= sum(probs)
                if candidate == END:
                    mean += weight * p * node.value
                else:
                    todo.append((node.children[candidate], weight * p))
        values.append(value)
        expected.append(mean)
        ids = ids + trie.tokens[value]
    return values, expected


def slot_values(scores, utt, task) -> list:
    return [slot.value(scores) for slot in response_template(utt, task) if not isinstance(slot, str)]


def overfit(model, processor, utts, task, steps: int = 200) -> None:
    """Train every weight on ``utts`` until greedy decoding reproduces their targets (the token
    cross-entropy below 0.01), so that free decoding follows the template; leaves eval mode."""
    torch.manual_seed(0)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = build_training_batch(processor, utts, task, audios=load_audios(utts))
    for _ in range(steps):
        logps = response_logps(model, processor, batch)
        loss = -logps.sum_logp.sum() / logps.n_tokens.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    model.eval()

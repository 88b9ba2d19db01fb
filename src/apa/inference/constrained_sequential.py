"""Constrained decoding, slot by slot (``--decoding constrained-sequential``).

The rows' prompts and first fixed stretches are prefilled once; then, for each score slot in
turn, every row's next value is chosen (apa.inference.slots: the greedy value among valid
ones, and the expected value) and fed with the next fixed stretch. Two model calls per slot:

- a probe that feeds the side tokens of the slot's value trie (Qwen's tokenizer: "1", whose
  next-token distribution tells 1 from 10) as provisional cache columns;
- a chunk with the rest of the chosen value and the whole next stretch. A row whose value
  starts with a probed token keeps that column; the others mask it out (a hole) and write
  their value at the same position.

A batch costs 2 x (most slots of a row) + 1 sequential calls (one fewer per slot for a
tokenizer whose values are single tokens), however long the fixed text is. The parallel
decoder (apa.inference.constrained_parallel) gives the same values in a handful of calls.
"""

from __future__ import annotations

from typing import Sequence

import torch

from apa.data.manifest import Utterance
from apa.inference.cached_rows import CachedRows
from apa.inference.slots import END, RowPlan, TemplateTokens, ValueTrie, decoded_row
from apa.tasks import Task


def candidate_logits(state: CachedRows, hidden: torch.Tensor, needs: list[tuple[int, ValueTrie, tuple, int]]
                     ) -> dict[tuple[int, tuple], list[float]]:
    """The logits of each needed node's candidates: ``needs`` holds (row of ``hidden``'s first
    axis, trie, node path, continuation token) per node; returns {(that row, path): logits}."""
    if not needs:
        return {}
    logits = state.logits(hidden[torch.tensor([n[0] for n in needs], device=hidden.device)])
    columns = [[continuation if c == END else c for c in trie.node(path).candidates()]
               for _, trie, path, continuation in needs]
    width = max(len(c) for c in columns)
    index = torch.tensor([c + [c[0]] * (width - len(c)) for c in columns], device=logits.device)
    picked = logits.gather(1, index).cpu().tolist()
    return {(row, path): values[:len(cols)] for (row, _, path, _), values, cols in zip(needs, picked, columns)}


def side_tree(trie: ValueTrie, start: int) -> tuple[list[int], list[int], list[int]]:
    """The trie's side tokens as a tree fed at position ``start``: (tokens, parents, positions)."""
    index = {path: i for i, path in enumerate(trie.side_paths)}
    tokens = [path[-1] for path in trie.side_paths]
    parents = [index.get(path[:-1], -1) for path in trie.side_paths]
    positions = [start + len(path) - 1 for path in trie.side_paths]
    return tokens, parents, positions


def decode(model, processor, batch: dict, utts: Sequence[Utterance], task: Task,
           max_new_tokens: int | None = None) -> list[dict]:
    """Decode ``batch`` (a left-padded generation batch of ``utts``) under the template: per
    row {"output": text, "expected": ScoreSet dict}. ``max_new_tokens`` is ignored (the
    template fixes the length)."""
    tokens = TemplateTokens(processor.tokenizer, processor.end_of_turn_id)
    plans: list[RowPlan] = [tokens.plan(utt, task) for utt in utts]
    values: list[list[int]] = [[] for _ in plans]
    expected: list[list[float]] = [[] for _ in plans]
    with torch.inference_mode():
        state = CachedRows(model, processor)
        hidden = state.prefill(batch, [plan.stretches[0] for plan in plans])
        for k in range(max(len(plan.slots) for plan in plans)):
            active = [r for r, plan in enumerate(plans) if k < len(plan.slots)]
            tries = {r: plans[r].tries[k] for r in active}
            continuation = {r: plans[r].continuation(k) for r in active}
            roots = candidate_logits(state, hidden, [(r, tries[r], (), continuation[r]) for r in active])
            sides: dict = {}
            width = 0
            if any(tries[r].side_paths for r in active):  # the probe
                trees = [side_tree(tries[r], int(state.positions[r])) if r in tries else ([], [], [])
                         for r in range(len(plans))]
                if all(parents == list(range(-1, len(parents) - 1)) for _, parents, _ in trees):
                    probe = state.feed([tree[0] for tree in trees], provisional=True)  # chains: a causal mask
                else:
                    probe = state.feed_tree(*zip(*trees))
                width = probe.shape[1]
                needs = [(r * width + i, tries[r], path, continuation[r]) for r in active
                         for i, path in enumerate(tries[r].side_paths) if path in {n.path for n in tries[r].deciding}]
                found = candidate_logits(state, probe.reshape(-1, probe.shape[-1]), needs)
                sides = {(need[0] // width, need[2]): found[(need[0], need[2])] for need in needs}
            chunks: list[list[int]] = [[] for _ in plans]
            for r in active:
                trie = tries[r]
                value, mean = trie.decide(lambda path: roots[(r, ())] if not path else sides[(r, path)])
                values[r].append(value)
                expected[r].append(mean)
                ids = trie.tokens[value]
                kept = 0  # side tokens on the value's path stay in the cache
                for i, path in enumerate(trie.side_paths):
                    if tuple(ids[:len(path)]) == path and len(path) == kept + 1:
                        state.reveal(-width + i, [r])
                        kept += 1
                state.positions[r] += kept
                chunks[r] = ids[kept:] + plans[r].stretches[k + 1]
            hidden = state.last(state.feed(chunks), chunks)
    # A row's sequential model calls alone: the prefill, a chunk per slot, a probe where it has side tokens.
    return [dict(decoded_row(tokens, task, plan, v, e),
                 calls=1 + len(plan.tries) + sum(bool(trie.side_paths) for trie in plan.tries))
            for plan, v, e in zip(plans, values, expected)]

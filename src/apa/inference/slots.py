"""The response template in tokens, and the valid values of a slot as a small trie, for any tokenizer.

The reference text and phones fix every character of a response except the score values
(apa.targets.response_template). Constrained decoding feeds the fixed stretches as they are
and lets the model choose only the values, among valid ones: 0-10 (stress: 5 or 10).

**Values as tokens.** A value is written as the tokenizer writes it: Qwen's tokenizer splits
digits one by one ("10" = "1" "0"), Phi-4's writes "10" as one token. The valid values of a
slot are a trie of token sequences; at a trie node the model chooses among its children and,
when the node is itself a whole value, the end of the value, which is the first token of the
template's next stretch. The template's tokens are the concatenation of the stretches' and the
values' tokens (a stretch starts a new pre-token after a number in every supported
tokenizer); this is checked at run time on every decoded row.

**Greedy choice and expected value.** At each node the candidates are the end (when the node
is a value) then the children in token-id order; the greedy choice is the candidate with the
highest logit (the first one on a tie), so whenever plain greedy decoding follows the template
both choose the same value. The probability of a value is the product along its path of the
candidates' softmax at each node (the model's next-token distribution restricted to valid
continuations); the expected score is the mean under that distribution. Only nodes with two or
more candidates need logits: the root, and for Qwen's tokenizer the node "1" (then "0", or
the end?).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from apa.data.manifest import Utterance
from apa.targets import ScoreSet, Slot, format_scores, response_template
from apa.data.manifest import STRESS_VALUES
from apa.tasks import Task

SCORE_VALUES = tuple(range(11))
END = -1  # the candidate "the value ends here"


@dataclass
class TrieNode:
    path: tuple[int, ...]                # token ids from the root
    value: int | None = None             # the value that ends here, if any
    children: dict[int, "TrieNode"] = field(default_factory=dict)

    def candidates(self) -> list[int]:
        """END (when a value ends here) first, then the child tokens in id order."""
        return ([END] if self.value is not None else []) + sorted(self.children)


class ValueTrie:
    """The valid values of one kind of slot as token sequences."""

    def __init__(self, values: Sequence[int], tokenize: Callable[[str], list[int]]):
        self.root = TrieNode(path=())
        self.tokens: dict[int, list[int]] = {}
        for value in values:
            ids = tokenize(str(value))
            if not ids:
                raise ValueError(f"the tokenizer writes {value} as no token")
            node = self.root
            for token in ids:
                node = node.children.setdefault(token, TrieNode(path=node.path + (token,)))
            if node.value is not None:
                raise ValueError(f"the tokenizer writes {node.value} and {value} alike")
            node.value = value
            self.tokens[value] = list(ids)
        # Nodes whose choice needs the model (two or more candidates), root first, then by depth.
        self.deciding = [n for n in self._nodes() if len(n.candidates()) >= 2]
        # Below the root, those nodes and their ancestors are fed as side tokens (a tree).
        side = {n.path[:d] for n in self.deciding for d in range(1, len(n.path) + 1)}
        self.side_paths = sorted(side, key=lambda p: (len(p), p))

    def _nodes(self) -> list[TrieNode]:
        out, todo = [], [self.root]
        while todo:
            node = todo.pop(0)
            out.append(node)
            todo += [node.children[t] for t in sorted(node.children)]
        return out

    def node(self, path: tuple[int, ...]) -> TrieNode:
        node = self.root
        for token in path:
            node = node.children[token]
        return node

    def decide(self, logits_at: Callable[[tuple[int, ...]], Sequence[float]]) -> tuple[int, float]:
        """(greedy value, expected value) given ``logits_at(path)``: the logits of the node's
        candidates (``TrieNode.candidates`` order) at every deciding node."""
        import math

        def softmax(values):
            top = max(values)
            weights = [math.exp(v - top) for v in values]
            total = sum(weights)
            return [w / total for w in weights]

        node, greedy = self.root, None
        while greedy is None:
            candidates = node.candidates()
            if len(candidates) == 1:
                choice = candidates[0]
            else:
                logits = list(logits_at(node.path))
                choice = candidates[max(range(len(candidates)), key=lambda i: (logits[i], -i))]
            if choice == END:
                greedy = node.value
            else:
                node = node.children[choice]
        mean = 0.0
        todo = [(self.root, 1.0)]
        while todo:
            node, weight = todo.pop()
            candidates = node.candidates()
            probs = softmax(logits_at(node.path)) if len(candidates) > 1 else [1.0]
            for candidate, p in zip(candidates, probs):
                if candidate == END:
                    mean += weight * p * node.value
                else:
                    todo.append((node.children[candidate], weight * p))
        return greedy, mean


@dataclass
class RowPlan:
    """One row's template in tokens: stretches[k] precedes slots[k]; stretches[-1] ends the
    response (with the end-of-turn token)."""

    utt: Utterance
    stretches: list[list[int]]
    slots: list[Slot]
    tries: list[ValueTrie]

    def continuation(self, k: int) -> int:
        """The token that ends slot k's value: the first of the next stretch."""
        return self.stretches[k + 1][0]


class TemplateTokens:
    """Token ids of the fixed stretches and value tries for one tokenizer (cached)."""

    def __init__(self, tokenizer, end_of_turn_id: int):
        self.tokenizer = tokenizer
        self.end_id = end_of_turn_id
        self._stretches: dict[str, list[int]] = {}
        self.scores = ValueTrie(SCORE_VALUES, self.tokenize)
        self.stress = ValueTrie(STRESS_VALUES, self.tokenize)

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def stretch(self, text: str) -> list[int]:
        if text not in self._stretches:
            self._stretches[text] = self.tokenize(text) if text else []
        return self._stretches[text]

    def trie(self, slot: Slot) -> ValueTrie:
        return self.stress if slot.aspect == "stress" else self.scores

    def plan(self, utt: Utterance, task: Task) -> RowPlan:
        stretches, slots, current = [], [], ""
        for part in response_template(utt, task):
            if isinstance(part, str):
                current += part
            else:
                stretches.append(self.stretch(current))
                slots.append(part)
                current = ""
        stretches.append(self.stretch(current) + [self.end_id])
        if any(not s for s in stretches[1:]):
            raise ValueError(f"{utt.id}: two values with nothing between them; the template cannot end a value")
        return RowPlan(utt=utt, stretches=stretches, slots=slots, tries=[self.trie(s) for s in slots])

    def response_ids(self, plan: RowPlan, values: Sequence[int]) -> list[int]:
        """The response's tokens for these values (end of turn included)."""
        ids = []
        for stretch, trie, value in zip(plan.stretches, plan.tries, values):
            ids += stretch + trie.tokens[value]
        return ids + plan.stretches[-1]

    def check(self, task: Task, plan: RowPlan, values: list[int]) -> None:
        """The concatenation assumption, checked on decoded values: a tokenizer whose pieces
        merge across a value boundary would make forced tokens differ from free ones."""
        expected = self.tokenize(format_scores(plan.utt, task, scores_from_values(plan.utt, plan.slots, values)))
        if expected + [self.end_id] != self.response_ids(plan, values):
            raise ValueError(f"{plan.utt.id}: the tokenizer does not split the response at value boundaries; "
                             "constrained decoding cannot force its template")


def value_starts(plan: RowPlan, values: Sequence[int]) -> tuple[list[int], list[int]]:
    """The response's tokens after the first stretch, and where each slot's value starts in them."""
    response, starts = [], []
    for k, trie in enumerate(plan.tries):
        starts.append(len(response))
        response += trie.tokens[values[k]] + plan.stretches[k + 1]
    return response, starts


def empty_scores(utt: Utterance) -> ScoreSet:
    return ScoreSet(sentence={}, words=[{} for _ in utt.words], phones=[[None] * len(w.phones) for w in utt.words])


def scores_from_values(utt: Utterance, slots: Sequence[Slot], values: Sequence[float]) -> ScoreSet:
    scores = empty_scores(utt)
    for slot, value in zip(slots, values):
        slot.assign(scores, value)
    return scores


def decoded_row(tokens: TemplateTokens, task: Task, plan: RowPlan, values: list[int],
                expected: list[float]) -> dict:
    """A decoder's result for one row: the response text and the expected scores."""
    tokens.check(task, plan, values)
    output = format_scores(plan.utt, task, scores_from_values(plan.utt, plan.slots, values))
    return {"output": output, "expected": scores_from_values(plan.utt, plan.slots, expected).to_dict()}


class TemplateWalk:
    """Where a response is in its template, advanced token by token as an engine writes them,
    and which tokens may come next (apa.inference.vllm_template). ``parts``: the response after
    its first fixed stretch, ``[kind, data]`` alternating "value" (each valid value's token
    ids) and "fixed" (token ids), ending with a fixed part; ``output_ids``: the engine's
    running list of written tokens."""

    def __init__(self, parts: list[list[Any]], output_ids: list[int]):
        self.parts = [(kind, [list(v) for v in data] if kind == "value" else list(data)) for kind, data in parts]
        self.output_ids = output_ids  # vLLM's running list of this request's output tokens
        self.seen = 0
        self.part = 0
        self.offset = 0          # tokens of the current fixed part written
        self.prefix: list[int] = []  # tokens of the current value written

    def _advance(self, token: int) -> None:
        kind, data = self.parts[self.part]
        if kind == "fixed":
            self.offset += 1
            if self.offset == len(data):
                self.part, self.offset = self.part + 1, 0
            return
        longer = [v for v in data if v[:len(self.prefix)] == self.prefix and len(v) > len(self.prefix)
                  and v[len(self.prefix)] == token]
        if longer:
            self.prefix.append(token)
            return
        # the value ended: this token is the next fixed part's first
        self.part, self.prefix = self.part + 1, []
        self._advance(token)

    def allowed(self) -> list[int]:
        for token in self.output_ids[self.seen:]:
            self._advance(token)
        self.seen = len(self.output_ids)
        if self.part >= len(self.parts):
            return []
        kind, data = self.parts[self.part]
        if kind == "fixed":
            return [data[self.offset]]
        n = len(self.prefix)
        out = {v[n] for v in data if v[:n] == self.prefix and len(v) > n}
        if self.prefix in data:  # a whole value: it may end here
            out.add(self.parts[self.part + 1][1][0])
        return sorted(out)


def template_parts(plan: RowPlan) -> list[list]:
    """A row's response after its first stretch as TemplateWalk's ``parts``."""
    parts: list[list] = []
    for k, trie in enumerate(plan.tries):
        parts.append(["value", [trie.tokens[v] for v in sorted(trie.tokens)]])
        parts.append(["fixed", plan.stretches[k + 1]])
    return parts

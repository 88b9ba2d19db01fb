"""Constrained decoding with expected scores.

The reference text and phones fix every character of the response except the score values
(apa.targets.response_template). So instead of generating ~230 tokens one at a time and
hoping they parse, we feed the fixed stretches as whole chunks through the KV cache and let
the model choose only at the score slots, among valid values only (0-10; stress 5 or 10).
Every output parses, with exactly the reference's words and phones.

At each slot the model's distribution over the valid values is read off too, and its
expected value is reported beside the most likely one: continuous scores break the ties
that cap Spearman correlation when every prediction is an integer.

**Tokens of a value.** Qwen's pre-tokenizer splits digits one per token, so "10" is "1"
then "0", and a fixed stretch starts a new pre-token after a digit: the token sequence of
a response is exactly the concatenation of the tokens of its fixed pieces and digits
(checked at run time for every template). At a slot:

* ``p(d)``: next-token probability of each digit d (from the logits after the stretch);
* after "1" the number is either finished (the next token is the template's continuation
  ``c``) or continues with "0": ``q0 = P("0" | "1")``, ``qc = P(c | "1")``.

Values and their probabilities, restricted to the template (renormalised over the valid
values): P(v) = p(v) for single-digit v != 1, P(1) = p(1) qc / (q0 + qc), P(10) = p(1) q0 /
(q0 + qc); stress: P(5) = p(5), P(10) = p(1). The most likely value follows token-level
greedy decoding restricted to valid tokens (first digit = argmax p over valid digits; after
"1", "0" iff q0 > qc), so whenever plain greedy decoding follows the template, both
choose the same scores.

**Cost in model calls.** One prefill (prompt + first fixed stretch), then per slot two
calls: a probe that feeds "1" to every row (giving q0 and qc), and a chunk that feeds the
rest of the value and the whole next fixed stretch. A row whose value does not start with
"1" masks its probe token out of the cache (an attention-mask hole) and writes its digit at
the same position. Rows with different templates advance together, slot by slot, with
per-row right padding inside each chunk (masked, explicit position ids), so a batch costs
2 x (most slots of a row) + 1 sequential calls, however long the fixed text is. The LM head
runs only on the positions whose next-token distribution is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from apa.data.manifest import Utterance
from apa.targets import ScoreSet, Slot, format_scores, response_template
from apa.tasks import Task

DIGITS = "0123456789"


@dataclass
class RowPlan:
    """One row's template, tokenised: stretches[k] precedes slots[k]; stretches[-1] ends it."""

    stretches: list[list[int]]
    slots: list[Slot]


class TemplateTokens:
    """Token ids of digits and fixed stretches for one tokenizer (cached per stretch text)."""

    def __init__(self, tokenizer, end_of_turn_id: int):
        self.tokenizer = tokenizer
        self.digit_ids = []
        for d in DIGITS:
            ids = tokenizer(d, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise ValueError(f"the tokenizer splits digit {d!r} into {len(ids)} tokens; constrained "
                                 "decoding needs one token per digit (as Qwen's tokenizer has)")
            self.digit_ids.append(ids[0])
        self.end_id = end_of_turn_id
        self._cache: dict[str, list[int]] = {}

    def stretch(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self._cache[text]

    def value_ids(self, value: int) -> list[int]:
        return [self.digit_ids[int(c)] for c in str(value)]

    def plan(self, utt: Utterance, task: Task) -> RowPlan:
        stretches, slots, current = [], [], ""
        for part in response_template(utt, task):
            if isinstance(part, str):
                current += part
            else:
                stretches.append(self.stretch(current) if current else [])
                slots.append(part)
                current = ""
        stretches.append((self.stretch(current) if current else []) + [self.end_id])
        return RowPlan(stretches=stretches, slots=slots)

    def check_plan(self, utt: Utterance, task: Task, plan: RowPlan, values: list[int]) -> None:
        """The concatenation assumption, checked on the decoded values: a tokenizer whose
        pieces merge across a digit boundary would make forced tokens differ from free ones."""
        ids = []
        for stretch, value in zip(plan.stretches, values):
            ids += stretch + self.value_ids(value)
        ids += plan.stretches[-1][:-1]
        scores = _scores_from_values(utt, plan.slots, values)
        expected = self.tokenizer(format_scores(utt, task, scores), add_special_tokens=False)["input_ids"]
        if list(expected) != ids:
            raise ValueError(f"{utt.id}: the tokenizer does not split the response at digit boundaries; "
                             "constrained decoding cannot force its template")


def _empty_scores(utt: Utterance) -> ScoreSet:
    return ScoreSet(sentence={}, words=[{} for _ in utt.words], phones=[[None] * len(w.phones) for w in utt.words])


def _scores_from_values(utt: Utterance, slots: list[Slot], values: Sequence[float]) -> ScoreSet:
    scores = _empty_scores(utt)
    for slot, value in zip(slots, values):
        slot.assign(scores, value)
    return scores


def value_distribution(p_digits: torch.Tensor, q_zero: torch.Tensor, q_cont: torch.Tensor,
                       stress: torch.Tensor) -> torch.Tensor:
    """P(value) for values 0..10, per row, from the slot's digit probabilities [rows, 10] and
    the probabilities of "0" and of the continuation after "1" [rows] (module docstring)."""
    rows = p_digits.shape[0]
    probs = torch.zeros(rows, 11, dtype=p_digits.dtype, device=p_digits.device)
    probs[:, :10] = p_digits
    after_one = (q_zero + q_cont).clamp(min=torch.finfo(p_digits.dtype).tiny)
    probs[:, 1] = p_digits[:, 1] * q_cont / after_one
    probs[:, 10] = p_digits[:, 1] * q_zero / after_one
    stress_probs = torch.zeros_like(probs)
    stress_probs[:, 5] = p_digits[:, 5]
    stress_probs[:, 10] = p_digits[:, 1]
    probs = torch.where(stress[:, None], stress_probs, probs)
    return probs / probs.sum(dim=1, keepdim=True).clamp(min=torch.finfo(p_digits.dtype).tiny)


def greedy_value(logits_digits: torch.Tensor, q_zero: torch.Tensor, q_cont: torch.Tensor,
                 stress: torch.Tensor) -> torch.Tensor:
    """Token-level greedy choice restricted to valid tokens (see module docstring)."""
    masked = logits_digits.clone()
    stress_mask = torch.full_like(masked, float("-inf"))
    stress_mask[:, 1] = 0.0
    stress_mask[:, 5] = 0.0
    masked = torch.where(stress[:, None], masked + stress_mask, masked)
    first = masked.argmax(dim=1)
    ten = (first == 1) & (stress | (q_zero > q_cont))
    return torch.where(ten, torch.full_like(first, 10), first)


class _Batch:
    """KV cache, attention mask and positions of the rows decoded together."""

    def __init__(self, model, processor):
        from transformers import DynamicCache

        self.model = model
        self.processor = processor
        self.cache = DynamicCache()
        self.mask: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None  # next position id per row

    def _run(self, embeds: torch.Tensor, chunk_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        self.mask = chunk_mask if self.mask is None else torch.cat([self.mask, chunk_mask], dim=1)
        return self.processor.hidden_states(self.model, embeds, self.mask, position_ids, self.cache)

    def prefill(self, batch: dict, extra: list[list[int]], pad_id: int) -> torch.Tensor:
        """Run each row's prompt (with its audio) followed by ``extra`` tokens, left-padded;
        hidden state of each row's last token."""
        prompts = [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
        rows = [p + e for p, e in zip(prompts, extra)]
        width = max(len(r) for r in rows)
        device = batch["input_ids"].device
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=batch["attention_mask"].dtype)
        for r, row in enumerate(rows):
            input_ids[r, width - len(row):] = torch.tensor(row)
            mask[r, width - len(row):] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        embeds = self.processor.embed(self.model, input_ids, batch)
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        self.positions = mask.sum(dim=1).cpu()
        return self._run(embeds, mask, position_ids)[:, -1]

    def feed(self, chunks: list[list[int]], pad_id: int) -> torch.Tensor:
        """Feed one chunk per row (right-padded, masked); hidden state after each row's last token."""
        device = self.mask.device
        width = max(1, max(len(c) for c in chunks))
        ids = torch.full((len(chunks), width), pad_id, dtype=torch.long)
        chunk_mask = torch.zeros((len(chunks), width), dtype=self.mask.dtype)
        position_ids = torch.zeros((len(chunks), width), dtype=torch.long)
        last = torch.zeros(len(chunks), dtype=torch.long)
        for r, chunk in enumerate(chunks):
            n = len(chunk)
            if n:
                ids[r, :n] = torch.tensor(chunk)
                chunk_mask[r, :n] = 1
                position_ids[r, :n] = torch.arange(int(self.positions[r]), int(self.positions[r]) + n)
                self.positions[r] += n
                last[r] = n - 1
        embeds = self.processor.token_embeddings(self.model, ids.to(device))
        hidden = self._run(embeds, chunk_mask.to(device), position_ids.to(device))
        return hidden[torch.arange(len(chunks), device=device), last.to(device)]

    def probe(self, token: int) -> torch.Tensor:
        """Feed ``token`` to every row at its next position, provisionally (see commit_probe)."""
        device = self.mask.device
        rows = self.mask.shape[0]
        ids = torch.full((rows, 1), token, dtype=torch.long, device=device)
        embeds = self.processor.token_embeddings(self.model, ids)
        hidden = self._run(embeds, torch.ones((rows, 1), dtype=self.mask.dtype, device=device),
                           self.positions[:, None].to(device))
        return hidden[:, -1]

    def commit_probe(self, keep: list[bool]) -> None:
        """Rows that keep the probe token move past it; the others mask it out (a hole) and
        write their next token at the same position."""
        for r, kept in enumerate(keep):
            if kept:
                self.positions[r] += 1
            else:
                self.mask[r, -1] = 0

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.processor.logits(self.model, hidden)


def constrained_decode(model, processor, batch: dict, utts: Sequence[Utterance], task: Task,
                       max_new_tokens: int | None = None) -> list[dict]:
    """Decode ``batch`` (a left-padded generation batch of ``utts``) under the template.

    Returns per row {"output": text, "expected": ScoreSet dict of expected values}.
    ``max_new_tokens`` is ignored: the template fixes the length.
    """
    tokens = TemplateTokens(processor.tokenizer, processor.end_of_turn_id)
    plans = [tokens.plan(utt, task) for utt in utts]
    rows = len(utts)
    pad_id = processor.pad_token_id
    one, zero = tokens.digit_ids[1], tokens.digit_ids[0]
    digit_ids = torch.tensor(tokens.digit_ids)
    values: list[list[int]] = [[] for _ in range(rows)]
    expected: list[list[float]] = [[] for _ in range(rows)]

    with torch.inference_mode():
        state = _Batch(model, processor)
        hidden = state.prefill(batch, [plan.stretches[0] for plan in plans], pad_id)
        n_slots = max(len(plan.slots) for plan in plans)
        for k in range(n_slots):
            active = torch.tensor([k < len(plan.slots) for plan in plans])
            logits = state.logits(hidden)
            digit_logits = logits[:, digit_ids.to(logits.device)]
            p_digits = torch.softmax(logits, dim=-1)[:, digit_ids.to(logits.device)]
            # Probe: "1" for every row; its logits give q0 and q_cont.
            probe = torch.softmax(state.logits(state.probe(one)), dim=-1)
            continuation = torch.tensor([plan.stretches[k + 1][0] if k < len(plan.slots) else pad_id
                                         for plan in plans], device=probe.device)
            q_zero = probe[:, zero]
            q_cont = probe.gather(1, continuation[:, None]).squeeze(1)
            stress = torch.tensor([k < len(plan.slots) and plan.slots[k].aspect == "stress" for plan in plans],
                                  device=probe.device)
            chosen = greedy_value(digit_logits, q_zero, q_cont, stress)
            distribution = value_distribution(p_digits, q_zero, q_cont, stress)
            mean = (distribution * torch.arange(11, device=distribution.device, dtype=distribution.dtype)).sum(1)

            chunks, keep_probe = [], []
            for r, plan in enumerate(plans):
                if not active[r]:
                    chunks.append([])
                    keep_probe.append(False)
                    continue
                value = int(chosen[r])
                values[r].append(value)
                expected[r].append(float(mean[r]))
                digits = tokens.value_ids(value)
                starts_with_one = digits[0] == one
                keep_probe.append(starts_with_one)
                chunks.append((digits[1:] if starts_with_one else digits) + plan.stretches[k + 1])
            state.commit_probe(keep_probe)
            hidden = state.feed(chunks, pad_id)

    results = []
    for utt, plan, row_values, row_expected in zip(utts, plans, values, expected):
        tokens.check_plan(utt, task, plan, row_values)
        output = format_scores(utt, task, _scores_from_values(utt, plan.slots, row_values))
        results.append({"output": output,
                        "expected": _scores_from_values(utt, plan.slots, row_expected).to_dict()})
    return results

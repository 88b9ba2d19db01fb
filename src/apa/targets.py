"""Scores -> response text and response text -> scores (docs/method.md, Prompt and response), one module.

The response of the comprehensive task looks like::

    Sentence Scores: 8 9 9 10 8
    Word Scores: WE/10/10/10 CALL/10/10/10 IT/10/10/10 BEAR/6/10/6
    Phone Scores: W/10 IY0/10 - K/10 AO0/9 L/9 - IH0/10 T/10 - B/10 EH0/5 R/5

A task with fewer aspects keeps this order and drops the absent ones. The parser serves
evaluation, preference pairs and the API alike; it never raises on model output: it returns
whatever it could read, matched by position to the reference words and phones, and a list
of problems. This module imports no torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from apa.data.manifest import SCORE_RANGE, STRESS_VALUES, Utterance
from apa.tasks import Task

LINE_HEADERS = {"sentence": "Sentence Scores:", "word": "Word Scores:", "phone": "Phone Scores:"}
PHONE_WORD_SEPARATOR = " - "


@dataclass
class ScoreSet:
    """Scores of one utterance, aligned with its reference words and phones.

    ``words[i]`` belongs to reference word i; ``phones[i][j]`` to phone j of word i. A value
    that is absent (not labelled, not predicted, unparsable) is None.
    """

    sentence: dict[str, float | None] = field(default_factory=dict)
    words: list[dict[str, float | None]] = field(default_factory=list)
    phones: list[list[float | None]] = field(default_factory=list)

    def get(self, level: str, aspect: str) -> list[float | None]:
        """The values of one field as a flat list (one per sentence, word or phone)."""
        if level == "sentence":
            return [self.sentence.get(aspect)]
        if level == "word":
            return [w.get(aspect) for w in self.words]
        return [p for word in self.phones for p in word]

    def to_dict(self) -> dict[str, Any]:
        return {"sentence": dict(self.sentence), "words": [dict(w) for w in self.words],
                "phones": [list(p) for p in self.phones]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScoreSet":
        return cls(sentence=dict(data.get("sentence") or {}),
                   words=[dict(w) for w in data.get("words") or []],
                   phones=[list(p) for p in data.get("phones") or []])


@dataclass
class ParseResult:
    scores: ScoreSet
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def round_half_up(value: float) -> int:
    """docs/method.md: every score is written as an integer, rounding half up (8.5 -> 9)."""
    return int(math.floor(value + 0.5))


def reference_scores(utt: Utterance) -> ScoreSet:
    """The human scores of an utterance as a ScoreSet (unrounded, as stored)."""
    return ScoreSet(
        sentence=dict(utt.scores),
        words=[dict(w.scores) for w in utt.words],
        phones=[list(w.phone_scores) if w.phone_scores is not None else [None] * len(w.phones)
                for w in utt.words],
    )


class MissingScore(ValueError):
    """A reference lacks a score the task needs (e.g. phone scores for `multi`)."""


@dataclass(frozen=True)
class Slot:
    """One score position of a response: which field, and which word / phone it belongs to."""

    level: str
    aspect: str
    word: int | None = None
    phone: int | None = None

    def value(self, scores: ScoreSet) -> float | None:
        if self.level == "sentence":
            return scores.sentence.get(self.aspect)
        if self.level == "word":
            return scores.words[self.word].get(self.aspect)
        return scores.phones[self.word][self.phone]

    def assign(self, scores: ScoreSet, value: float | None) -> None:
        if self.level == "sentence":
            scores.sentence[self.aspect] = value
        elif self.level == "word":
            scores.words[self.word][self.aspect] = value
        else:
            scores.phones[self.word][self.phone] = value


def response_template(utt: Utterance, task: Task) -> list[str | Slot]:
    """The response of ``utt`` under ``task`` as fixed text pieces and score slots, in order.

    Everything but the score values is known from the reference text and phones: this is
    what format_scores fills in, and what constrained decoding forces.
    """
    parts: list[str | Slot] = []

    def text(piece: str) -> None:
        if parts and isinstance(parts[-1], str):
            parts[-1] += piece
        else:
            parts.append(piece)

    lines = 0
    if task.sentence:
        text(LINE_HEADERS["sentence"])
        for aspect in task.sentence:
            text(" ")
            parts.append(Slot("sentence", aspect))
        lines += 1
    if task.word:
        text(("\n" if lines else "") + LINE_HEADERS["word"])
        for i, word in enumerate(utt.words):
            text(" " + word.text)
            for aspect in task.word:
                text("/")
                parts.append(Slot("word", aspect, word=i))
        lines += 1
    if task.phone:
        text(("\n" if lines else "") + LINE_HEADERS["phone"] + " ")
        for i, word in enumerate(utt.words):
            if i:
                text(PHONE_WORD_SEPARATOR)
            for j, phone in enumerate(word.phones):
                text((" " if j else "") + phone + "/")
                parts.append(Slot("phone", "accuracy", word=i, phone=j))
    return parts


def has_scores(utt: Utterance, task: Task) -> bool:
    """Whether the reference has every score ``task`` writes (so it can be a training target)."""
    scores = reference_scores(utt)
    return all(part.value(scores) is not None for part in response_template(utt, task) if isinstance(part, Slot))


def value_modes(utterances, task: Task) -> dict[tuple[str, str], int]:
    """The most frequent written (rounded) reference value of each field of ``task`` (the higher
    one on a tie): the parallel decoder's first guesses, saved with a trained model (apa_run.json)."""
    from collections import Counter

    counts: dict[tuple[str, str], Counter] = {}
    for utt in utterances:
        scores = reference_scores(utt)
        for level, aspect in task.fields:
            for value in scores.get(level, aspect):
                if value is not None:
                    counts.setdefault((level, aspect), Counter())[round_half_up(value)] += 1
    return {field: max(counter, key=lambda value: (counter[value], value)) for field, counter in counts.items()}


def _slot_name(utt: Utterance, slot: Slot) -> str:
    if slot.level == "sentence":
        return f"{utt.id} sentence {slot.aspect}"
    word = utt.words[slot.word]
    if slot.level == "word":
        return f"{utt.id} word {slot.word} ({word.text}) {slot.aspect}"
    return f"{utt.id} word {slot.word} ({word.text}) phone {slot.phone} ({word.phones[slot.phone]})"


def format_scores(utt: Utterance, task: Task, scores: ScoreSet | None = None) -> str:
    """The response text for ``utt`` under ``task`` (the training target when scores is None)."""
    scores = scores if scores is not None else reference_scores(utt)
    pieces = []
    for part in response_template(utt, task):
        if isinstance(part, str):
            pieces.append(part)
            continue
        value = part.value(scores)
        if value is None:
            raise MissingScore(f"{_slot_name(utt, part)} has no score")
        pieces.append(str(round_half_up(value)))
    return "".join(pieces)


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


def _number(token: str, what: str, problems: list[str], stress: bool = False) -> float | None:
    token = token.strip().rstrip(".,;")
    if not _NUMBER.match(token):
        problems.append(f"{what}: {token!r} is not a number")
        return None
    value = float(token)
    if not SCORE_RANGE[0] <= value <= SCORE_RANGE[1]:
        problems.append(f"{what}: {token} is outside 0-10")
        return None
    if stress and value not in STRESS_VALUES:
        problems.append(f"{what}: stress {token} is neither 5 nor 10")
    return int(value) if value == int(value) else value


def _find_line(text: str, level: str) -> str | None:
    """The content after a level's header; the header is matched case-insensitively anywhere."""
    header = re.escape(LINE_HEADERS[level][:-1])
    match = re.search(rf"{header}\s*:?[ \t]*(.*)", text, flags=re.IGNORECASE)
    return match.group(1).strip() if match else None


def parse_scores(text: str, utt: Utterance, task: Task) -> ParseResult:
    """Read a response into a ScoreSet aligned with ``utt``'s words and phones; never raises."""
    problems: list[str] = []
    scores = ScoreSet(sentence={}, words=[{} for _ in utt.words],
                      phones=[[None] * len(w.phones) for w in utt.words])
    if not isinstance(text, str):
        return ParseResult(scores, [f"output is {type(text).__name__}, not text"])

    if task.sentence:
        line = _find_line(text, "sentence")
        if line is None:
            problems.append("missing 'Sentence Scores:' line")
        else:
            tokens = line.split()
            if len(tokens) != len(task.sentence):
                problems.append(f"sentence: {len(tokens)} scores, expected {len(task.sentence)}")
            for aspect, token in zip(task.sentence, tokens):
                scores.sentence[aspect] = _number(token, f"sentence {aspect}", problems)

    if task.word:
        line = _find_line(text, "word")
        if line is None:
            problems.append("missing 'Word Scores:' line")
        else:
            entries = line.split()
            if len(entries) != len(utt.words):
                problems.append(f"word: {len(entries)} entries, expected {len(utt.words)}")
            for i, (word, entry) in enumerate(zip(utt.words, entries)):
                parts = entry.split("/")
                if parts[0].upper() != word.text.upper():
                    problems.append(f"word {i}: expected {word.text!r}, got {parts[0]!r}")
                values = parts[1:]
                if len(values) != len(task.word):
                    problems.append(f"word {i} ({word.text}): {len(values)} scores, expected {len(task.word)}")
                for aspect, token in zip(task.word, values):
                    scores.words[i][aspect] = _number(token, f"word {i} ({word.text}) {aspect}", problems,
                                                      stress=aspect == "stress")

    if task.phone:
        line = _find_line(text, "phone")
        if line is None:
            problems.append("missing 'Phone Scores:' line")
        else:
            groups = [g.split() for g in re.split(r"\s+-\s+|^-\s+|\s+-$", line) if g.strip()]
            if len(groups) != len(utt.words):
                problems.append(f"phone: {len(groups)} word groups, expected {len(utt.words)}")
            for i, (word, entries) in enumerate(zip(utt.words, groups)):
                if len(entries) != len(word.phones):
                    problems.append(f"phone group {i} ({word.text}): {len(entries)} phones, "
                                    f"expected {len(word.phones)}")
                for j, (phone, entry) in enumerate(zip(word.phones, entries)):
                    name, _, token = entry.rpartition("/")
                    what = f"word {i} ({word.text}) phone {j} ({phone})"
                    if not name:
                        problems.append(f"{what}: {entry!r} is not PHONE/score")
                        continue
                    if name.upper() != phone.upper():
                        problems.append(f"{what}: got phone {name!r}")
                    scores.phones[i][j] = _number(token, what, problems)
    return ParseResult(scores, problems)

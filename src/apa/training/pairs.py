"""Simulated preference pairs for SimPO/DPO (paper section 2.2; docs/method.md, Training).

The chosen response y+ is the human reference (the SFT target, integer scores). The
rejected response y- is a copy in which one *target* score is moved, and the scores that
depend on it are moved with it so that y- stays internally consistent:

1. **Target.** Draw a field (level, aspect) of the task uniformly among the task's fields
   that have at least one scored item, then one item of that field uniformly (the
   sentence, one word, or one phone; phones are indexed flat over the utterance, in
   order). Fields are drawn first so that the single sentence score is as likely a target
   as the many phone scores. Items without a reference score are not drawable.
2. **Move.** A stress score flips 5 <-> 10. Any other score moves by a magnitude drawn
   uniformly from {2, 3, 4}, in a direction that leaves room for the whole move (a 10
   can only go down, a 0 only up, a 7 moving by 4 only down); when both directions
   leave room the sign is drawn uniformly. So the target always changes by exactly 2-4
   points, as the paper says, and is never clipped. (The clip to 0-10 remains as a guard
   for values outside the range.)
3. **Consistency chain.** With fitted slopes (least squares on the training split, see
   apa.training.slopes), each change moves the scores that depend on it:

   - phone j of word i changed by d  ->  word i accuracy += s_wp * d / n_phones(i)
   - word i accuracy changed by d    ->  word i total += b_acc * d,
                                         sentence accuracy += s_sw * d / n_words
   - word i stress changed by d      ->  word i total += b_str * d
   - sentence accuracy / fluency / prosody changed by d -> sentence total += c_aspect * d

   where s_wp is the slope of word accuracy on the mean of its phone scores, s_sw of
   sentence accuracy on the mean word accuracy, b the coefficients of the regression of
   word total on word accuracy and stress, c those of sentence total on sentence
   accuracy, fluency and prosody. Each moved score is ``old + slope * change``, rounded
   half up (like every written score) and clipped to 0-10; the change that was actually
   written then propagates further, so a phone change can reach word accuracy, word total,
   sentence accuracy and sentence total. A field the task does not contain is neither
   changed nor propagated through (nothing visible changed, so nothing needs to stay
   consistent with it); completeness and the totals move nothing.

Randomness is a numpy Generator per (seed, epoch, utterance id) (``pair_rng``), so one
utterance gets the same pair in any order, on any process, and a new one each epoch.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

import numpy as np

from apa.data.manifest import Utterance
from apa.errors import ApaError
from apa.targets import MissingScore, ScoreSet, format_scores, reference_scores, round_half_up
from apa.data.manifest import SCORE_RANGE, STRESS_VALUES
from apa.tasks import Task, get_task
from apa.training.slopes import Slopes

MAGNITUDES = (2, 3, 4)


class Target(NamedTuple):
    level: str   # "sentence" | "word" | "phone"
    aspect: str
    item: int    # 0 for the sentence; the word index; the flat phone index over the utterance


@dataclass(frozen=True)
class Change:
    """One score of y- that differs from y+ (integer scores, as written)."""

    level: str
    aspect: str
    item: int
    old: int
    new: int
    label: str = ""  # the word or phone the item is ("" for the sentence)

    @property
    def delta(self) -> int:
        return self.new - self.old

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "aspect": self.aspect, "item": self.item, "label": self.label,
                "old": self.old, "new": self.new}


@dataclass(frozen=True)
class Pair:
    id: str
    chosen_text: str
    rejected_text: str
    target: Target
    delta: int                   # change of the target score itself
    changed: tuple[Change, ...]  # the target first, then the propagated changes in chain order

    def to_dict(self) -> dict[str, Any]:
        first = self.changed[0]
        return {"id": self.id, "chosen": self.chosen_text, "rejected": self.rejected_text,
                "target": {"level": self.target.level, "aspect": self.target.aspect,
                           "item": self.target.item, "label": first.label},
                "delta": self.delta, "changed": [c.to_dict() for c in self.changed]}


def rounded_reference(utt: Utterance) -> ScoreSet:
    """The reference scores as written in y+: integers (round half up), None kept."""
    ref = reference_scores(utt)
    r = lambda v: None if v is None else round_half_up(v)  # noqa: E731
    return ScoreSet(sentence={a: r(v) for a, v in ref.sentence.items()},
                    words=[{a: r(v) for a, v in w.items()} for w in ref.words],
                    phones=[[r(v) for v in p] for p in ref.phones])


def _phone_position(utt: Utterance, item: int) -> tuple[int, int]:
    for i, word in enumerate(utt.words):
        if item < len(word.phones):
            return i, item
        item -= len(word.phones)
    raise IndexError("phone index out of range")


def _label(utt: Utterance, level: str, item: int) -> str:
    if level == "word":
        return utt.words[item].text
    if level == "phone":
        i, j = _phone_position(utt, item)
        return utt.words[i].phones[j]
    return ""


def _get(scores: ScoreSet, utt: Utterance, level: str, aspect: str, item: int) -> int | None:
    if level == "sentence":
        return scores.sentence.get(aspect)
    if level == "word":
        return scores.words[item].get(aspect)
    i, j = _phone_position(utt, item)
    return scores.phones[i][j]


def _set(scores: ScoreSet, utt: Utterance, level: str, aspect: str, item: int, value: int) -> None:
    if level == "sentence":
        scores.sentence[aspect] = value
    elif level == "word":
        scores.words[item][aspect] = value
    else:
        i, j = _phone_position(utt, item)
        scores.phones[i][j] = value


def draw_target(utt: Utterance, task: Task, rng: np.random.Generator,
                scores: ScoreSet | None = None) -> Target:
    """A field of the task uniformly (among fields with a scored item), then an item of it."""
    scores = scores if scores is not None else rounded_reference(utt)
    drawable = []
    for level, aspect in task.fields:
        items = [k for k, v in enumerate(scores.get(level, aspect)) if v is not None]
        if items:
            drawable.append((level, aspect, items))
    if not drawable:
        raise ApaError(f"utterance {utt.id} has no reference score for any field of task {task.name!r}; "
                       "no preference pair can be simulated for it")
    level, aspect, items = drawable[int(rng.integers(len(drawable)))]
    return Target(level, aspect, items[int(rng.integers(len(items)))])


def draw_new_value(old: int, level: str, aspect: str, rng: np.random.Generator) -> int:
    """The target's value in y-: stress flips 5 <-> 10; others move 2-4 towards the side with room."""
    lo, hi = int(SCORE_RANGE[0]), int(SCORE_RANGE[1])
    if level == "word" and aspect == "stress":
        return STRESS_VALUES[0] if old >= sum(STRESS_VALUES) / 2 else STRESS_VALUES[1]
    magnitude = int(MAGNITUDES[int(rng.integers(len(MAGNITUDES)))])
    signs = [s for s in (+1, -1) if lo <= old + s * magnitude <= hi]
    if len(signs) == 2:
        sign = signs[int(rng.integers(2))]
    elif signs:
        sign = signs[0]
    else:  # only for a value outside 0-10 or a range narrower than 8: go where most room is
        sign = +1 if hi - old >= old - lo else -1
    new = min(hi, max(lo, old + sign * magnitude))
    if new == old:  # guard: cannot happen for scores in 0-10
        new = min(hi, max(lo, old - sign * magnitude))
    if new == old:
        raise ApaError(f"cannot move score {old} by 2-4 inside {lo}-{hi}")
    return new


def rejected_scores(utt: Utterance, task: Task, slopes: Slopes, target: Target, new_value: int,
                    scores: ScoreSet | None = None) -> tuple[ScoreSet, list[Change]]:
    """y-'s scores: ``scores`` (default: the rounded reference) with the target set to
    ``new_value`` and the consistency chain applied (module docstring). Returns the new
    ScoreSet (the input is not modified) and every change, the target's first."""
    base = scores if scores is not None else rounded_reference(utt)
    out = copy.deepcopy(base)
    changes: list[Change] = []
    in_task = set(task.fields)
    lo, hi = int(SCORE_RANGE[0]), int(SCORE_RANGE[1])

    def write(level: str, aspect: str, item: int, new: int) -> int:
        old = _get(out, utt, level, aspect, item)
        if new != old:
            _set(out, utt, level, aspect, item, new)
            changes.append(Change(level, aspect, item, old, new, _label(utt, level, item)))
        return new - old

    def nudge(level: str, aspect: str, item: int, relation: str, predictor: str, amount: float) -> int:
        """Move a dependent score by slope * amount; return the change actually written."""
        if (level, aspect) not in in_task or _get(out, utt, level, aspect, item) is None:
            return 0
        old = _get(out, utt, level, aspect, item)
        new = min(hi, max(lo, round_half_up(old + slopes.coef(relation, predictor) * amount)))
        return write(level, aspect, item, new)

    def propagate(level: str, aspect: str, item: int, change: int) -> None:
        if change == 0:
            return
        if level == "phone":
            i, _ = _phone_position(utt, item)
            d = nudge("word", "accuracy", i, "word_accuracy", "phone_mean", change / len(utt.words[i].phones))
            propagate("word", "accuracy", i, d)
        elif level == "word" and aspect in ("accuracy", "stress"):
            nudge("word", "total", item, "word_total", aspect, change)
            if aspect == "accuracy":
                d = nudge("sentence", "accuracy", 0, "sentence_accuracy", "word_accuracy_mean",
                          change / len(utt.words))
                propagate("sentence", "accuracy", 0, d)
        elif level == "sentence" and aspect in ("accuracy", "fluency", "prosody"):
            nudge("sentence", "total", 0, "sentence_total", aspect, change)

    if _get(out, utt, *target) is None:
        raise ApaError(f"utterance {utt.id}: target {target} has no reference score")
    propagate(*target, write(*target, new_value))
    return out, changes


def make_pair(utt: Utterance, task: Task | str, slopes: Slopes, rng: np.random.Generator) -> Pair:
    """One simulated pair for ``utt``: y+ = the reference response, y- = one target moved.

    Draw order from ``rng``: field, item, magnitude, sign (the last two not for stress).
    Raises apa.targets.MissingScore when the reference lacks a score the task writes.
    """
    task = get_task(task) if isinstance(task, str) else task
    ref = rounded_reference(utt)
    chosen = format_scores(utt, task, ref)
    target = draw_target(utt, task, rng, ref)
    new_value = draw_new_value(_get(ref, utt, *target), target.level, target.aspect, rng)
    scores, changes = rejected_scores(utt, task, slopes, target, new_value, ref)
    return Pair(id=utt.id, chosen_text=chosen, rejected_text=format_scores(utt, task, scores),
                target=target, delta=changes[0].delta, changed=tuple(changes))


def pair_rng(seed: int, epoch: int, utt_id: str) -> np.random.Generator:
    """The Generator for one (seed, epoch, utterance): a stable hash, independent of order,
    process and PYTHONHASHSEED."""
    digest = hashlib.sha256(utt_id.encode("utf-8")).digest()
    words = [int.from_bytes(digest[k:k + 4], "little") for k in range(0, 16, 4)]
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), *words]))


def make_pairs(utterances: Iterable[Utterance], task: Task | str, slopes: Slopes, seed: int = 0,
               epoch: int = 0) -> list[Pair]:
    """One pair per utterance, drawn afresh for each epoch (pass a fixed ``epoch`` to keep
    the same pairs every epoch). The same (seed, epoch, id) always gives the same pair."""
    task = get_task(task) if isinstance(task, str) else task
    if int(seed) < 0 or int(epoch) < 0:
        raise ApaError(f"seed and epoch must be non-negative integers (got seed={seed}, epoch={epoch})")
    pairs = []
    for utt in utterances:
        try:
            pairs.append(make_pair(utt, task, slopes, pair_rng(seed, epoch, utt.id)))
        except MissingScore as e:
            raise ApaError(f"cannot build a pair for task {task.name!r}: {e}; drop such utterances "
                           "or choose a task that does not need this score") from e
    return pairs

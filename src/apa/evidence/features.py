"""What an evidence record says, in two forms: small integers for a prompt, and numeric
feature rows (sentence, word, phone) for a regression (apa baseline gop).

The prompt's figures:
- the sentence's accuracy and total and each word's accuracy *estimated* from the evidence
  on the 0-10 score scale, by fixed linear formulas over the regression rows below
  (``SENTENCE_ESTIMATES``, ``WORD_ESTIMATE``: least squares on speechocean762's training set,
  once, unmeasured values replaced by that set's means). A raw GOP says how a phone sounds
  in the model's log units; a small model trained from scratch did not learn to read those
  in three epochs (docs/real-data-proof.md), while a figure on the scale of its own answer
  is one it can take and correct;
- each phone's goodness 0-9: 9 when the reference phone is what the free phone loop hears
  best (GOP >= 0), one step lower for every ``GOP_STEP`` units below, so that 0 covers the
  worst tenth or so of speechocean762's phones;
- ``?`` for what could not be measured (a failed alignment).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from apa.data.manifest import Utterance

# GOP units (apa.evidence.acoustic) per step of the prompt's 0-9 scale.
GOP_STEP = 4.0
UNKNOWN = "?"


def gop_level(gop: float | None) -> str:
    """0-9 (9: sounds like the reference phone) or ``?``."""
    if gop is None or not math.isfinite(gop):
        return UNKNOWN
    return str(int(min(9, max(0, 9 + math.floor(gop / GOP_STEP)))))


def share_level(share: float | None) -> str:
    if share is None or not math.isfinite(share):
        return UNKNOWN
    return str(int(min(9, max(0, math.floor(share * 10)))))


def utterance_figures(record: dict[str, Any]) -> str:
    """The prompt's line of utterance figures, e.g. ``accuracy 7, total 7, phones heard 3, 9
    phones per second, 1 pause``."""
    u = record.get("utterance") or {}
    rate = u.get("phones_per_second")
    pauses = u.get("pauses") or 0
    row = sentence_row(record)
    parts = [f"{aspect} {score_level(_linear(coefficients, row, SENTENCE_MEANS))}"
             for aspect, coefficients in SENTENCE_ESTIMATES.items()]
    parts += [f"phones heard {share_level(u.get('match'))}",
              f"{UNKNOWN if rate is None else round(rate)} phones per second",
              f"{pauses} pause{'' if pauses == 1 else 's'}"]
    if not record.get("aligned"):
        parts.insert(0, "alignment failed")
    return ", ".join(parts)


def score_level(value: float) -> str:
    """An estimate written as a score: 0-10, rounded half up."""
    return str(int(min(10, max(0, math.floor(value + 0.5)))))


def _linear(coefficients: Sequence[float], row: Sequence[float], means: Sequence[float]) -> float:
    values = [m if math.isnan(v) else v for v, m in zip(row, means)]
    return coefficients[0] + sum(c * v for c, v in zip(coefficients[1:], values))


def word_levels(utt: Utterance) -> list[str]:
    """Each word's estimated accuracy 0-10 (``?`` when its alignment failed)."""
    record = utt.evidence or {}
    rows = word_rows(record, len(utt.words))
    return [score_level(_linear(WORD_ESTIMATE, row, WORD_MEANS)) if not math.isnan(row[0]) else UNKNOWN
            for row in rows]


def phone_levels(utt: Utterance) -> list[list[str]]:
    """0-9 per reference phone, grouped by word (``?`` where unknown)."""
    words = (utt.evidence or {}).get("words") or []
    out = []
    for i, word in enumerate(utt.words):
        phones = (words[i].get("phones") or []) if i < len(words) else []
        out.append([gop_level(phones[j].get("gop")) if j < len(phones) else UNKNOWN for j in range(len(word.phones))])
    return out


# ---- feature rows for a regression ----

SENTENCE_FEATURES = ("gop", "match", "phones_per_second", "pauses", "pause_seconds", "speech_seconds", "seconds",
                     "aligned", "low_words", "min_word_gop", "words")
WORD_FEATURES = ("gop", "match", "min_phone_gop", "phones", "seconds", "utterance_gop", "aligned")
PHONE_FEATURES = ("gop", "match", "seconds", "word_gop", "utterance_gop", "aligned")
# A word whose mean GOP is below this counts as badly said (about level 5 of the phone scale).
LOW_WORD_GOP = -4 * GOP_STEP

# The prompt's estimates (see the module docstring): intercept, then one coefficient per
# feature of SENTENCE_FEATURES / WORD_FEATURES; the means stand in for unmeasured values.
# Least squares on the 2,500 training utterances of speechocean762 (PCC on its test set:
# sentence accuracy 0.69, total 0.73, word accuracy 0.40; rounded as written: 0.66, 0.71, 0.39).
SENTENCE_MEANS = (-9.8869, 0.2913, 7.2915, 0.636, 0.419, 2.9272, 4.1416, 0.9964, 0.2305, -28.8869, 6.3396)
SENTENCE_ESTIMATES = {
    "accuracy": (7.0087, 0.06459, 0.77039, 0.07801, -0.22901, -0.03722, -0.00497, -0.0699, 1.19995, -0.4936,
                 -0.00299, -0.01475),
    "total": (6.43722, 0.08367, 0.55622, 0.12034, -0.31905, -0.11363, 0.03534, -0.07302, 1.23912, -0.50578,
              -0.00323, -0.04311),
}
WORD_MEANS = (-9.8454, 0.2915, -24.0051, 2.9703, 0.3897, -10.4336, 0.9964)
WORD_ESTIMATE = (9.00643, 0.01011, 0.10654, 0.01225, -0.06357, -0.37611, 0.05092, 1.54659)


def _value(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else math.nan


def sentence_row(record: dict[str, Any]) -> list[float]:
    u = record.get("utterance") or {}
    word_gops = [_value(w.get("gop")) for w in record.get("words") or []]
    defined = [g for g in word_gops if not math.isnan(g)]
    return [_value(u.get("gop")), _value(u.get("match")), _value(u.get("phones_per_second")),
            _value(u.get("pauses")), _value(u.get("pause_seconds")), _value(u.get("speech_seconds")),
            _value(record.get("seconds")), float(bool(record.get("aligned"))),
            float(np.mean([g < LOW_WORD_GOP for g in defined])) if defined else math.nan,
            min(defined) if defined else math.nan, float(len(word_gops))]


def word_rows(record: dict[str, Any], n_words: int) -> list[list[float]]:
    words = record.get("words") or []
    u_gop = _value((record.get("utterance") or {}).get("gop"))
    aligned = float(bool(record.get("aligned")))
    rows = []
    for i in range(n_words):
        w = words[i] if i < len(words) else {}
        phones = w.get("phones") or []
        gops = [_value(p.get("gop")) for p in phones]
        defined = [g for g in gops if not math.isnan(g)]
        seconds = (_value(w.get("end")) - _value(w.get("start")))
        rows.append([_value(w.get("gop")), _value(w.get("match")), min(defined) if defined else math.nan,
                     float(len(phones)), seconds, u_gop, aligned])
    return rows


def phone_rows(record: dict[str, Any], phones_per_word: Sequence[int]) -> list[list[float]]:
    words = record.get("words") or []
    u_gop = _value((record.get("utterance") or {}).get("gop"))
    aligned = float(bool(record.get("aligned")))
    rows = []
    for i, n in enumerate(phones_per_word):
        w = words[i] if i < len(words) else {}
        phones = w.get("phones") or []
        for j in range(n):
            p = phones[j] if j < len(phones) else {}
            rows.append([_value(p.get("gop")), _value(p.get("match")), _value(p.get("seconds")),
                         _value(w.get("gop")), u_gop, aligned])
    return rows

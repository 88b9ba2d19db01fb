"""What an evidence record says, in two forms: small integers for a prompt, and numeric
feature rows (sentence, word, phone) for a regression (apa baseline gop).

The prompt's scale: GOP per frame is mapped to 0-9, 9 when the reference phone is what the
free phone loop hears best (GOP >= 0), one step lower for every ``GOP_STEP`` units below, so
that 0 covers the worst tenth or so of speechocean762's words and phones; ``match`` (the
share of frames the loop hears as the reference phone) becomes 0-9 by tenths. A value that
could not be measured (failed alignment) is ``?``.
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
    """The prompt's line of utterance figures, e.g. ``goodness 7, phones heard 3, 9 phones per
    second, 1 pause``."""
    u = record.get("utterance") or {}
    rate = u.get("phones_per_second")
    pauses = u.get("pauses") or 0
    parts = [f"goodness {gop_level(u.get('gop'))}", f"phones heard {share_level(u.get('match'))}",
             f"{UNKNOWN if rate is None else round(rate)} phones per second",
             f"{pauses} pause{'' if pauses == 1 else 's'}"]
    if not record.get("aligned"):
        parts.insert(0, "alignment failed")
    return ", ".join(parts)


def word_levels(utt: Utterance) -> list[str]:
    words = (utt.evidence or {}).get("words") or []
    return [gop_level(words[i].get("gop")) if i < len(words) else UNKNOWN for i in range(len(utt.words))]


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
# A word whose mean GOP is below this counts as badly said (about level 5 of the prompt's scale).
LOW_WORD_GOP = -4 * GOP_STEP


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

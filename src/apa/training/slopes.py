"""Least-squares slopes that keep a simulated rejected response consistent (apa.training.pairs).

When a pair moves one score, the scores that depend on it move by these slopes (phone ->
word accuracy -> word total and sentence accuracy -> sentence total; sentence fluency and
prosody -> sentence total). They are fitted on the training split's unrounded human scores,
saved with a run and shown by `apa pairs`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from apa.data.manifest import Utterance
from apa.errors import ApaError
from apa.files import atomic_write_text

SLOPES_VERSION = 1

# relation name -> (response, predictors, description of the response and predictors)
RELATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "word_accuracy": ("word accuracy", ("phone_mean",)),
    "sentence_accuracy": ("sentence accuracy", ("word_accuracy_mean",)),
    "word_total": ("word total", ("accuracy", "stress")),
    "sentence_total": ("sentence total", ("accuracy", "fluency", "prosody")),
}
_PREDICTOR_NAMES = {"phone_mean": "mean phone accuracy of the word",
                    "word_accuracy_mean": "mean word accuracy"}


@dataclass(frozen=True)
class Fit:
    """One least-squares fit ``response = sum_k coef[k] * predictor_k + intercept``."""

    coef: dict[str, float]
    intercept: float
    n: int
    r2: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"coef": dict(self.coef), "intercept": self.intercept, "n": self.n, "r2": self.r2,
                "note": self.note}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Fit":
        return cls(coef={k: float(v) for k, v in data["coef"].items()}, intercept=float(data["intercept"]),
                   n=int(data["n"]), r2=data.get("r2"), note=data.get("note", ""))


@dataclass(frozen=True)
class Slopes:
    """The four fits of the consistency chain; a fit is None when the data had no rows for it."""

    word_accuracy: Fit | None = None
    sentence_accuracy: Fit | None = None
    word_total: Fit | None = None
    sentence_total: Fit | None = None

    def coef(self, relation: str, predictor: str) -> float:
        fit = getattr(self, relation)
        if fit is None:
            response, predictors = RELATIONS[relation]
            raise ApaError(f"cannot keep {response} consistent: the training manifest had no utterance "
                           f"with {response} and {', '.join(predictors)} scored, so no slope was fitted; "
                           "pass a training manifest (--train) that has these scores")
        return fit.coef[predictor]

    def to_dict(self) -> dict[str, Any]:
        return {"version": SLOPES_VERSION,
                "fits": {name: (None if getattr(self, name) is None else getattr(self, name).to_dict())
                         for name in RELATIONS}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Slopes":
        fits = data.get("fits") or {}
        return cls(**{name: (None if fits.get(name) is None else Fit.from_dict(fits[name])) for name in RELATIONS})

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Slopes":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ApaError(f"cannot read slopes from {path} ({e}); write them with `apa pairs`") from e

    def describe(self) -> list[str]:
        """One human-readable line per fit."""
        lines = []
        for name, (response, predictors) in RELATIONS.items():
            fit = getattr(self, name)
            if fit is None:
                lines.append(f"{response}: not fitted (no training rows with these scores)")
                continue
            terms = " + ".join(f"{fit.coef[p]:.4f} * {_PREDICTOR_NAMES.get(p, p)}" for p in predictors)
            r2 = "n/a" if fit.r2 is None else f"{fit.r2:.3f}"
            note = f"  [{fit.note}]" if fit.note else ""
            lines.append(f"{response} = {terms} + {fit.intercept:.4f}   (n={fit.n}, R^2={r2}){note}")
        return lines


def _least_squares(rows: list[list[float]], names: tuple[str, ...]) -> Fit | None:
    """Fit the last column of ``rows`` on the others plus an intercept.

    A predictor that is constant in the data cannot be told apart from the intercept: it
    gets coefficient 0 and a note, rather than an arbitrary split.
    """
    if not rows:
        return None
    data = np.asarray(rows, dtype=np.float64)
    x, y = data[:, :-1], data[:, -1]
    active = [k for k in range(x.shape[1]) if np.ptp(x[:, k]) > 0]
    design = np.column_stack([x[:, active], np.ones(len(y))])
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    coef = {name: 0.0 for name in names}
    for k, value in zip(active, solution[:-1]):
        coef[names[k]] = float(value)
    residual = y - design @ solution
    total = float(((y - y.mean()) ** 2).sum())
    r2 = None if total == 0 else 1.0 - float((residual ** 2).sum()) / total
    notes = [f"{names[k]} is constant in the data: coefficient set to 0"
             for k in range(x.shape[1]) if k not in active]
    if len(y) < len(active) + 1:
        notes.append(f"only {len(y)} rows for {len(active) + 1} parameters")
    return Fit(coef=coef, intercept=float(solution[-1]), n=len(y), r2=r2, note="; ".join(notes))


def fit_slopes(train_utterances: Iterable[Utterance]) -> Slopes:
    """Least-squares fits (with intercept) of the consistency chain on unrounded human scores.

    Each fit uses every item that has all of its scores: words with an accuracy and all
    phone scores; utterances with a sentence accuracy and every word's accuracy; words
    with accuracy, stress and total; utterances with accuracy, fluency, prosody, total.
    """
    word_acc, sent_acc, word_total, sent_total = [], [], [], []
    for utt in train_utterances:
        for word in utt.words:
            s = word.scores
            if (s.get("accuracy") is not None and word.phone_scores
                    and all(p is not None for p in word.phone_scores)):
                word_acc.append([float(np.mean(word.phone_scores)), s["accuracy"]])
            if all(s.get(a) is not None for a in ("accuracy", "stress", "total")):
                word_total.append([s["accuracy"], s["stress"], s["total"]])
        word_accs = [w.scores.get("accuracy") for w in utt.words]
        if utt.scores.get("accuracy") is not None and word_accs and all(a is not None for a in word_accs):
            sent_acc.append([float(np.mean(word_accs)), utt.scores["accuracy"]])
        if all(utt.scores.get(a) is not None for a in ("accuracy", "fluency", "prosody", "total")):
            sent_total.append([utt.scores[a] for a in ("accuracy", "fluency", "prosody", "total")])
    return Slopes(word_accuracy=_least_squares(word_acc, RELATIONS["word_accuracy"][1]),
                  sentence_accuracy=_least_squares(sent_acc, RELATIONS["sentence_accuracy"][1]),
                  word_total=_least_squares(word_total, RELATIONS["word_total"][1]),
                  sentence_total=_least_squares(sent_total, RELATIONS["sentence_total"][1]))

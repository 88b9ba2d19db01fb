"""The GOP baseline (`apa baseline gop`): a regression from a pretrained acoustic model's evidence
(apa.evidence) to every score of a task, fitted on a training manifest.

One regressor per (level, aspect): sentence scores from the utterance's figures, word scores
from the word's, phone scores from the phone's (with the phone's identity one-hot, the
per-phone offsets of the classic GOP recipes). The regressors are scikit-learn's:

- ``linear`` (default): mean imputation of what a failed alignment left unmeasured, scaling,
  and ridge regression (alpha 1): what the GOP literature reports as its baseline, cheap
  and hard to overfit;
- ``boosting``: histogram gradient boosting, which takes unmeasured values as they are and
  finds non-linear effects (the speaking rate's, for fluency), at some risk of overfitting.

Predictions are written as any model's (apa.predictions): ``expected`` holds the regression's
value clipped to the score range, ``scores`` that value rounded as a model would write it
(stress to the nearer of 5 and 10), so `apa evaluate` and `apa report` read them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from apa.data.manifest import SCORE_RANGE, STRESS_VALUES, Utterance
from apa.errors import ApaError
from apa.evidence.features import (PHONE_FEATURES, SENTENCE_FEATURES, WORD_FEATURES, phone_rows, sentence_row,
                                   word_rows)
from apa.evidence.acoustic import sphinx_phone
from apa.targets import ScoreSet, reference_scores, round_half_up
from apa.tasks import Task

REGRESSORS = ("linear", "boosting")
FEATURES = {"sentence": SENTENCE_FEATURES, "word": WORD_FEATURES, "phone": PHONE_FEATURES}
# The acoustic model's phones (the one-hot of a phone's identity; an unknown one is all zeros).
PHONES = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z "
          "ZH").split()


def _regressor(kind: str, seed: int):
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "linear":
        return make_pipeline(SimpleImputer(strategy="mean", keep_empty_features=True), StandardScaler(), Ridge(alpha=1.0))
    if kind == "boosting":
        return HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, min_samples_leaf=40, random_state=seed)
    raise ApaError(f"unknown regressor {kind!r}; choose one of: {', '.join(REGRESSORS)}")


def _phone_identity(utt: Utterance) -> list[list[float]]:
    rows = []
    for word in utt.words:
        for phone in word.phones:
            one_hot = [0.0] * len(PHONES)
            name = sphinx_phone(phone)
            if name in PHONES:
                one_hot[PHONES.index(name)] = 1.0
            rows.append(one_hot)
    return rows


def feature_rows(utt: Utterance, level: str) -> list[list[float]]:
    """The rows of one utterance at ``level`` (one per sentence, word or phone)."""
    if utt.evidence is None:
        raise ApaError(f"utterance {utt.id} has no evidence; compute it with `apa evidence MANIFEST`")
    if level == "sentence":
        return [sentence_row(utt.evidence)]
    if level == "word":
        return word_rows(utt.evidence, len(utt.words))
    rows = phone_rows(utt.evidence, [len(w.phones) for w in utt.words])
    return [row + one_hot for row, one_hot in zip(rows, _phone_identity(utt))]


@dataclass
class GopBaseline:
    task: Task
    regressor: str
    models: dict[tuple[str, str], Any]
    train_items: dict[str, int]

    @classmethod
    def fit(cls, utts: Sequence[Utterance], task: Task, regressor: str = "linear", seed: int = 0) -> "GopBaseline":
        """One regressor per field of ``task`` on every labelled item of ``utts``."""
        models, counts = {}, {}
        references = [reference_scores(utt) for utt in utts]
        rows = {level: [feature_rows(utt, level) for utt in utts] for level in task.levels}  # once per level
        for level, aspect in task.fields:
            x, y = [], []
            for utt_rows, reference in zip(rows[level], references):
                for row, value in zip(utt_rows, reference.get(level, aspect)):
                    if value is not None:
                        x.append(row)
                        y.append(float(value))
            if len(y) < 2:
                raise ApaError(f"the training manifest has {len(y)} labelled {level} {aspect} score(s); "
                               "a regression needs more")
            model = _regressor(regressor, seed)
            model.fit(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
            models[(level, aspect)] = model
            counts[f"{level} {aspect}"] = len(y)
        return cls(task=task, regressor=regressor, models=models, train_items=counts)

    def predict(self, utt: Utterance) -> dict[str, Any]:
        """A prediction record (apa.predictions) of one utterance."""
        expected = ScoreSet(sentence={}, words=[{} for _ in utt.words] if self.task.word else [],
                            phones=[[None] * len(w.phones) for w in utt.words] if self.task.phone else [])
        rows = {level: np.asarray(feature_rows(utt, level), dtype=float) for level in self.task.levels}
        for (level, aspect), model in self.models.items():
            values = np.clip(model.predict(rows[level]), *SCORE_RANGE)
            _place(expected, utt, level, aspect, [float(v) for v in values])
        return {"id": utt.id, "scores": _rounded(expected).to_dict(), "problems": [],
                "expected": expected.to_dict()}


def _place(scores: ScoreSet, utt: Utterance, level: str, aspect: str, values: list[float]) -> None:
    if level == "sentence":
        scores.sentence[aspect] = values[0]
    elif level == "word":
        for word, value in zip(scores.words, values):
            word[aspect] = value
    else:
        flat = iter(values)
        scores.phones = [[next(flat) for _ in w.phones] for w in utt.words]


def _written(aspect: str, level: str, value: float | None) -> int | None:
    if value is None:
        return None
    if level == "word" and aspect == "stress":
        return min(STRESS_VALUES, key=lambda v: abs(v - value))
    return round_half_up(value)


def _rounded(expected: ScoreSet) -> ScoreSet:
    return ScoreSet(sentence={a: _written(a, "sentence", v) for a, v in expected.sentence.items()},
                    words=[{a: _written(a, "word", v) for a, v in w.items()} for w in expected.words],
                    phones=[[_written("accuracy", "phone", v) for v in p] for p in expected.phones])

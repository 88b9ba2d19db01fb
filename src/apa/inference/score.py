"""Audio + reference text -> sentence, word and phone scores: the one result schema of
``apa score`` and ``apa serve``.

Text is normalised as a learner types it (apa.data.textnorm: punctuation, numbers in words,
unicode quotes, hyphens) and each word's reference phones come from apa.data.lexicon: the
model's own training lexicon (``lexicon.txt`` saved with the adapter) or ``--lexicon``,
then the CMU Pronouncing Dictionary (first pronunciation, stress marks as they are), then
the possessive or plural of a known word, then a guess by eSpeak NG (apa.data.g2p, the
optional ``g2p`` extra). A guessed word is marked ``"guessed": true``: its phone scores are
against a guessed reference.

Result of one recording (:class:`ScoreResult`; every score on the 0-10 scale)::

    {"text": "WE CALL IT BEAR", "input_text": "We call it bear.", "task": "multi", "decoding": "constrained",
     "sentence": {"accuracy": {"score": 8, "expected": 7.84}, ...},
     "words": [{"word": "WE", "phones": ["W", "IY1"],
                "scores": {"accuracy": {"score": 10, "expected": 9.61}, "stress": ..., "total": ...},
                "phone_scores": [{"phone": "W", "score": 10, "expected": 9.7}, ...]}, ...],
     "practice": {"threshold": 8.0,
                  "words": [{"index": 3, "word": "BEAR", "score": 6, "expected": 6.2}],
                  "phones": [{"word_index": 3, "word": "BEAR", "phone_index": 1, "phone": "EH1",
                              "score": 5, "expected": 5.4}]},
     "problems": []}

``score`` is the most likely integer score (read from the response text), ``expected`` the
mean of the model's distribution over scores (constrained decoding; null under free
decoding, which has no distribution). Levels the task does not score are empty (``{}``,
``[]``). ``practice`` lists the words and phones whose accuracy (expected, else score) is
below the threshold, worst first. ``problems`` lists what could not be read from the
model's response (always empty under constrained decoding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

try:  # pydantic (the HTTP service's schema) needs typing_extensions' TypedDict before 3.12
    from typing_extensions import TypedDict
except ImportError:  # pragma: no cover
    from typing import TypedDict

from apa.data.audio import LONGEST_RECORDING_SECONDS, SAMPLE_RATE, AudioError, check_clip, to_mono_16k
from apa.data.manifest import Utterance, Word
from apa.data.lexicon import Pronouncer
from apa.data.textnorm import normalise_words
from apa.errors import ApaError
from apa.evidence.acoustic import clip_evidence
from apa.inference.decoding import decode_batch, resolve_decoding
from apa.predictions import prediction_record
from apa.targets import round_half_up
from apa.tasks import Task, get_task

DEFAULT_DECODING = "constrained"
DEFAULT_TASK = "multi"
PRACTICE_THRESHOLD = 8.0
EXPECTED_DECIMALS = 3  # expected scores are rounded for display: 0.001 of a 0-10 score

# --------------------------------------------------------------------------------------
# The result schema (plain TypedDicts: no pydantic needed for `apa score`; the HTTP service
# hands them to FastAPI, which documents them in its OpenAPI schema)
# --------------------------------------------------------------------------------------

# pydantic reads this when it builds the schema: attribute docstrings become descriptions,
# and a result with a key the schema does not name fails validation instead of leaking out.
_SCHEMA_CONFIG = {"use_attribute_docstrings": True, "extra": "forbid"}


class AspectScore(TypedDict):
    """One aspect of a sentence or a word."""

    __pydantic_config__ = _SCHEMA_CONFIG  # type: ignore[misc]
    score: Optional[int]
    """Most likely integer score 0-10 (stress: 5 or 10); null when the response lacks it."""
    expected: Optional[float]
    """Expected score under the model's distribution (constrained decoding); null otherwise."""


class PhoneScore(TypedDict):
    """Accuracy of one phone of a word."""

    __pydantic_config__ = _SCHEMA_CONFIG  # type: ignore[misc]
    phone: str
    """Reference phone (CMU ARPAbet with stress mark, e.g. AO1)."""
    score: Optional[int]
    """Most likely integer score 0-10; null when the response lacks it."""
    expected: Optional[float]
    """Expected score (constrained decoding); null otherwise."""


class WordResult(TypedDict):
    """One word of the reference text."""

    __pydantic_config__ = _SCHEMA_CONFIG  # type: ignore[misc]
    word: str
    """The normalised word (upper case), as given to the model."""
    phones: list[str]
    """Its reference phones."""
    guessed: bool
    """True when no lexicon knows the word and its phones were guessed (eSpeak NG)."""
    scores: dict[str, AspectScore]
    """Word aspects of the task (accuracy, stress, total); empty when the task scores no words."""
    phone_scores: list[PhoneScore]
    """One entry per phone; empty when the task scores no phones."""
    start: Optional[float]
    """Where the word begins in the clip (seconds), from the acoustic model's alignment; null when
    the alignment failed."""
    end: Optional[float]
    """Where the word ends in the clip (seconds); null when the alignment failed."""


class PracticeWord(TypedDict):
    """A word whose accuracy is below the practice threshold."""

    __pydantic_config__ = _SCHEMA_CONFIG  # type: ignore[misc]
    index: int
    """Position of the word in the text (0-based)."""
    word: str
    score: Optional[int]
    """Most likely word accuracy."""
    expected: Optional[float]
    """Expected word accuracy (the sort key when present)."""


class PracticePhone(TypedDict):
    """A phone whose accuracy is below the practice threshold."""

    __pydantic_config__ = _SCHEMA_CONFIG  # type: ignore[misc]
    word_index: int
    """Position of its word in the text (0-based)."""
    word: str
    phone_index: int
    """Position of the phone in its word (0-based)."""
    phone: str
    score: Optional[int]
    expected: Optional[float]


class Practice(TypedDict):
    """What to practise: words and phones below the threshold, worst first."""

    __pydantic_config__ = _SCHEMA_CONFIG  # type: ignore[misc]
    threshold: float
    """Accuracy (0-10) under which a word or phone is listed."""
    words: list[PracticeWord]
    phones: list[PracticePhone]


class ScoreResult(TypedDict):
    """Scores of one recording against its reference text."""

    __pydantic_config__ = _SCHEMA_CONFIG  # type: ignore[misc]
    text: str
    """The normalised reference text that was scored (numbers in words, upper case)."""
    input_text: str
    """The text as it was given, before normalisation."""
    task: str
    """The task (which levels and aspects are scored)."""
    decoding: str
    """Decoding mode: constrained (scores + expected scores) or free (plain greedy text)."""
    sentence: dict[str, AspectScore]
    """Sentence aspects of the task; empty when the task scores no sentence aspects."""
    words: list[WordResult]
    practice: Practice
    problems: list[str]
    """What could not be read from the model's response; empty when everything parsed."""


# --------------------------------------------------------------------------------------
# Text -> reference words and phones
# --------------------------------------------------------------------------------------

@dataclass
class Reference:
    """The words of a text with their reference phones, and which of them were guessed."""

    utt: Utterance
    guessed: list[bool]
    input_text: str


def text_to_reference(text: str, lexicon: dict[str, list[str]] | None = None, guess: bool = True,
                      max_words: int | None = None, uid: str = "input") -> Reference:
    """Normalised words of ``text`` with their phones (apa.data.lexicon's order of sources);
    ApaError for an empty text, one over ``max_words`` words or words none can pronounce."""
    if not isinstance(text, str) or not text.strip():
        raise ApaError("the reference text is empty; give the sentence the speaker read")
    words = normalise_words(text)
    if not words:
        raise ApaError(f"the reference text {text[:80]!r} holds no words; give the sentence the speaker read")
    if max_words is not None and len(words) > max_words:
        raise ApaError(f"the reference text has {len(words)} words; at most {max_words} are scored in one "
                       "request: split it into sentences and record each")
    found = Pronouncer(lexicon, guess=guess).look_up(words)
    utt = Utterance(id=uid, audio="<memory>", text=" ".join(words),
                    words=[Word(text=w, phones=list(p.phones)) for w, p in zip(words, found)])
    return Reference(utt, [p.guessed for p in found], text)


def text_to_utterance(text: str, lexicon: dict[str, list[str]] | None = None, uid: str = "input") -> Utterance:
    """An unscored Utterance for ``text``: normalised words with their reference phones."""
    return text_to_reference(text, lexicon, uid=uid).utt


def score_slots(utt: Utterance, task: Task) -> int:
    """How many scores the response holds: the cost of a request (constrained decoding makes
    2 x slots + 1 sequential model calls; free decoding's length grows the same way)."""
    from apa.targets import Slot, response_template

    return sum(isinstance(part, Slot) for part in response_template(utt, task))


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------

@dataclass
class Recording:
    """A validated input: 16 kHz mono samples and the reference utterance (with which words
    were guessed, and the text as given)."""

    audio: np.ndarray
    utt: Utterance
    guessed: list[bool] = field(default_factory=list)
    input_text: str | None = None
    notes: list[str] = field(default_factory=list)
    """What the learner should know about the audio (a cut upload): first in ``problems``."""
    evidence: dict | None = None
    """The acoustic model's evidence (apa.evidence): computed by score_prepared when not given."""


def prepare_recording(audio: np.ndarray, text: str, lexicon: dict[str, list[str]] | None = None,
                      max_seconds: float | None = None, name: str = "audio", guess: bool = True) -> Recording:
    """Check one input before it reaches the model: words pronounceable (UnknownWords),
    audio finite, not empty, too short, silent or too long (AudioError). ``audio``: float
    samples at 16 kHz, mono or (frames, channels)."""
    reference = text_to_reference(text, lexicon, guess=guess)
    samples = to_mono_16k(np.asarray(audio, dtype=np.float32), SAMPLE_RATE, name=name)
    check_clip(samples, name, max_seconds)
    return Recording(samples, reference.utt, reference.guessed, reference.input_text)


def _finite(value: Any) -> float | None:
    """A score as a float, or None when it is missing or not finite: a NaN from a broken
    model must not reach a client, and JSON has no NaN."""
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _int_score(value: Any) -> int | None:
    value = _finite(value)
    return None if value is None else round_half_up(value)


def _expected(value: Any) -> float | None:
    value = _finite(value)
    return None if value is None else round(value, EXPECTED_DECIMALS)


def _aspect(scores: dict, expected: dict | None, aspect: str) -> AspectScore:
    return {"score": _int_score(scores.get(aspect)),
            "expected": _expected((expected or {}).get(aspect))}


def _sort_key(entry: dict) -> tuple:
    value = entry["expected"] if entry["expected"] is not None else entry["score"]
    return (value, entry.get("index", entry.get("word_index")), entry.get("phone_index", 0))


def _below(entry: dict, threshold: float) -> bool:
    value = entry["expected"] if entry["expected"] is not None else entry["score"]
    return value is not None and value < threshold


def build_result(utt: Utterance, task: Task, record: dict, decoding: str,
                 threshold: float = PRACTICE_THRESHOLD, guessed: Sequence[bool] = (),
                 input_text: str | None = None, evidence: dict | None = None) -> ScoreResult:
    """The result schema from a prediction record (apa.predictions.prediction_record);
    ``guessed`` marks words whose phones were guessed; ``evidence`` (apa.evidence) gives
    each word's place in the clip."""
    aligned_words = (evidence or {}).get("words") or []
    scores = record["scores"]
    expected = record.get("expected") or {}
    exp_words = expected.get("words") or [{} for _ in utt.words]
    exp_phones = expected.get("phones") or [[None] * len(w.phones) for w in utt.words]

    sentence = {a: _aspect(scores["sentence"], expected.get("sentence"), a) for a in task.sentence}
    words: list[WordResult] = []
    practice_words: list[PracticeWord] = []
    practice_phones: list[PracticePhone] = []
    for i, word in enumerate(utt.words):
        word_scores = {a: _aspect(scores["words"][i], exp_words[i], a) for a in task.word}
        phone_scores: list[PhoneScore] = []
        if task.phone:
            for j, phone in enumerate(word.phones):
                entry = {"phone": phone, "score": _int_score(scores["phones"][i][j]),
                         "expected": _expected(exp_phones[i][j])}
                phone_scores.append(entry)  # type: ignore[arg-type]
                if _below(entry, threshold):
                    practice_phones.append({"word_index": i, "word": word.text, "phone_index": j, **entry})
        place = aligned_words[i] if i < len(aligned_words) else {}
        words.append({"word": word.text, "phones": list(word.phones), "guessed": bool(i < len(guessed) and guessed[i]),
                      "scores": word_scores, "phone_scores": phone_scores,
                      "start": place.get("start"), "end": place.get("end")})
        if "accuracy" in word_scores:
            entry = {"index": i, "word": word.text, **word_scores["accuracy"]}
            if _below(entry, threshold):
                practice_words.append(entry)  # type: ignore[arg-type]
    practice_words.sort(key=_sort_key)
    practice_phones.sort(key=_sort_key)
    return {"text": utt.text, "input_text": utt.text if input_text is None else input_text, "task": task.name, "decoding": decoding, "sentence": sentence, "words": words,
            "practice": {"threshold": float(threshold), "words": practice_words, "phones": practice_phones},
            "problems": list(record.get("problems") or [])}


def score_prepared(model, processor, recordings: Sequence[Recording], task: Task | str = DEFAULT_TASK,
                   decoding: str = DEFAULT_DECODING, threshold: float = PRACTICE_THRESHOLD,
                   between_calls: Callable[[], None] | None = None) -> list[ScoreResult]:
    """Score validated recordings in ONE model batch (the HTTP service's batches come here).
    ``between_calls`` (see apa.inference.decoding.decode_batch) runs before every model call:
    it may raise to stop the batch (a deadline, clients gone) or wait (give way)."""
    if not recordings:
        return []
    task = get_task(task) if isinstance(task, str) else task
    decoding = resolve_decoding(decoding)
    for r in recordings:  # word times for every model; the prompt's evidence for a model trained with it
        if r.evidence is None:
            r.evidence = clip_evidence(r.audio, [w.phones for w in r.utt.words])
        if processor.evidence:
            r.utt.evidence = r.evidence
    utts = [r.utt for r in recordings]
    decoded = decode_batch(model, processor, utts, task, audios=[r.audio for r in recordings],
                           decoding=decoding, between_calls=between_calls)
    results = [build_result(r.utt, task, prediction_record(r.utt, task, d), decoding, threshold, r.guessed,
                            r.input_text, r.evidence) for r, d in zip(recordings, decoded)]
    for recording, result in zip(recordings, results):
        result["problems"][:0] = recording.notes
    return results


def clip_limit(processor, max_seconds: float | None = None) -> float:
    """The longest clip to accept: the model's audio window (a longer clip would be cut
    silently; LONGEST_RECORDING_SECONDS for a model without one), or ``max_seconds`` when it
    is shorter."""
    window = processor.audio_window_seconds or LONGEST_RECORDING_SECONDS
    return window if max_seconds is None else min(float(max_seconds), window)


AudioItem = Union[np.ndarray, Sequence[float]]


def score_recordings(model, processor, items: Sequence[tuple[AudioItem, str]], task: Task | str = DEFAULT_TASK,
                     decoding: str = DEFAULT_DECODING, batch_size: int = 8,
                     lexicon: dict[str, list[str]] | None = None, threshold: float = PRACTICE_THRESHOLD,
                     max_seconds: float | None = None) -> list[ScoreResult]:
    """Score each ``(audio, text)``: audio as float samples at 16 kHz (mono, or frames x
    channels; see apa.data.audio.load_audio / decode_audio_bytes for files), text the
    sentence that was read. Every input is checked before the model runs (ApaError naming
    the item; clips up to the model's audio window, or ``max_seconds`` when shorter); then
    batches of ``batch_size``. Returns one ScoreResult per item, in order."""
    if batch_size < 1:
        raise ApaError(f"batch size must be at least 1, got {batch_size}")
    task = get_task(task) if isinstance(task, str) else task
    decoding = resolve_decoding(decoding)
    max_seconds = clip_limit(processor, max_seconds)
    recordings = []
    for k, (audio, text) in enumerate(items):
        name = "audio" if len(items) == 1 else f"audio of item {k}"
        try:
            recordings.append(prepare_recording(audio, text, lexicon, max_seconds, name=name))
        except AudioError:
            raise  # already names the item
        except ApaError as e:
            if len(items) == 1:
                raise
            raise ApaError(f"item {k}: {e}") from None
    results: list[ScoreResult] = []
    for start in range(0, len(recordings), batch_size):
        results += score_prepared(model, processor, recordings[start:start + batch_size], task, decoding,
                                  threshold)
    return results

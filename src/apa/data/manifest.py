"""One schema for a scored utterance, stored as JSONL, with validation that names every problem.

A manifest line looks like this (any score may be absent; ``phone_scores`` may be null for a
corpus without phone labels, like the paper's private set)::

    {"id": "000010011", "audio": "../so762/WAVE/SPEAKER0001/000010011.ogg",
     "text": "WE CALL IT BEAR", "speaker": "0001",
     "speaker_info": {"age": 6, "gender": "m"}, "duration": 2.58,
     "scores": {"accuracy": 8, "fluency": 9, "prosody": 9, "completeness": 10, "total": 7},
     "words": [{"text": "WE", "phones": ["W", "IY0"],
                "scores": {"accuracy": 10, "stress": 10, "total": 10},
                "phone_scores": [10, 10]}, ...]}

All scores are on the 0-10 scale (SO762 phone scores are stored x5). A relative ``audio``
path is resolved against the manifest's own folder, so a manifest and its audio can move
together.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from apa.errors import ApaError, problem_list
from apa.files import atomic_write

LEVELS = ("sentence", "word", "phone")
# The score fields: canonical order of aspects inside each level (a task keeps this order and
# drops the rest), the range of every score and the two values of word stress.
ASPECTS = {
    "sentence": ("accuracy", "fluency", "prosody", "completeness", "total"),
    "word": ("accuracy", "stress", "total"),
    "phone": ("accuracy",),
}
SCORE_RANGE = (0.0, 10.0)
STRESS_VALUES = (5, 10)
# Manifests store scores rounded to this many decimals: enough for SO762's 0.2-step phone
# scores x5 and fractional completeness, and stable across runs (1.8 * 5 = 9.000000000000002).
SCORE_DECIMALS = 4


@dataclass
class Word:
    text: str
    phones: list[str]
    scores: dict[str, float] = field(default_factory=dict)
    phone_scores: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "phones": list(self.phones), "scores": dict(self.scores),
                "phone_scores": None if self.phone_scores is None else list(self.phone_scores)}


@dataclass
class Utterance:
    id: str
    audio: str
    text: str
    words: list[Word]
    speaker: str | None = None
    speaker_info: dict[str, Any] | None = None
    duration: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    # Folder the manifest was read from; relative audio paths are resolved against it.
    base_dir: Path | None = field(default=None, repr=False, compare=False)
    # Acoustic evidence (apa.evidence), kept in its own file beside the manifest and attached by
    # the commands that use it; when set, the prompt carries it (apa.prompts).
    evidence: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def audio_path(self) -> Path:
        path = Path(self.audio)
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        return path

    @property
    def phone_sequence(self) -> str:
        """Canonical phones, words joined by ' - ' (the prompt's reference phone sequence)."""
        return " - ".join(" ".join(w.phones) for w in self.words)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "audio": self.audio, "text": self.text,
                               "speaker": self.speaker}
        if self.speaker_info is not None:
            out["speaker_info"] = self.speaker_info
        if self.duration is not None:
            out["duration"] = self.duration
        out["scores"] = dict(self.scores)
        out["words"] = [w.to_dict() for w in self.words]
        return out


class ManifestProblems(ApaError):
    """Every problem found in one manifest, each as ``FILE:LINE: field: what is wrong``."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in manifest:\n{problem_list(problems)}")


def _score_problems(where: str, scores: Any, level: str) -> list[str]:
    if not isinstance(scores, dict):
        return [f"{where}: expected an object of scores, got {type(scores).__name__}"]
    problems = []
    for aspect, value in scores.items():
        if aspect not in ASPECTS[level]:
            problems.append(f"{where}.{aspect}: unknown {level} aspect (known: {', '.join(ASPECTS[level])})")
        elif value is None:
            continue
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}.{aspect}: score {value!r} is not a number")
        elif not SCORE_RANGE[0] <= value <= SCORE_RANGE[1]:
            problems.append(f"{where}.{aspect}: score {value} is outside 0-10")
        elif level == "word" and aspect == "stress" and value not in STRESS_VALUES:
            problems.append(f"{where}.stress: stress score {value} must be 5 or 10")
    return problems


def record_problems(record: Any) -> list[str]:
    """Schema problems of one decoded JSON record, as ``field: message`` strings."""
    if not isinstance(record, dict):
        return [f"record: expected a JSON object, got {type(record).__name__}"]
    problems = []
    for key in ("id", "audio", "text"):
        if not isinstance(record.get(key), str) or not record.get(key):
            problems.append(f"{key}: missing or not a non-empty string")
    problems += _score_problems("scores", record.get("scores", {}), "sentence")
    words = record.get("words")
    if not isinstance(words, list) or not words:
        return problems + ["words: missing or empty list"]
    for i, word in enumerate(words):
        where = f"words[{i}]"
        if not isinstance(word, dict):
            problems.append(f"{where}: expected an object")
            continue
        if not isinstance(word.get("text"), str) or not word["text"]:
            problems.append(f"{where}.text: missing or empty")
        phones = word.get("phones")
        if not isinstance(phones, list) or not phones or not all(isinstance(p, str) and p for p in phones):
            problems.append(f"{where}.phones: expected a non-empty list of phone strings")
            phones = None
        problems += _score_problems(f"{where}.scores", word.get("scores", {}), "word")
        phone_scores = word.get("phone_scores")
        if phone_scores is None:
            continue
        if not isinstance(phone_scores, list):
            problems.append(f"{where}.phone_scores: expected a list or null")
            continue
        if phones is not None and len(phone_scores) != len(phones):
            problems.append(f"{where}.phone_scores: {len(phone_scores)} scores for "
                            f"{len(phones)} phones ({' '.join(phones)})")
        for j, value in enumerate(phone_scores):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"{where}.phone_scores[{j}]: score {value!r} is not a number")
            elif not SCORE_RANGE[0] <= value <= SCORE_RANGE[1]:
                problems.append(f"{where}.phone_scores[{j}]: score {value} is outside 0-10 "
                                "(phone scores are stored x5, on the 0-10 scale)")
    if isinstance(record.get("text"), str) and isinstance(words, list):
        n_text = len(record["text"].split())
        if n_text != len(words):
            problems.append(f"words: {len(words)} words but text has {n_text} ({record['text']!r})")
    return problems


def utterance_from_dict(record: dict[str, Any], base_dir: Path | None = None) -> Utterance:
    words = [Word(text=w["text"], phones=list(w["phones"]), scores=dict(w.get("scores") or {}),
                  phone_scores=None if w.get("phone_scores") is None else list(w["phone_scores"]))
             for w in record["words"]]
    return Utterance(id=record["id"], audio=record["audio"], text=record["text"], words=words,
                     speaker=record.get("speaker"), speaker_info=record.get("speaker_info"),
                     duration=record.get("duration"), scores=dict(record.get("scores") or {}),
                     base_dir=base_dir)


def read_manifest(path: str | os.PathLike, check_audio: bool = False) -> list[Utterance]:
    """Read and validate a manifest; raise ManifestProblems listing every problem found."""
    path = Path(path)
    if not path.is_file():
        raise ApaError(f"manifest {path} does not exist; create it with `apa prepare` or pass the right path")
    problems: list[str] = []
    utterances: list[Utterance] = []
    seen: dict[str, int] = {}
    base_dir = path.resolve().parent
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})")
                continue
            record_errors = record_problems(record)
            if record_errors:
                problems += [f"{path}:{lineno}: {p}" for p in record_errors]
                continue
            utt = utterance_from_dict(record, base_dir)
            if utt.id in seen:
                problems.append(f"{path}:{lineno}: id: duplicate id {utt.id!r} (first on line {seen[utt.id]})")
                continue
            seen[utt.id] = lineno
            if check_audio:
                from apa.data.audio import audio_problem

                problem = audio_problem(utt.audio_path)
                if problem:
                    problems.append(f"{path}:{lineno}: audio: {problem}")
            utterances.append(utt)
    if problems:
        raise ManifestProblems(problems)
    if not utterances:
        raise ApaError(f"manifest {path} holds no utterances")
    return utterances


def write_manifest(path: str | os.PathLike, utterances: Iterable[Utterance]) -> None:
    """Write atomically (temp file + rename) so an interrupted run never leaves half a manifest."""
    with atomic_write(path) as f:
        for utt in utterances:
            f.write(json.dumps(utt.to_dict(), ensure_ascii=False, sort_keys=False) + "\n")


def round_score(value: float) -> float:
    """Store a score with a fixed number of decimals; integral values become ints."""
    value = round(float(value), SCORE_DECIMALS)
    return int(value) if value == int(value) else value

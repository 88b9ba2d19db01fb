"""Prediction files: one JSON line per utterance, written by `apa predict`, read by `apa evaluate`.

A record::

    {"id": "000010011", "output": "Sentence Scores: 8 9 9 10 8\\n...",
     "scores": {"sentence": {...}, "words": [...], "phones": [...]}, "problems": [],
     "expected": {"sentence": {...}, ...}}

``output`` is the response text; ``scores`` its parse (apa.targets.parse_scores, a
ScoreSet dict) and ``problems`` the parser's problems; ``expected`` (constrained decoding
only) the expected value of every score. A file written by other tools needs only ``id``
and ``output`` (or ``scores``).

`apa predict` appends one batch at a time (flushed and fsynced: a crash loses at most the
batch being decoded, and a half-written last line is cut on resume), then rewrites the file
in manifest order, atomically. `apa evaluate` reads it strictly and names every bad line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Mapping

from apa.data.manifest import Utterance
from apa.errors import ApaError, problem_list
from apa.files import atomic_write_lines
from apa.targets import ScoreSet, parse_scores
from apa.tasks import Task


def prediction_record(utt: Utterance, task: Task, decoded: Mapping[str, Any] | str) -> dict:
    """One line of a predictions file from a decoder's result (its text, optional expected)."""
    if isinstance(decoded, str):
        decoded = {"output": decoded}
    parsed = parse_scores(decoded["output"], utt, task)
    # a decoder may know of problems the text does not show (apa.inference.vllm_engine)
    record = {"id": utt.id, "output": decoded["output"], "scores": parsed.scores.to_dict(),
              "problems": list(decoded.get("problems") or []) + parsed.problems}
    if "expected" in decoded:
        record["expected"] = decoded["expected"]
    return record


@dataclass
class Prediction:
    """A validated record."""

    id: str
    output: str | None = None
    scores: ScoreSet | None = None
    expected: ScoreSet | None = None
    problems: list[str] | None = None  # parse problems recorded with "scores"
    where: str = ""  # "FILE:LINE" for messages

    @classmethod
    def from_record(cls, record: Any, where: str = "") -> "Prediction":
        """Build from one decoded JSON line; ValueError lists every schema problem."""
        problems = record_problems(record)
        if problems:
            raise ValueError("; ".join(problems))
        return cls(id=record["id"], output=record.get("output"),
                   scores=ScoreSet.from_dict(record["scores"]) if record.get("scores") is not None else None,
                   expected=ScoreSet.from_dict(record["expected"]) if record.get("expected") is not None else None,
                   problems=record.get("problems"), where=where)


def _scoreset_problems(key: str, data: Any) -> list[str]:
    if data is None:
        return []
    if not isinstance(data, dict):
        return [f"{key}: expected an object like ScoreSet.to_dict(), got {type(data).__name__}"]
    problems = []
    if not isinstance(data.get("sentence") or {}, dict):
        problems.append(f"{key}.sentence: expected an object of aspect -> score")
    words = data.get("words") or []
    if not isinstance(words, list) or not all(isinstance(w, dict) for w in words):
        problems.append(f"{key}.words: expected a list of objects of aspect -> score")
    phones = data.get("phones") or []
    if not isinstance(phones, list) or not all(isinstance(p, list) for p in phones):
        problems.append(f"{key}.phones: expected a list (one per word) of lists of scores")
    return problems


def record_problems(record: Any) -> list[str]:
    """What is wrong with one decoded line as a prediction record (empty when it is fine)."""
    if not isinstance(record, dict):
        return [f"expected a JSON object, got {type(record).__name__}"]
    problems = []
    if not isinstance(record.get("id"), str) or not record.get("id"):
        problems.append("id: missing or not a non-empty string")
    if "output" not in record and record.get("scores") is None:
        problems.append('neither "output" nor "scores" is given')
    if record.get("output") is not None and not isinstance(record["output"], str):
        problems.append(f"output: expected text, got {type(record['output']).__name__}")
    recorded = record.get("problems")
    if recorded is not None and (not isinstance(recorded, list) or not all(isinstance(p, str) for p in recorded)):
        problems.append("problems: expected a list of strings")
    problems += _scoreset_problems("scores", record.get("scores"))
    problems += _scoreset_problems("expected", record.get("expected"))
    return problems


def _parse_lines(path: Path, text: str) -> tuple[list[tuple[int, Any]], list[str]]:
    """(line number, decoded JSON) of every non-blank line, and the lines that are not JSON."""
    decoded, problems = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            decoded.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            problems.append(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})")
    return decoded, problems


def read_records(path: str | os.PathLike, repair: bool = False) -> list[dict]:
    """The records of a predictions file being written (for resuming): [] when it does not
    exist. A last line cut off by a crash is ignored, and with ``repair`` cut from the file so
    that appending starts on a fresh line; any other bad line is an error."""
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if repair and end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)
    decoded, problems = _parse_lines(path, data[:end].decode("utf-8"))
    for lineno, record in decoded:
        if not isinstance(record, dict) or "id" not in record:
            problems.append(f"{path}:{lineno}: not a record of apa (no 'id')")
    if problems:
        raise ApaError(f"{problems[0]}; remove the line or choose another --out")
    return [record for _, record in decoded]


def read_predictions(path: str | os.PathLike) -> list[Prediction]:
    """Read a finished predictions file strictly; ApaError names every bad line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ApaError(f"predictions file {path} does not exist; write it with `apa predict` "
                       "or pass the right --pred")
    decoded, problems = _parse_lines(path, path.read_text(encoding="utf-8"))
    predictions: list[Prediction] = []
    seen: dict[str, int] = {}
    for lineno, record in decoded:
        where = f"{path}:{lineno}"
        try:
            prediction = Prediction.from_record(record, where)
        except ValueError as e:
            problems.append(f"{where}: {e}")
            continue
        if prediction.id in seen:
            problems.append(f"{where}: duplicate id {prediction.id!r} (first on line {seen[prediction.id]})")
            continue
        seen[prediction.id] = lineno
        predictions.append(prediction)
    if problems:
        raise ApaError(
            f"{len(problems)} problem(s) in predictions file {path}:\n{problem_list(sorted(problems, key=_line_of))}\n"
            'each line must be a JSON object like {"id": "...", "output": "<model text>"}; fix or '
            "delete the bad lines (a half-written last line from an interrupted `apa predict` "
            "is rewritten when it resumes)")
    if not predictions:
        raise ApaError(f"predictions file {path} holds no predictions; run `apa predict` first")
    return predictions


def _line_of(problem: str) -> int:
    location = problem.split(": ", 1)[0]
    number = location.rsplit(":", 1)[-1]
    return int(number) if number.isdigit() else 0


def append_records(f: IO[str], path: Path, records: Iterable[dict], what: str = "predictions") -> None:
    """Append records to an open file of records (predictions, evidence) and make them durable
    (flush + fsync)."""
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    try:
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())
    except OSError as e:  # a full disk: earlier batches are safe, a cut line is repaired on resume
        raise ApaError(f"cannot write {what} to {path}: {e.strerror}; free disk space and run the "
                       "same command again: finished batches are kept and skipped") from None


def rewrite_in_order(path: str | os.PathLike, records: list[dict], utts: Iterable[Utterance]) -> None:
    """Rewrite ``path`` atomically with ``records`` in the order of ``utts`` (others after)."""
    order = {utt.id: i for i, utt in enumerate(utts)}
    position = {id(r): i for i, r in enumerate(records)}
    ordered = sorted(records, key=lambda r: (order.get(r["id"], len(order)), position[id(r)]))
    atomic_write_lines(path, (json.dumps(record, ensure_ascii=False) for record in ordered))

"""A scoring request checked in full before it is queued: task, text (normalised, within the
word limit, every word pronounceable), upload (size, format, length, silence). A bad request
is answered at once with a 4xx and never reaches the model.

**The word limit (60 by default).** Qwen2-Audio, the default backbone, hears at most 30 s
(other families up to their window, or 60 s), and learners read aloud at 100-150 words a
minute, so 30 s holds 50-75 words: a longer text cannot have been read into one clip. Cost grows with the words (about 6 score
slots a word under the multi task: tokens in every parallel pass, and two sequential calls
each for the slot-by-slot decoder), so the limit also caps what one request can take from
the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apa.data.audio import AudioError, decode_audio_bytes
from apa.data.lexicon import UnknownWords
from apa.errors import ApaError
from apa.inference.score import Reference, text_to_reference
from apa.tasks import TASKS

DEFAULT_MAX_WORDS = 60
MAX_TEXT_CHARS = 2000  # far more than 60 words; refused before the normaliser reads it


class RequestError(Exception):
    """A request answered with ``status`` and ``{"error": message}``; ``reason`` for the
    refusal metrics, ``headers`` for the response (Retry-After)."""

    def __init__(self, status: int, message: str, reason: str = "invalid", headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.headers = headers


@dataclass
class Intake:
    """The service's checks on one request's fields."""

    default_task: str
    max_seconds: float
    max_upload_bytes: int
    max_words: int = DEFAULT_MAX_WORDS
    lexicon: dict[str, list[str]] | None = None
    guess: bool = True

    def task(self, task: str | None) -> str:
        name = task or self.default_task
        if name not in TASKS:
            raise RequestError(422, f"unknown task {name!r}; choose one of: {', '.join(TASKS)}", "task")
        return name

    def text(self, text: str | None) -> Reference:
        if text is None:
            raise RequestError(422, "missing form field 'text': send the sentence that was read", "text_missing")
        if not text.strip():
            raise RequestError(422, "the text is empty: type or choose the sentence that was read", "text_empty")
        if len(text) > MAX_TEXT_CHARS:
            raise RequestError(422, f"text is {len(text)} characters; at most {MAX_TEXT_CHARS} (and "
                                    f"{self.max_words} words) are scored in one request", "too_many_words")
        try:
            reference = text_to_reference(text, self.lexicon, guess=self.guess)
        except UnknownWords as e:
            fix = "check the spelling or use other words"
            if not e.could_guess:
                fix += " (this server cannot guess pronunciations: it was installed without its g2p extra)"
            raise RequestError(422, f"no pronunciation is known for: {', '.join(e.words)}; {fix}",
                               "unknown_words") from None
        except ApaError as e:
            raise RequestError(422, str(e), "text") from None
        words = len(reference.utt.words)
        if words > self.max_words:
            raise RequestError(422, f"the text has {words} words; at most {self.max_words} are scored in one "
                                    "request (30 s of reading at a learner's pace): split it into sentences",
                               "too_many_words")
        return reference

    def audio(self, data: bytes, name: str) -> np.ndarray:
        """Bounded decode (apa.data.decode); 413 over the size limit, 415 for a format
        problem, 422 for a clip that decodes but cannot be scored."""
        if len(data) > self.max_upload_bytes:
            raise RequestError(413, f"{name} is larger than {self.max_upload_bytes / 2**20:g} MiB; send a shorter "
                                    "recording or a compressed format (Opus, AAC, MP3, FLAC)", "too_large")
        try:
            return decode_audio_bytes(data, name, self.max_seconds)
        except AudioError as e:
            raise RequestError(415 if e.reason == "format" else 422, str(e), f"audio_{e.reason}") from None

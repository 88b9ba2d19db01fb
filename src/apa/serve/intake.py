"""A scoring request checked in full before it is queued: task, text (normalised, within the
word and cost limits, every word pronounceable), upload (size, format, length, silence). A
bad request is answered at once with a 4xx and never reaches the model. Also the text of a
model pronunciation (``GET /speak``).

**The word limit (60 by default).** Qwen2-Audio, the default backbone, hears at most 30 s
(other families up to their window, or 60 s), and learners read aloud at 100-150 words a
minute, so 30 s holds 50-75 words: a longer text cannot have been read into one clip.

**The cost limit (``DEFAULT_MAX_COST`` score slots).** Words do not bound a request's cost:
what a request costs is its score slots (apa.inference.score.score_slots: one per sentence
aspect, word aspect and phone), which set the tokens of every parallel decoding pass and
the sequential decoder's 2 x slots + 1 calls. Sixty everyday words hold about 360 slots
under the multi task (6 a word); sixty long or made-up words held 1,925 and took 13.6 s,
or 160 model calls and the whole 60 s deadline. The limit is on slots, with a message that
names it, so a request is refused for what it would cost, not for how many words it has.
"""

from __future__ import annotations

from dataclasses import dataclass

from apa.data.audio import AudioError, Clip, decode_clip
from apa.data.lexicon import UnknownWords
from apa.errors import ApaError
from apa.inference.score import Reference, score_slots, text_to_reference
from apa.tasks import TASKS, get_task

DEFAULT_MAX_WORDS = 60
# 60 everyday words under multi hold about 360 slots; 500 leaves room for longer words (8 a
# word) while refusing the 1,925-slot text of long words that took 13.6 s.
DEFAULT_MAX_COST = 500
MAX_TEXT_CHARS = 2000  # far more than 60 words; refused before the normaliser reads it
MAX_SPEAK_CHARS = 300  # a model pronunciation: a sentence (about 50 words) or a word


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
    max_cost: int = DEFAULT_MAX_COST

    def task(self, task: str | None) -> str:
        name = task or self.default_task
        if name not in TASKS:
            raise RequestError(422, f"unknown task {name!r}; choose one of: {', '.join(TASKS)}", "task")
        return name

    def text(self, text: str | None, task: str) -> tuple[Reference, int]:
        """The reference and its cost in score slots under ``task``."""
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
        cost = score_slots(reference.utt, get_task(task))
        if cost > self.max_cost:
            raise RequestError(422, f"the text needs {cost} scores under the {task} task; at most {self.max_cost} are "
                                    f"given in one request (the cost limit: about {self.max_cost // 6} everyday words): "
                                    "split it into shorter sentences", "too_costly")
        return reference, cost

    def speech(self, text: str) -> tuple[bytes, int]:
        """(16-bit PCM, rate) of ``text`` said by eSpeak NG; 422 when there is nothing to say or
        this server was installed without eSpeak NG (the message says how to get it)."""
        from apa.data.g2p import G2PUnavailable, speak
        from apa.data.textnorm import normalise_words

        if not text.strip() or len(text) > MAX_SPEAK_CHARS:
            raise RequestError(422, f"give a text of 1-{MAX_SPEAK_CHARS} characters to say", "text")
        try:
            words = normalise_words(text)  # refuses what cannot be said, as /score does
        except ApaError as e:
            raise RequestError(422, str(e), "text") from None
        if not words:
            raise RequestError(422, f"the text {text[:40]!r} holds no words to say", "text_empty")
        try:
            return speak(" ".join(words).lower())
        except G2PUnavailable as e:
            raise RequestError(422, f"this server cannot say texts: {e}", "text") from None

    def audio(self, data: bytes, name: str) -> Clip:
        """Bounded decode (apa.data.decode); 413 over the size limit, 415 for a format
        problem, 422 for a clip that decodes but cannot be scored."""
        if len(data) > self.max_upload_bytes:
            raise RequestError(413, f"{name} is larger than {self.max_upload_bytes / 2**20:g} MiB; send a shorter "
                                    "recording or a compressed format (Opus, AAC, MP3, FLAC)", "too_large")
        try:
            return decode_clip(data, name, self.max_seconds)
        except AudioError as e:
            raise RequestError(415 if e.reason == "format" else 422, str(e), f"audio_{e.reason}") from None

"""HTTP scoring service around apa.inference.score: ``POST /score``, ``GET /health``, OpenAPI.

``create_app(model, processor, ...)`` returns a FastAPI app. A request is checked in full
before it is queued (task, text -> CMUdict phones, upload size, audio format, emptiness,
silence, duration), so a bad request is answered at once with a 4xx and
``{"error": "..."}`` and never reaches the model. Valid requests go into an asyncio queue;
one worker task takes up to ``max_batch`` of them, waiting at most ``max_wait_ms`` after the
first, and runs them as one model batch in a dedicated thread (the event loop keeps
answering /health and validating uploads meanwhile). If a batch fails, its requests are
rerun one by one, so one failing item fails only itself (500 with the message); the
server stays up.

Status codes: 413 upload (or request body) too large; 415 audio that cannot be decoded;
422 missing or malformed fields, unknown task, unknown words (named), empty text, empty,
silent or too long audio; 503 queue full; 500 model failure. The response schema is
apa.inference.score.ScoreResult, the same JSON that ``apa score`` prints.
"""

from __future__ import annotations

import asyncio
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from apa.data.audio import AudioError, decode_audio_bytes
from apa.errors import ApaError
from apa.data.lexicon import cmu_dictionary
from apa.inference.decoding import resolve_decoding
from apa.inference.score import (DEFAULT_DECODING, DEFAULT_TASK, PRACTICE_THRESHOLD, Recording, ScoreResult,
                                 clip_limit, score_prepared, text_to_utterance)
from apa.tasks import TASKS, get_task

log = logging.getLogger("apa.serve")

MAX_TEXT_CHARS = 2000  # a 30 s clip holds far fewer; anything longer is not a read sentence
FORM_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and the text fields beside the audio file


class ErrorResponse(BaseModel):
    error: str = Field(description="What is wrong with the request and what to do about it.")


class Health(BaseModel):
    ok: bool = Field(description="True while the batching worker is running.")
    model: str = Field(description="Base model (and adapter) being served.")
    tasks: list[str] = Field(description="Tasks a request may ask for.")
    default_task: str = Field(description="Task used when a request names none.")
    decoding: str = Field(description="Decoding mode of every request.")
    queue_size: int = Field(description="Requests waiting for the model.")
    max_batch: int = Field(description="Most requests scored together in one model batch.")
    batches: int = Field(description="Model batches run since start.")
    scored: int = Field(description="Requests scored since start.")


class RequestError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------

ScoreFn = Callable[[Sequence[Recording], str], list[dict]]


@dataclass
class _Job:
    recording: Recording
    task: str
    future: asyncio.Future = field(repr=False)


class BatchScorer:
    """An asyncio queue and one worker that scores queued jobs in batches in a model thread."""

    def __init__(self, score_fn: ScoreFn, max_batch: int = 16, max_wait_ms: float = 20.0, max_queue: int = 256):
        self.score_fn = score_fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.queue: asyncio.Queue[_Job] | None = None
        self.worker: asyncio.Task | None = None
        # One thread: the model runs one batch at a time, off the event loop.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="apa-model")
        self.batches = 0
        self.scored = 0

    async def start(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.max_queue)
        self.worker = asyncio.create_task(self._work(), name="apa-batch-worker")

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True, cancel_futures=True)

    @property
    def alive(self) -> bool:
        return self.worker is not None and not self.worker.done()

    @property
    def queue_size(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    async def submit(self, recording: Recording, task: str) -> dict:
        if not self.alive:
            raise RequestError(503, "the scoring worker is not running; restart the server")
        job = _Job(recording, task, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise RequestError(503, f"server busy: {self.max_queue} requests are waiting; retry shortly") from None
        return await job.future

    async def _collect(self) -> list[_Job]:
        jobs = [await self.queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(jobs) < self.max_batch:
            remaining = deadline - loop.time()
            try:
                job = self.queue.get_nowait() if remaining <= 0 else \
                    await asyncio.wait_for(self.queue.get(), remaining)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            jobs.append(job)
        return jobs

    def _score(self, jobs: list[_Job]) -> list[Any]:
        """Results (or exceptions) per job; runs in the model thread."""
        outcomes: list[Any] = [None] * len(jobs)
        by_task: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_task.setdefault(job.task, []).append(i)
        for task, indices in by_task.items():
            try:
                results = self.score_fn([jobs[i].recording for i in indices], task)
                for i, result in zip(indices, results, strict=True):
                    outcomes[i] = result
            except Exception as batch_error:
                if len(indices) == 1:
                    outcomes[indices[0]] = batch_error
                    continue
                log.warning("batch of %d failed (%s); scoring its requests one by one", len(indices), batch_error)
                for i in indices:  # isolate the failing item(s)
                    try:
                        outcomes[i] = self.score_fn([jobs[i].recording], task)[0]
                    except Exception as e:
                        outcomes[i] = e
        return outcomes

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            jobs = [job for job in jobs if not job.future.done()]  # clients that went away
            if not jobs:
                continue
            try:
                outcomes = await loop.run_in_executor(self.executor, self._score, jobs)
            except Exception as e:  # the executor itself failed: fail this batch, keep serving
                outcomes = [e] * len(jobs)
            self.batches += 1
            for job, outcome in zip(jobs, outcomes):
                if job.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    self.scored += 1
                    job.future.set_result(outcome)


# --------------------------------------------------------------------------------------
# Request body limit
# --------------------------------------------------------------------------------------

class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``: at once from its
    Content-Length, or as soon as a body without one (chunked) grows past it."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> JSONResponse:
        return JSONResponse({"error": f"request body is larger than {self.max_bytes / 2**20:.1f} MiB; "
                                      "send a shorter recording or a compressed format (FLAC, OGG, MP3)"},
                            status_code=413)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._too_large()(scope, receive, send)
        received = 0
        rejected = False
        started = False

        async def limited_receive():
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    rejected = True
                    if not started:
                        await self._too_large()(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if rejected:
                return  # the 413 is already sent
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not rejected:
                raise


# --------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------

def _model_name(model) -> str:
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    return str(name) if name else type(model).__name__


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = [str(x) for x in error.get("loc", ()) if x not in ("body", "query", "form")]
        name = ".".join(loc) or "request"
        if error.get("type") == "missing":
            parts.append(f"missing form field '{name}'")
        else:
            parts.append(f"{name}: {error.get('msg')}")
    return ("; ".join(parts) or "malformed request") + \
        "; POST /score takes multipart/form-data with fields audio (file), text and optionally task"


def _check_audio_format(data: bytes, name: str) -> None:
    import soundfile as sf

    if not data:
        raise RequestError(422, f"{name} is empty (0 bytes); send the recording's file")
    try:
        sf.info(io.BytesIO(data))
    except Exception as e:
        raise RequestError(415, f"cannot decode {name}: {e}; send WAV, FLAC, OGG or MP3") from None


def create_app(model, processor, *, model_name: str | None = None, task: str = DEFAULT_TASK,
               decoding: str = DEFAULT_DECODING, max_batch: int = 16, max_wait_ms: float = 20.0,
               max_upload_mb: float = 10.0, max_seconds: float | None = None, max_queue: int = 256,
               lexicon: dict[str, list[str]] | None = None, threshold: float = PRACTICE_THRESHOLD,
               score_fn: Optional[ScoreFn] = None) -> FastAPI:
    """The scoring app. ``score_fn(recordings, task) -> results`` replaces the model call
    (default: apa.inference.score.score_prepared with this model); for tests and tracing."""
    if max_batch < 1:
        raise ApaError(f"--max-batch must be at least 1, got {max_batch}")
    if max_wait_ms < 0:
        raise ApaError(f"--max-wait-ms must be 0 or more, got {max_wait_ms}")
    if max_upload_mb <= 0:
        raise ApaError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    window = clip_limit(processor)
    if max_seconds is not None and not 0 < max_seconds <= window:
        raise ApaError(f"--max-seconds must be in (0, {window:g}]: the model hears at most {window:g} s, "
                       f"got {max_seconds}")
    if max_queue < 1:
        raise ApaError(f"--max-queue must be at least 1, got {max_queue}")
    max_seconds = clip_limit(processor, max_seconds)
    default_task = get_task(task).name
    decoding = resolve_decoding(decoding)
    cmu_dictionary()  # load now, not on the first request
    max_upload_bytes = int(max_upload_mb * 2**20)
    name = model_name or _model_name(model)

    if score_fn is None:
        def score_fn(recordings: Sequence[Recording], task_name: str) -> list[dict]:
            return score_prepared(model, processor, recordings, task_name, decoding, threshold)

    scorer = BatchScorer(score_fn, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await scorer.start()
        try:
            yield
        finally:
            await scorer.stop()

    app = FastAPI(title="apa pronunciation scoring",
                  description="Scores a read English sentence at sentence, word and phone level with a "
                              "fine-tuned Qwen2-Audio. Send the recording and the text that was read.",
                  version=_version(), lifespan=lifespan)
    app.state.scorer = scorer
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes + FORM_OVERHEAD_BYTES)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": _validation_message(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception):
        log.exception("unhandled error")
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    errors = {status: {"model": ErrorResponse, "description": text} for status, text in {
        413: "upload too large", 415: "audio cannot be decoded",
        422: "missing field, unknown task, unknown words, empty/silent/too long audio",
        500: "the model failed on this request", 503: "queue full"}.items()}

    @app.post("/score", response_model=ScoreResult, responses=errors,
              summary="Score one recording against the text that was read")
    async def score(audio: UploadFile = File(..., description="the recording: WAV, FLAC, OGG or MP3; any "
                                                                "sample rate, mono or stereo"),
                    text: str = Form(..., description="the sentence that was read (English words; numbers "
                                                      "spelt out)"),
                    task: Optional[str] = Form(None, description=f"which scores (default {default_task}): "
                                                                 f"{', '.join(TASKS)}")):
        task_name = task or default_task
        if task_name not in TASKS:
            raise RequestError(422, f"unknown task {task_name!r}; choose one of: {', '.join(TASKS)}")
        if len(text) > MAX_TEXT_CHARS:
            raise RequestError(422, f"text is {len(text)} characters; at most {MAX_TEXT_CHARS}")
        try:
            utt = text_to_utterance(text, lexicon)
        except ApaError as e:  # UnknownWords names every word; empty text
            raise RequestError(422, str(e)) from None
        upload = audio.filename or "audio"
        data = await audio.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise RequestError(413, f"{upload} is larger than {max_upload_mb:g} MiB; send a shorter recording "
                                    "or a compressed format (FLAC, OGG, MP3)")
        _check_audio_format(data, upload)
        try:
            samples = await run_in_threadpool(decode_audio_bytes, data, upload, max_seconds)
        except AudioError as e:
            raise RequestError(422, str(e)) from None
        try:
            return await scorer.submit(Recording(samples, utt), task_name)
        except RequestError:
            raise
        except Exception as e:
            log.error("scoring failed: %s: %s", type(e).__name__, e)
            raise RequestError(500, f"scoring failed: {type(e).__name__}: {e}") from None

    @app.get("/health", response_model=Health, summary="Liveness, model and queue")
    async def health():
        return Health(ok=scorer.alive, model=name, tasks=list(TASKS), default_task=default_task,
                      decoding=decoding, queue_size=scorer.queue_size, max_batch=max_batch,
                      batches=scorer.batches, scored=scorer.scored)

    return app


def _version() -> str:
    from apa import __version__

    return __version__

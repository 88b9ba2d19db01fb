"""The scoring app: ``POST /score``, ``GET /speak`` (a model pronunciation), ``GET /health``,
``GET /metrics``, the learner's page at ``GET /``, the API description at ``/openapi.json``
and ``/docs`` (Swagger UI served from the ``swagger-ui-bundle-v2`` package, no CDN).

A request is checked in full (apa.serve.intake) before it is queued, then scored by the
scheduler (apa.serve.scheduler) in batches of similar cost. Every answer that is not a
result is ``{"error": "...", "code": "..."}`` with its status; the codes and their statuses
are listed once, in apa.serve.answers. No input gets a 5xx: 500 is kept for a model failure
or a bug (logged once and counted in ``/metrics`` by apa.serve.gate), 503 for a full queue
or a drain, 504 for the deadline.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal, Optional, Sequence

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from apa.data.lexicon import cmu_dictionary
from apa.errors import ApaError
from apa.evidence.acoustic import clip_evidence
from apa.inference.decoding import resolve_decoding
from apa.inference.score import (DEFAULT_DECODING, DEFAULT_TASK, PRACTICE_THRESHOLD, Recording, ScoreResult,
                                 clip_limit, score_prepared)
from apa.serve.access import AccessControl, RateLimiter
from apa.serve.answers import ERROR_CODES, code_for_status, error_response
from apa.serve.body_limit import BodyLimit
from apa.serve.gate import Gate
from apa.serve.intake import DEFAULT_MAX_COST, DEFAULT_MAX_WORDS, MAX_SPEAK_CHARS, Intake, RequestError
from apa.serve.metrics import Metrics
from apa.serve.scheduler import Busy, Cancelled, Scheduler, ScoreFn
from apa.tasks import TASKS, get_task

log = logging.getLogger("apa.serve")

STATIC = Path(__file__).with_name("static")
FORM_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and the text fields beside the audio file
DEFAULT_DEADLINE_S = 60.0
DEFAULT_SHORT_COST = 150  # scores in a response; a 6-word text under multi has about 45, 60 words about 360
TaskName = Literal[tuple(TASKS)]  # type: ignore[valid-type]  # the schema's enum of tasks
ErrorCode = Literal[tuple(ERROR_CODES)]  # type: ignore[valid-type]


class ErrorResponse(BaseModel):
    error: str = Field(description="What is wrong with the request and what to do about it.")
    code: ErrorCode = Field(description="Stable machine-readable reason (apa.serve.answers; docs/method.md).")


class Health(BaseModel):
    ok: bool = Field(description="True while the scheduler's workers run and the server is not draining.")
    model: Optional[str] = Field(description="Base model (and adapter) being served; null when API keys are set "
                                             "(a path says where the server's files are).")
    tasks: list[str] = Field(description="Tasks a request may ask for.")
    default_task: str = Field(description="Task used when a request names none.")
    decoding: str = Field(description="Decoding mode of every request.")
    queue_size: int = Field(description="Requests waiting for the model.")
    max_batch: int = Field(description="Most requests scored together in one model batch.")
    max_words: int = Field(description="Most words in one request's text.")
    max_cost: int = Field(description="Most scores (slots) one request's response may hold.")
    max_seconds: float = Field(description="Longest recording scored, in seconds.")
    deadline_seconds: float = Field(description="A request not answered by then gets 504 and its work stops.")
    guesses_pronunciations: bool = Field(description="Words no lexicon knows get guessed phones (eSpeak NG).")
    batches: int = Field(description="Model batches run since start.")
    scored: int = Field(description="Requests scored since start.")


def _model_name(model) -> str:
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    return str(name) if name else type(model).__name__


def _validation_answer(exc: RequestValidationError) -> tuple[str, str]:
    """(message, code) of a request FastAPI could not read into the route's fields."""
    errors = exc.errors()
    names = [".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "form")) or "request"
             for e in errors]
    if names == ["task"]:
        return f"unknown task {errors[0].get('input')!r}; choose one of: {', '.join(TASKS)}", "task"
    if names == ["text"] and errors[0].get("type") == "missing":
        return "missing or empty form field 'text': send the sentence that was read", "text_missing"
    parts = [f"missing form field '{name}'" if e.get("type") == "missing" else f"{name}: {e.get('msg')}"
             for name, e in zip(names, errors)]
    return ("; ".join(parts) or "malformed request") + \
        "; POST /score takes multipart/form-data with fields audio (file), text and optionally task", "missing_field"


async def _client_left(request: Request) -> None:
    """Returns when the client disconnects (the body is already read, so the next message
    the server sends the app is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _mount_docs(app: FastAPI, title: str) -> None:
    """Swagger UI from the swagger-ui-bundle-v2 package's files (no CDN); without that
    package /docs says how to get it."""
    from fastapi.openapi.docs import get_swagger_ui_html

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        @app.get("/docs", include_in_schema=False)
        async def no_docs():
            return error_response(404, "the API page needs the serve extra (pip install -e '.[serve]'); "
                                       "the API description is at /openapi.json", "not_found")
        return
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title=title,
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")


def create_app(model, processor, *, model_name: str | None = None, task: str = DEFAULT_TASK,
               decoding: str = DEFAULT_DECODING, max_batch: int = 16, max_wait_ms: float = 20.0,
               max_upload_mb: float = 10.0, max_seconds: float | None = None, max_queue: int = 256,
               lexicon: dict[str, list[str]] | None = None, threshold: float = PRACTICE_THRESHOLD,
               max_words: int = DEFAULT_MAX_WORDS, max_cost: int = DEFAULT_MAX_COST, deadline_s: float = DEFAULT_DEADLINE_S,
               short_cost: int = DEFAULT_SHORT_COST, api_keys: dict[str, str] | None = None,
               rate_limit: float | None = None, cors_origins: Sequence[str] = (), guess: bool = True,
               score_fn: Optional[ScoreFn] = None) -> FastAPI:
    """The scoring app. ``score_fn(recordings, task, between_calls) -> results`` replaces the
    model call (default: apa.inference.score.score_prepared with this model); for tests."""
    for value, flag, low in [(max_batch, "--max-batch", 1), (max_queue, "--max-queue", 1),
                             (max_words, "--max-words", 1), (short_cost, "--short-cost", 1),
                             (max_cost, "--max-cost", 1)]:
        if value < low:
            raise ApaError(f"{flag} must be at least {low}, got {value}")
    for value, flag in [(max_upload_mb, "--max-upload-mb"), (deadline_s, "--deadline")]:
        if value <= 0:
            raise ApaError(f"{flag} must be positive, got {value}")
    if max_wait_ms < 0:
        raise ApaError(f"--max-wait-ms must be 0 or more, got {max_wait_ms}")
    window = clip_limit(processor)
    if max_seconds is not None and not 0 < max_seconds <= window:
        raise ApaError(f"--max-seconds must be in (0, {window:g}]: the model hears at most {window:g} s, "
                       f"got {max_seconds}")
    default_task = get_task(task).name
    decoding = resolve_decoding(decoding)
    cmu_dictionary()  # load now, not on the first request
    max_upload_bytes = int(max_upload_mb * 2**20)
    name = model_name or _model_name(model)
    limiter = RateLimiter(rate_limit) if rate_limit is not None else None  # 0 is an error, not "off"
    intake = Intake(default_task, clip_limit(processor, max_seconds), max_upload_bytes, max_words, lexicon, guess,
                    max_cost)
    if guess:
        from apa.data.g2p import g2p_available

        intake.guess = g2p_available()  # without the extra, unknown words get a message saying so

    if score_fn is None:
        def score_fn(recordings, task_name, between_calls=None):
            return score_prepared(model, processor, recordings, task_name, decoding, threshold, between_calls)

    metrics_holder: list[Metrics] = []
    scheduler = Scheduler(score_fn, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                          short_cost=short_cost, on_batch=lambda report: metrics_holder[0].observe_batch(report))
    metrics = Metrics(scheduler.queue_depth)
    metrics_holder.append(metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await scheduler.start()
        try:
            yield
        finally:
            app.state.draining = True
            await scheduler.stop()

    title = "apa pronunciation scoring"
    app = FastAPI(title=title, description="Scores a read English sentence at sentence, word and phone level with a "
                                           "fine-tuned audio language model (Qwen2-Audio, Qwen2.5-Omni, "
                                           "Phi-4-multimodal or Granite-Speech). Send the recording and the text "
                                           "that was read.",
                  version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.scheduler = scheduler
    app.state.metrics = metrics
    app.state.draining = False
    app.state.access = AccessControl(dict(api_keys or {}), limiter)
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes + FORM_OVERHEAD_BYTES)
    app.add_middleware(Gate, state=app.state)
    if cors_origins:  # outermost, so that refusals carry the CORS headers too
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key"], expose_headers=["Retry-After"])
    _mount_docs(app, title)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        metrics.refuse(exc.reason)
        return error_response(exc.status, exc.message, exc.reason, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        message, code = _validation_answer(exc)
        metrics.refuse(code)
        return error_response(422, message, code)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), code_for_status(exc.status_code), exc.headers)

    statuses: dict[int, list[str]] = {}
    for code, (status, meaning) in ERROR_CODES.items():
        statuses.setdefault(status, []).append(f"{code} ({meaning})")
    errors = {status: {"model": ErrorResponse, "description": "; ".join(codes)}
              for status, codes in sorted(statuses.items()) if status not in (404, 405, 408)}

    @app.post("/score", response_model=ScoreResult, responses=errors,
              summary="Score one recording against the text that was read")
    async def score(request: Request,
                    audio: UploadFile = File(..., description="the recording: WAV, FLAC, Ogg/Opus, MP3, WebM/Opus "
                                                              "or MP4/AAC; any sample rate from 8 kHz, mono or stereo"),
                    text: str = Form(..., description=f"the sentence that was read, as typed (numbers and "
                                                      f"punctuation are fine; at most {max_words} words and "
                                                      f"{max_cost} scores)"),
                    task: Optional[TaskName] = Form(None, description=f"which scores (default {default_task})")):
        started = time.monotonic()
        task_name = intake.task(task)
        reference, cost = intake.text(text, task_name)
        try:
            scheduler.check_room()  # a full queue answers now, before seconds of decoding
        except Busy as e:
            raise RequestError(503, str(e), "busy", {"Retry-After": str(e.retry_after)}) from None
        data = await audio.read(max_upload_bytes + 1)
        clip = await run_in_threadpool(intake.audio, data, audio.filename or "audio")
        del data
        # the acoustic alignment here, in the thread pool, keeps it off the model's batch path
        evidence = await run_in_threadpool(clip_evidence, clip.samples, [w.phones for w in reference.utt.words])
        recording = Recording(clip.samples, reference.utt, reference.guessed, reference.input_text, clip.notes,
                              evidence)
        try:
            job = scheduler.submit(recording, task_name, cost)
        except Busy as e:
            raise RequestError(503, str(e), "busy", {"Retry-After": str(e.retry_after)}) from None
        left = asyncio.ensure_future(_client_left(request))
        try:
            done, _ = await asyncio.wait({job.future, left}, timeout=deadline_s - (time.monotonic() - started),
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the drain deadline passed (SIGTERM): answer, without a traceback
            raise RequestError(503, "the server is shutting down; retry shortly", "draining",
                               {"Retry-After": "5"}) from None
        finally:
            left.cancel()
            if not job.future.done():
                job.abandon()  # a deadline, a client that left, or a cancelled request (drain)
        if job.future not in done:
            if left in done:
                metrics.refuse("client_left")
                return Response(status_code=499)  # nobody reads it; nginx's code for the log
            raise RequestError(504, f"not scored within {deadline_s:g} s; the server is busy or the text long: "
                                    "retry, or send a shorter sentence", "deadline")
        try:
            return job.future.result()
        except Busy as e:
            raise RequestError(503, str(e), "busy", {"Retry-After": str(e.retry_after)}) from None
        except Cancelled:
            raise RequestError(503, "scoring was stopped; retry shortly", "cancelled", {"Retry-After": "5"}) from None
        except Exception as e:
            log.error("scoring failed: %s: %s", type(e).__name__, e)
            raise RequestError(500, f"scoring failed: {type(e).__name__}: {e}", "model_error") from None

    @app.get("/health", response_model=Health, summary="Liveness, model, limits and queue")
    async def health():
        return Health(ok=scheduler.alive and not app.state.draining, model=None if api_keys else name,
                      tasks=list(TASKS), default_task=default_task, decoding=decoding,
                      queue_size=scheduler.queue_depth(), max_batch=max_batch, max_words=max_words,
                      max_cost=max_cost, max_seconds=intake.max_seconds,
                      deadline_seconds=deadline_s, guesses_pronunciations=intake.guess,
                      batches=scheduler.batches, scored=scheduler.scored)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}}, 401: errors[401]})
    async def prometheus_metrics():
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/speak", summary="A model pronunciation: the text said by eSpeak NG, as WAV",
             response_class=Response, responses={200: {"content": {"audio/wav": {}}},
                                                 **{k: errors[k] for k in (401, 422, 429)}})
    async def speak(text: str = Query(..., min_length=1, max_length=MAX_SPEAK_CHARS,
                                      description="a sentence or a word, as typed")):
        pcm, rate = await run_in_threadpool(intake.speech, text)
        return Response(_wav(pcm, rate), media_type="audio/wav", headers={"Cache-Control": "max-age=86400"})

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    # Build the OpenAPI schema now, in the thread that creates the app: pydantic reads the result
    # schema's attribute docstrings with ast, and CPython 3.11's AST constructor is not safe
    # against another thread parsing at the same moment (a server thread answering the first
    # request while the caller imports a module raised "AST constructor recursion depth mismatch").
    app.openapi()
    return app


def _wav(pcm: bytes, rate: int) -> bytes:
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def _version() -> str:
    from apa import __version__

    return __version__

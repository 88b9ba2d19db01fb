"""The scoring app: ``POST /score``, ``GET /health``, ``GET /metrics``, the learner's page at
``GET /``, the API description at ``/openapi.json`` and ``/docs`` (Swagger UI served from
the ``swagger-ui-bundle-v2`` package, no CDN).

A request is checked in full (apa.serve.intake) before it is queued, then scored by the
scheduler (apa.serve.scheduler) in batches of similar cost. Every answer that is not a
result is ``{"error": "..."}`` with its status:

- 400 a body that is not the multipart it claims to be; 401 missing or wrong API key; 429 over the rate limit (Retry-After);
- 413 upload too large; 415 audio in a format that cannot be decoded;
- 422 missing or malformed fields, unknown task, empty text, too many words, words with no
  known pronunciation, audio too short, too long, silent, non-finite or below 8 kHz;
- 503 queue full or shutting down (Retry-After); 504 past the request's deadline (its work
  is stopped); 500 the model failed on this request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Optional, Sequence

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from apa.data.lexicon import cmu_dictionary
from apa.errors import ApaError
from apa.inference.decoding import resolve_decoding
from apa.inference.score import (DEFAULT_DECODING, DEFAULT_TASK, PRACTICE_THRESHOLD, Recording, ScoreResult,
                                 clip_limit, score_prepared, score_slots)
from apa.serve.access import AccessControl, Denied, RateLimiter
from apa.serve.body_limit import BodyLimit
from apa.serve.intake import DEFAULT_MAX_WORDS, Intake, RequestError
from apa.serve.metrics import Metrics
from apa.serve.scheduler import Busy, Cancelled, Scheduler, ScoreFn
from apa.tasks import TASKS, get_task

log = logging.getLogger("apa.serve")

STATIC = Path(__file__).with_name("static")
FORM_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and the text fields beside the audio file
DEFAULT_DEADLINE_S = 60.0
DEFAULT_SHORT_COST = 150  # scores in a response; a 6-word text under multi has about 45, 60 words about 360
PROTECTED = ("/score", "/metrics")


class ErrorResponse(BaseModel):
    error: str = Field(description="What is wrong with the request and what to do about it.")


class Health(BaseModel):
    ok: bool = Field(description="True while the scheduler's workers run and the server is not draining.")
    model: str = Field(description="Base model (and adapter) being served.")
    tasks: list[str] = Field(description="Tasks a request may ask for.")
    default_task: str = Field(description="Task used when a request names none.")
    decoding: str = Field(description="Decoding mode of every request.")
    queue_size: int = Field(description="Requests waiting for the model.")
    max_batch: int = Field(description="Most requests scored together in one model batch.")
    max_words: int = Field(description="Most words in one request's text.")
    max_seconds: float = Field(description="Longest recording scored, in seconds.")
    deadline_seconds: float = Field(description="A request not answered by then gets 504 and its work stops.")
    guesses_pronunciations: bool = Field(description="Words no lexicon knows get guessed phones (eSpeak NG).")
    batches: int = Field(description="Model batches run since start.")
    scored: int = Field(description="Requests scored since start.")


def _model_name(model) -> str:
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    return str(name) if name else type(model).__name__


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = [str(x) for x in error.get("loc", ()) if x not in ("body", "query", "form")]
        name = ".".join(loc) or "request"
        parts.append(f"missing form field '{name}'" if error.get("type") == "missing" else f"{name}: {error.get('msg')}")
    return ("; ".join(parts) or "malformed request") + \
        "; POST /score takes multipart/form-data with fields audio (file), text and optionally task"


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Gate:
    """ASGI middleware in front of everything: API keys and the rate limit on protected
    paths (before any body is read), 503 while draining, and the request metrics."""

    def __init__(self, app, state):
        self.app = app
        self.state = state  # the FastAPI app's state: access, metrics, draining

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        path = scope.get("path", "")
        status = [500]

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        response = None
        if path in PROTECTED and scope.get("method") != "OPTIONS":  # CORS preflights carry no key
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
            client = (scope.get("client") or ("unknown", 0))[0]
            try:
                self.state.access.admit(headers, client, limited=path == "/score")
            except Denied as e:
                self.state.metrics.refuse(e.reason)
                extra = {"Retry-After": str(e.retry_after)} if e.retry_after else None
                if e.status == 401:
                    extra = {"WWW-Authenticate": "Bearer"}
                response = _error(e.status, e.message, extra)
        if response is None and path == "/score" and self.state.draining:
            self.state.metrics.refuse("draining")
            response = _error(503, "the server is shutting down; retry shortly", {"Retry-After": "5"})
        if response is not None:
            await response(scope, receive, recording_send)
        else:
            await self.app(scope, receive, recording_send)
        route = path if path in ("/score", "/health", "/metrics", "/") else "other"
        self.state.metrics.observe_request(route, status[0], time.monotonic() - started)


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
            return _error(404, "the API page needs the serve extra (pip install -e '.[serve]'); "
                               "the API description is at /openapi.json")
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
               max_words: int = DEFAULT_MAX_WORDS, deadline_s: float = DEFAULT_DEADLINE_S,
               short_cost: int = DEFAULT_SHORT_COST, api_keys: dict[str, str] | None = None,
               rate_limit: float | None = None, cors_origins: Sequence[str] = (), guess: bool = True,
               score_fn: Optional[ScoreFn] = None) -> FastAPI:
    """The scoring app. ``score_fn(recordings, task, between_calls) -> results`` replaces the
    model call (default: apa.inference.score.score_prepared with this model); for tests."""
    for value, flag, low in [(max_batch, "--max-batch", 1), (max_queue, "--max-queue", 1),
                             (max_words, "--max-words", 1), (short_cost, "--short-cost", 1)]:
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
    intake = Intake(default_task, clip_limit(processor, max_seconds), max_upload_bytes, max_words, lexicon, guess)
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
    app = FastAPI(title=title, description="Scores a read English sentence at sentence, word and phone level with "
                                           "a fine-tuned Qwen2-Audio. Send the recording and the text that was read.",
                  version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.scheduler = scheduler
    app.state.metrics = metrics
    app.state.draining = False
    app.state.access = AccessControl(dict(api_keys or {}), RateLimiter(rate_limit) if rate_limit else None)
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
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        metrics.refuse("malformed")
        return _error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception):
        log.exception("unhandled error")
        return _error(500, f"internal error: {type(exc).__name__}")

    errors = {status: {"model": ErrorResponse, "description": text} for status, text in {
        400: "malformed multipart body", 401: "API key missing or not valid", 413: "upload too large", 415: "audio cannot be decoded",
        422: "missing field, unknown task, empty text, too many words, unknown words; audio too short, too "
             "long, silent, non-finite or below 8 kHz",
        429: "rate limit reached (Retry-After)", 500: "the model failed on this request",
        503: "queue full or shutting down (Retry-After)", 504: "not scored within the deadline"}.items()}

    @app.post("/score", response_model=ScoreResult, responses=errors,
              summary="Score one recording against the text that was read")
    async def score(request: Request,
                    audio: UploadFile = File(..., description="the recording: WAV, FLAC, Ogg/Opus, MP3, WebM/Opus "
                                                              "or MP4/AAC; any sample rate from 8 kHz, mono or stereo"),
                    text: Optional[str] = Form(None, description=f"the sentence that was read, as typed (numbers "
                                                                 f"and punctuation are fine; at most {max_words} "
                                                                 "words); required"),
                    task: Optional[str] = Form(None, description=f"which scores (default {default_task}): "
                                                                 f"{', '.join(TASKS)}")):
        started = time.monotonic()
        task_name = intake.task(task)
        if text is None and "text" in await request.form():
            text = ""  # FastAPI reads an empty form field as missing; the learner sent an empty text
        reference = intake.text(text)
        data = await audio.read(max_upload_bytes + 1)
        samples = await run_in_threadpool(intake.audio, data, audio.filename or "audio")
        del data
        recording = Recording(samples, reference.utt, reference.guessed, reference.input_text)
        try:
            job = scheduler.submit(recording, task_name, score_slots(reference.utt, get_task(task_name)))
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
        return Health(ok=scheduler.alive and not app.state.draining, model=name, tasks=list(TASKS),
                      default_task=default_task, decoding=decoding, queue_size=scheduler.queue_depth(),
                      max_batch=max_batch, max_words=max_words, max_seconds=intake.max_seconds,
                      deadline_seconds=deadline_s, guesses_pronunciations=intake.guess,
                      batches=scheduler.batches, scored=scheduler.scored)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}}, 401: errors[401]})
    async def prometheus_metrics():
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    # Build the OpenAPI schema now, in the thread that creates the app: pydantic reads the result
    # schema's attribute docstrings with ast, and CPython 3.11's AST constructor is not safe
    # against another thread parsing at the same moment (a server thread answering the first
    # request while the caller imports a module raised "AST constructor recursion depth mismatch").
    app.openapi()
    return app


def _version() -> str:
    from apa import __version__

    return __version__

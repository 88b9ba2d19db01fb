"""ASGI middleware in front of every route: API keys, rate limit, the drain, security
headers, the request metrics, and the last answer to an error nothing else caught.

- **Keys and rate limit** (apa.serve.access) on the protected paths, before any body is
  read. A request the service then refuses for its content (400, 413, 415, 422) or because
  it is busy (503) gives its rate-limit token back: the limit counts answered work.
- **Security headers** on every answer: ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: no-referrer``, and a Content-Security-Policy: for the learner's page
  ``CONTENT_SECURITY_POLICY`` (scripts, styles and media from this server only, recordings
  as ``blob:``, no inline script or style, no framing), for everything else
  ``frame-ancestors 'none'`` (the Swagger page at /docs keeps its own inline script).
- **Errors nothing caught.** Starlette's outermost handler sends its 500 and then re-raises,
  so the metrics after it were never reached and uvicorn logged each a second time. Here
  the error is logged once, answered ``{"error", "code": "internal"}`` with 500 (when no
  answer has started), counted in ``apa_http_requests{status="500"}`` and
  ``apa_refusals{reason="internal"}``, and not re-raised.
"""

from __future__ import annotations

import logging
import time

from apa.serve.access import Denied
from apa.serve.answers import error_response

log = logging.getLogger("apa.serve")

PROTECTED = ("/score", "/speak", "/metrics")
LIMITED = ("/score", "/speak")  # the paths that cost model or synthesis time
ROUTES = ("/score", "/speak", "/health", "/metrics", "/")
GIVES_TOKEN_BACK = (400, 413, 415, 422, 503)
PAGE_PATHS = ("/", "/static/")
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                           "frame-ancestors 'none'")
OTHER_POLICY = "frame-ancestors 'none'"


def _security_headers(path: str) -> list[tuple[bytes, bytes]]:
    page = path == "/" or path.startswith("/static/")
    return [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
            (b"content-security-policy", (CONTENT_SECURITY_POLICY if page else OTHER_POLICY).encode())]


class Gate:
    """The middleware (the module docstring); ``state`` is the FastAPI app's state: access,
    metrics, draining."""

    def __init__(self, app, state):
        self.app = app
        self.state = state

    def _admit(self, scope, path: str):
        """(response or None, identity whose token was taken)."""
        if path not in PROTECTED or scope.get("method") == "OPTIONS":  # CORS preflights carry no key
            return None, None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        client = (scope.get("client") or ("unknown", 0))[0]
        try:
            return None, self.state.access.admit(headers, client, limited=path in LIMITED)
        except Denied as e:
            self.state.metrics.refuse(e.reason)
            extra = {"Retry-After": str(e.retry_after)} if e.retry_after else None
            if e.status == 401:
                extra = {"WWW-Authenticate": "Bearer"}
            return error_response(e.status, e.message, e.reason, extra), None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        path = scope.get("path", "")
        status = [0]

        async def guarded_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = {**message, "headers": list(message.get("headers") or []) + _security_headers(path)}
            await send(message)

        response, identity = self._admit(scope, path)
        if response is None and path in LIMITED and self.state.draining:
            self.state.metrics.refuse("draining")
            response = error_response(503, "the server is shutting down; retry shortly", "draining",
                                      {"Retry-After": "5"})
        try:
            await (response or self.app)(scope, receive, guarded_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            self.state.metrics.refuse("internal")
            if not status[0]:
                await error_response(500, "internal error on the server; it is logged: retry, and report it if it "
                                          "persists", "internal")(scope, receive, guarded_send)
            status[0] = status[0] or 500
        if status[0] in GIVES_TOKEN_BACK:
            self.state.access.give_back(identity)
        route = path if path in ROUTES else "other"
        self.state.metrics.observe_request(route, status[0], time.monotonic() - started)

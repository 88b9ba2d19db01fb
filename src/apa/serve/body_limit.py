"""ASGI middleware: 413 for a request body over ``max_bytes``: at once from its
Content-Length, or as soon as a body without one (chunked) grows past it. The upload is
never held beyond the limit."""

from __future__ import annotations

from starlette.responses import JSONResponse

from apa.serve.answers import error_response


class BodyLimit:
    """413 for a request body over ``max_bytes`` (the module docstring)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> JSONResponse:
        return error_response(413, f"request body is larger than {self.max_bytes / 2**20:.1f} MiB; send a shorter "
                                   "recording or a compressed format (Opus, AAC, MP3, FLAC)", "too_large")

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

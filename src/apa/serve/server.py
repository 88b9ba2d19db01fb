"""Running the app under uvicorn with the limits uvicorn lacks: a read deadline for slow or
idle connections, a drain deadline on SIGTERM, and 503 for new requests while draining.

**Slow clients.** uvicorn 0.54 arms its keep-alive timer only after a response, so a
connection that was just opened, or that sends one header byte every 10 s, is never closed
(200 such connections were held for good). :class:`ReadDeadlineH11Protocol` arms a
deadline when a connection opens and when the first byte of a request arrives; later
bytes do not extend it; it is cancelled once the whole request is in. On expiry the
connection gets 408 when no response has started, a slow body included (the app, waiting
for the rest of the body, sees a disconnect), and is closed. Size it for the slowest
legitimate upload: 30 s carries 10 MB at 2.7 Mbit/s. A reverse proxy's own timeouts
(nginx ``client_header_timeout``, ``client_body_timeout``) do the same job in front.

**SIGTERM.** The server stops listening, marks the app as draining (new requests on open
connections get 503 with Retry-After), lets running requests finish for at most
``drain_seconds``, then cancels them; a cancelled request abandons its job, so its batch
stops at the next model call, and the model threads are joined before exit.

**Client addresses.** uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 by default, so
any local client could name another address and escape the per-address rate limit. Here
the header is ignored unless ``trusted_proxies`` lists the reverse proxy's address.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_READ_TIMEOUT_S = 30.0
DEFAULT_DRAIN_S = 30.0
DEFAULT_KEEP_ALIVE_S = 5.0


class ReadDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for reading each request (the module docstring)."""

    read_timeout = DEFAULT_READ_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._read_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()  # a new connection that sends nothing must be closed too

    def _arm(self) -> None:
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.read_timeout, self._on_read_timeout)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            self._disarm()
        elif self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self._arm()  # part of a request is in: its headers (IDLE) or its body (SEND_BODY)
        else:
            self._disarm()  # the request is complete

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on a kept-alive connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _on_read_timeout(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            return
        waiting_for_body = self.cycle is not None and not self.cycle.response_started  # h11: SEND_RESPONSE
        if self.conn.our_state == h11.IDLE or waiting_for_body:  # no response started
            if waiting_for_body:
                # the app waits for the body: it now reads a disconnect, and what it sends is dropped
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            try:
                body = (b'{"error": "the request was not sent within the read deadline; send it again, or a smaller '
                        b'recording on a slow connection", "code": "timeout"}')
                self.transport.write(self.conn.send(h11.Response(status_code=408, reason=b"Request Timeout", headers=[
                    (b"content-type", b"application/json"), (b"connection", b"close"),
                    (b"content-length", str(len(body)).encode())])) + self.conn.send(h11.Data(data=body))
                    + self.conn.send(h11.EndOfMessage()))
            except h11.LocalProtocolError:
                pass
        self.transport.close()  # a running app sees http.disconnect


def protocol_with_deadline(seconds: float) -> type[ReadDeadlineH11Protocol]:
    if seconds <= 0:
        from apa.errors import ApaError

        raise ApaError(f"--read-timeout must be positive, got {seconds}")
    return type("ReadDeadlineH11Protocol", (ReadDeadlineH11Protocol,), {"read_timeout": float(seconds)})


def make_server(app, host: str = "127.0.0.1", port: int = 8000, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
                drain_s: float = DEFAULT_DRAIN_S, keep_alive_s: float = DEFAULT_KEEP_ALIVE_S, log_level: str = "info",
                trusted_proxies: Sequence[str] = ()):
    """A uvicorn.Server for ``app`` with the read deadline and the drain (module docstring)."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.draining = True  # requests from here on get 503 with Retry-After
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, http=protocol_with_deadline(read_timeout_s),
                            timeout_keep_alive=keep_alive_s, timeout_graceful_shutdown=drain_s,
                            log_level=log_level, lifespan="on", proxy_headers=bool(trusted_proxies),
                            forwarded_allow_ips=list(trusted_proxies) or None)
    return DrainingServer(config)

"""Who may score, and how often: optional API keys and an optional per-key rate limit.

- **API keys** (off unless given): from a file (``--api-keys-file``: one key per line, or
  ``NAME KEY``; # comments) and/or the environment (``APA_API_KEYS``, comma-separated).
  A client sends ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. Keys are compared in
  constant time; only a key's name (never the key) reaches logs and metrics.
- **Rate limit** (off unless ``--rate-limit N`` per minute; N must be positive, ``0`` is an
  error rather than a silent "off"): a token bucket per key (per client address when there
  are no keys) holding up to N requests, refilled at N a minute; a refused request gets 429
  with the seconds until the next token in ``Retry-After``. A request the service refuses
  (4xx for its content, 503 busy) gives its token back: only answered work is counted.
- **Wrong keys are limited** whenever keys are set: ``FAILED_KEYS_PER_MINUTE`` missing or
  wrong keys a minute per client address, then 429 for that address (a right key included)
  until the bucket refills, so keys cannot be guessed at network speed.
- **Client address**: the peer's address. ``X-Forwarded-For`` is believed only from the
  proxies given with ``--trusted-proxy`` (uvicorn's ``forwarded_allow_ips``); by default it
  is ignored, so a local client cannot escape the limit by naming another address.

The learner's page, ``/health`` and the API description stay open; ``/score`` and
``/metrics`` need a key when keys are set.
"""

from __future__ import annotations

import hmac
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from apa.errors import ApaError

API_KEYS_ENV = "APA_API_KEYS"
MIN_KEY_CHARS = 16  # a shorter key can be guessed
MAX_BUCKETS = 10_000  # client addresses remembered before idle ones are forgotten
FAILED_KEYS_PER_MINUTE = 10  # a person who mistypes a key tries a few times; a guesser millions


class Denied(Exception):
    def __init__(self, status: int, message: str, reason: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.retry_after = retry_after


def load_api_keys(path: str | Path | None = None, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """key -> name, from ``path`` and ``$APA_API_KEYS``; empty when neither gives any."""
    keys: dict[str, str] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ApaError(f"API key file {path} does not exist; give a file with one key per line")
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) > 2:
                raise ApaError(f"{path}:{lineno}: expected KEY or NAME KEY, got {len(fields)} fields")
            name, key = (fields[0], fields[1]) if len(fields) == 2 else (f"key{lineno}", fields[0])
            keys[key] = name
    for i, key in enumerate(k.strip() for k in environ.get(API_KEYS_ENV, "").split(",")):
        if key:
            keys.setdefault(key, f"env{i + 1}")
    for key, name in keys.items():
        if len(key) < MIN_KEY_CHARS:
            raise ApaError(f"API key {name} has {len(key)} characters; use at least {MIN_KEY_CHARS} "
                           "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')")
    return keys


class RateLimiter:
    """Token buckets: ``per_minute`` requests a minute per identity, bursts up to that."""

    def __init__(self, per_minute: float, clock=time.monotonic):
        if per_minute <= 0:
            raise ApaError(f"--rate-limit must be positive, got {per_minute}")
        self.capacity = float(per_minute)
        self.per_second = per_minute / 60.0
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # identity -> (tokens, at)
        self.lock = threading.Lock()

    def take(self, identity: str) -> int | None:
        """None if a request may go now, else the seconds until it may."""
        now = self.clock()
        with self.lock:
            if len(self.buckets) > MAX_BUCKETS:
                self._forget_full(now)
            tokens, at = self.buckets.get(identity, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.per_second)
            if tokens >= 1.0:
                self.buckets[identity] = (tokens - 1.0, now)
                return None
            self.buckets[identity] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / self.per_second))

    def waiting(self, identity: str) -> int | None:
        """take() without taking: the seconds until ``identity`` has a token, or None."""
        now = self.clock()
        with self.lock:
            tokens, at = self.buckets.get(identity, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.per_second)
        return None if tokens >= 1.0 else max(1, math.ceil((1.0 - tokens) / self.per_second))

    def give_back(self, identity: str) -> None:
        """Return the token a refused request took."""
        now = self.clock()
        with self.lock:
            tokens, at = self.buckets.get(identity, (self.capacity, now))
            self.buckets[identity] = (min(self.capacity, tokens + (now - at) * self.per_second + 1.0), now)

    def _forget_full(self, now: float) -> None:
        full = [k for k, (tokens, at) in self.buckets.items()
                if tokens + (now - at) * self.per_second >= self.capacity]
        for identity in full:
            del self.buckets[identity]


@dataclass
class AccessControl:
    keys: dict[str, str]
    limiter: RateLimiter | None = None
    failures: RateLimiter = field(default_factory=lambda: RateLimiter(FAILED_KEYS_PER_MINUTE))

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def _presented_key(self, headers: Mapping[str, str]) -> str | None:
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            return authorization[7:].strip()
        return headers.get("x-api-key")

    def identify(self, headers: Mapping[str, str], client: str) -> str:
        """The caller's identity (a key's name, or the client address without keys); Denied
        (401) without a valid key when keys are set."""
        if not self.keys:
            return f"client {client}"
        wait = self.failures.waiting(client)
        if wait is not None:
            raise Denied(429, f"too many requests with a missing or wrong API key from {client}; retry in {wait} s "
                              "with a valid key", "key_attempts", retry_after=wait)
        presented = self._presented_key(headers)
        if not presented:
            self.failures.take(client)
            raise Denied(401, "an API key is needed: send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                         "no_key")
        name = None
        for key, key_name in self.keys.items():  # every key compared, in constant time
            if hmac.compare_digest(key.encode(), presented.encode()):
                name = key_name
        if name is None:
            self.failures.take(client)
            raise Denied(401, "the API key is not valid; check it with whoever runs this server", "bad_key")
        return name

    def admit(self, headers: Mapping[str, str], client: str, limited: bool = True) -> str | None:
        """The identity whose token was taken (for :meth:`give_back`), None when none was."""
        identity = self.identify(headers, client)
        if not limited or self.limiter is None:
            return None
        wait = self.limiter.take(identity)
        if wait is not None:
            raise Denied(429, f"rate limit of {self.limiter.capacity:g} requests a minute reached; "
                              f"retry in {wait} s", "rate_limited", retry_after=wait)
        return identity

    def give_back(self, identity: str | None) -> None:
        if identity is not None and self.limiter is not None:
            self.limiter.give_back(identity)

"""``GET /metrics`` in the Prometheus text format: requests, latencies, batch sizes, model
calls, queue depth, refusals by reason.

prometheus_client (Apache-2.0/BSD, no dependencies) rather than a hand-written exposition:
it gets the format's escaping and histogram rules right and adds the process collectors
(CPU, memory, open files) for free. Each app has its own registry, so several apps in one
process (tests) do not collide. One process only: with several uvicorn workers each would
count its own (prometheus_client's multiprocess mode would be needed).
"""

from __future__ import annotations

import os
from typing import Callable

from apa.serve.scheduler import BatchReport

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
CALL_BUCKETS = (1, 10, 30, 100, 300, 1000, 3000)


class Metrics:
    def __init__(self, queue_depth: Callable[[str], int], lanes: tuple[str, ...] = ("short", "long")):
        os.environ.setdefault("PROMETHEUS_DISABLE_CREATED_SERIES", "True")  # no *_created series
        from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, GCCollector,
                                       PlatformCollector, ProcessCollector)

        self.registry = registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
        self.requests = Counter("apa_http_requests", "HTTP requests answered", ["route", "status"],
                                registry=registry)
        self.latency = Histogram("apa_http_request_duration_seconds", "Time from request to answer", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.refusals = Counter("apa_refusals", "Requests refused, by reason", ["reason"], registry=registry)
        self.batch_size = Histogram("apa_batch_size", "Requests per model batch", ["lane"], buckets=BATCH_BUCKETS,
                                    registry=registry)
        self.batch_seconds = Histogram("apa_batch_duration_seconds", "Time a model batch took, waits included",
                                       ["lane"], buckets=LATENCY_BUCKETS, registry=registry)
        self.model_calls = Histogram("apa_batch_model_calls", "Sequential model calls per batch", ["lane"],
                                     buckets=CALL_BUCKETS, registry=registry)
        self.batches = Counter("apa_batches", "Model batches, by outcome", ["lane", "outcome"], registry=registry)
        depth = Gauge("apa_queue_depth", "Requests waiting for the model", ["lane"], registry=registry)
        for lane in lanes:
            depth.labels(lane).set_function(lambda lane=lane: queue_depth(lane))

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def refuse(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def observe_batch(self, report: BatchReport) -> None:
        self.batch_size.labels(report.lane).observe(report.size)
        self.batch_seconds.labels(report.lane).observe(report.seconds)
        self.model_calls.labels(report.lane).observe(report.model_calls)
        self.batches.labels(report.lane, report.outcome).inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

        # the 0.0.4 text format: what every Prometheus server reads
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4

"""Fair scheduling of scoring requests on one model: lanes by cost, batches of similar cost,
deadlines, departed clients, a drain.

The cost of a request is the number of scores its response holds (apa.inference.score.
score_slots): the tokens a decoding pass processes grow with it (and the sequential decoder's
calls, 2 x slots + 1), so a 60-word text costs about ten times a 6-word one. Without care,
one long request holds every short one behind it for its whole run. So:

- **Two lanes.** Requests of at most ``short_cost`` slots go to the short lane, the others to
  the long lane; each lane has its own queue, worker and model thread.
- **One batch on the model at a time** (:class:`ModelTurn`), short batches first: before
  each model call of a long batch (the decoder's ``between_calls`` hook) the long batch
  gives way while a short batch waits, and resumes after it. A short request waits at most
  one model call of a long batch. Long requests run when no short batch waits; their
  deadline bounds how long that can be.
- **Batches of similar cost.** A batch is the oldest waiting request of the lane plus others
  of the same task whose cost is within a factor ``COST_SPREAD`` of it (a batch runs as long
  as its most expensive row), gathered for at most ``max_wait_ms``.
- **Abandoned work stops.** A request whose deadline passed or whose client left is marked
  abandoned; it is dropped from the queue, and a running batch whose requests are all
  abandoned stops before its next model call (:class:`Cancelled`).
- **Failures are isolated.** A batch that fails is rerun one request at a time, so one bad
  item fails only itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from apa.inference.score import Recording

log = logging.getLogger("apa.serve")

COST_SPREAD = 2.0  # most expensive / cheapest request of one batch
# (recordings, task, between_calls) -> one result per recording
ScoreFn = Callable[[Sequence[Recording], str, Optional[Callable[[], None]]], list]


class Cancelled(Exception):
    """Raised between model calls when nobody waits for the batch any more."""


class Busy(Exception):
    """The queue is full or the server is draining; ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(eq=False)
class Job:
    recording: Recording
    task: str
    cost: int
    future: asyncio.Future = field(repr=False)
    abandoned: threading.Event = field(default_factory=threading.Event, repr=False)
    queued_at: float = field(default_factory=time.monotonic)

    def abandon(self) -> None:
        self.abandoned.set()


@dataclass
class BatchReport:
    """What one batch did: for the log line and the metrics."""

    lane: str
    task: str
    size: int
    costs: tuple[int, int]
    seconds: float
    model_calls: int
    outcome: str  # ok, failed, cancelled, isolated

    def log_line(self) -> str:
        return (f"batch lane={self.lane} task={self.task} size={self.size} cost={self.costs[0]}-{self.costs[1]} "
                f"model_calls={self.model_calls} seconds={self.seconds:.3f} outcome={self.outcome}")


class ModelTurn:
    """Which batch may run the model: one at a time, short ones first; a long batch gives
    way between its model calls while a short batch waits."""

    def __init__(self):
        self._condition = threading.Condition()
        self._busy = False
        self._short_waiting = 0

    def _free_for(self, short: bool) -> bool:
        return not self._busy and (short or self._short_waiting == 0)

    def acquire(self, short: bool) -> None:
        with self._condition:
            self._short_waiting += short
            try:
                self._condition.wait_for(lambda: self._free_for(short))
            finally:
                self._short_waiting -= short
            self._busy = True

    def release(self) -> None:
        with self._condition:
            self._busy = False
            self._condition.notify_all()

    def give_way(self) -> None:
        """Called by a long batch between model calls: pause while short batches wait."""
        with self._condition:
            if not self._short_waiting:
                return
            self._busy = False
            self._condition.notify_all()
            self._condition.wait_for(lambda: self._free_for(False))
            self._busy = True


class Lane:
    def __init__(self, name: str, short: bool):
        self.name = name
        self.short = short
        self.waiting: list[Job] = []
        self.arrived = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"apa-model-{name}")
        self.worker: asyncio.Task | None = None


class Scheduler:
    def __init__(self, score_fn: ScoreFn, max_batch: int = 16, max_wait_ms: float = 20.0, max_queue: int = 256,
                 short_cost: int = 150, on_batch: Callable[[BatchReport], None] | None = None):
        self.score_fn = score_fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.short_cost = short_cost
        self.on_batch = on_batch
        self.turn = ModelTurn()
        self.lanes: dict[str, Lane] = {}
        self.draining = False
        self.batches = 0
        self.scored = 0
        self._batch_seconds = 1.0  # running mean, for Retry-After

    # ---- life ----------------------------------------------------------------------

    async def start(self) -> None:
        self.lanes = {"short": Lane("short", True), "long": Lane("long", False)}
        for lane in self.lanes.values():
            lane.worker = asyncio.create_task(self._work(lane), name=f"apa-lane-{lane.name}")

    async def stop(self) -> None:
        """Refuse new work, abandon what waits, stop running batches at their next model
        call, and wait for the model threads."""
        self.draining = True
        for lane in self.lanes.values():
            for job in lane.waiting:
                job.abandon()
                if not job.future.done():
                    job.future.set_exception(Busy("the server is shutting down; retry shortly", 5))
            lane.waiting.clear()
            if lane.worker is not None:
                lane.worker.cancel()
                try:
                    await lane.worker
                except asyncio.CancelledError:
                    pass
        for lane in self.lanes.values():
            await asyncio.get_running_loop().run_in_executor(None, lane.executor.shutdown, True)

    @property
    def alive(self) -> bool:
        return bool(self.lanes) and all(lane.worker is not None and not lane.worker.done()
                                        for lane in self.lanes.values())

    def queue_depth(self, lane: str | None = None) -> int:
        lanes = [self.lanes[lane]] if lane else self.lanes.values()
        return sum(len(x.waiting) for x in lanes) if self.lanes else 0

    def retry_after(self) -> int:
        """Seconds after which a refused client may find room: the queue's batches at the
        mean batch time, at least 1."""
        batches = self.queue_depth() / self.max_batch + 1
        return max(1, min(300, round(batches * self._batch_seconds)))

    # ---- requests ------------------------------------------------------------------

    def check_room(self) -> None:
        """Busy when a request would be refused now: called before an upload is decoded, so that
        a full queue answers 503 at once instead of after seconds of decoding in a burst."""
        if self.draining:
            raise Busy("the server is shutting down; retry shortly", self.retry_after())
        if not self.alive:
            raise Busy("the scoring worker is not running; restart the server", 30)
        if self.queue_depth() >= self.max_queue:
            raise Busy(f"server busy: {self.max_queue} requests are waiting; retry shortly", self.retry_after())

    def submit(self, recording: Recording, task: str, cost: int) -> Job:
        self.check_room()  # again: the queue may have filled while this upload was decoded
        job = Job(recording, task, cost, asyncio.get_running_loop().create_future())
        lane = self.lanes["short" if cost <= self.short_cost else "long"]
        lane.waiting.append(job)
        lane.arrived.set()
        return job

    def _take_batch(self, lane: Lane) -> list[Job]:
        """The oldest live job and the live jobs of its task within COST_SPREAD of its cost."""
        lane.waiting = [job for job in lane.waiting if not job.abandoned.is_set()]
        if not lane.waiting:
            return []
        first = lane.waiting[0]
        batch = [first]
        for job in lane.waiting[1:]:
            if len(batch) >= self.max_batch:
                break
            if job.task == first.task and first.cost / COST_SPREAD <= job.cost <= first.cost * COST_SPREAD:
                batch.append(job)
        taken = set(map(id, batch))
        lane.waiting = [job for job in lane.waiting if id(job) not in taken]
        return batch

    async def _work(self, lane: Lane) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not lane.waiting:
                lane.arrived.clear()
                await lane.arrived.wait()
            if self.max_wait > 0 and len(lane.waiting) < self.max_batch:
                await asyncio.sleep(self.max_wait)  # let a batch gather
            jobs = self._take_batch(lane)
            if not jobs:
                continue
            try:
                outcomes = await loop.run_in_executor(lane.executor, self._run, lane, jobs)
            except Exception as e:  # the executor itself failed: fail this batch, keep serving
                outcomes = [e] * len(jobs)
            self.batches += 1
            for job, outcome in zip(jobs, outcomes):
                if job.future.done():
                    continue
                if job.abandoned.is_set():
                    # Nobody awaits it: an exception set here would only be logged, with a
                    # traceback, when the future is collected.
                    job.future.cancel()
                elif isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    self.scored += 1
                    job.future.set_result(outcome)

    # ---- the model thread ------------------------------------------------------------

    def _call(self, lane: Lane, jobs: list[Job], counter: list[int]) -> list:
        def between_calls() -> None:
            counter[0] += 1
            if all(job.abandoned.is_set() for job in jobs):
                raise Cancelled()
            if not lane.short:
                self.turn.give_way()

        return self.score_fn([job.recording for job in jobs], jobs[0].task, between_calls)

    def _run(self, lane: Lane, jobs: list[Job]) -> list[Any]:
        """Results (or exceptions) per job."""
        started = time.monotonic()
        calls = [0]
        self.turn.acquire(lane.short)
        try:
            try:
                outcomes: list[Any] = self._call(lane, jobs, calls)
                outcome = "ok"
            except Cancelled as e:
                outcomes, outcome = [e] * len(jobs), "cancelled"
            except Exception as batch_error:
                if len(jobs) == 1:
                    outcomes, outcome = [batch_error], "failed"
                else:
                    log.warning("batch of %d failed (%s); scoring its requests one by one", len(jobs), batch_error)
                    outcomes, outcome = [], "isolated"
                    for job in jobs:  # isolate the failing item(s)
                        try:
                            outcomes.append(self._call(lane, [job], calls)[0])
                        except Exception as e:
                            outcomes.append(e)
        finally:
            self.turn.release()
        seconds = time.monotonic() - started
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds
        costs = [job.cost for job in jobs]
        report = BatchReport(lane.name, jobs[0].task, len(jobs), (min(costs), max(costs)), seconds, calls[0], outcome)
        log.info(report.log_line())
        if self.on_batch is not None:
            self.on_batch(report)
        return outcomes

"""One worker's pipeline, shared by the jobs it holds: the jobs that reach it together are fitted
as one batch (``Pipeline.run_batch``), each still seeing its own progress, cancel and outcome.

A job announces itself when the worker takes it (``expect``) and arrives once its photo is in
(``run``). A batch starts as soon as the pipeline is free and either ``max_size`` jobs have
arrived, no other taken job is still on its way, or ``wait_ms`` have passed: a job alone starts
at once. Per job, inside a batch:
- progress: the batch's stage events go to every job's own callback;
- cancel: a cancelled job's result is thrown away when the batch ends (the others are not
  stopped); a batch whose jobs are all cancelled stops at its next stage;
- failure: ``run_batch`` is all or nothing, so a batch that fails is run again one job at a time
  and only the job that fails alone fails.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from inference.errors import CancelledError
from inference.pipeline import Job, Pipeline, Result, StageEvent

log = logging.getLogger("avatar.worker")


@dataclass
class _Entry:
    job: Job
    on_stage: Callable[[StageEvent], None]  # called in the pipeline's thread
    cancel: threading.Event
    outcome: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    batch_size: int = 0


class BatchingPipeline:
    def __init__(self, pipeline: Pipeline, max_size: int = 1, wait_ms: float = 0.0):
        self.pipeline = pipeline
        self.max_size, self.wait_s = max(1, max_size), wait_ms / 1000.0
        self._waiting: list[_Entry] = []
        self._on_the_way = 0  # taken by the worker, photo not in yet
        self._arrived = asyncio.Event()
        self._free = asyncio.Event()
        self._free.set()
        self._driver: asyncio.Task | None = None

    async def until_free(self) -> None:
        """Returns once no batch runs: the worker takes more jobs then, not while it could only hold them."""
        await self._free.wait()

    def expect(self) -> Callable[[], None]:
        """A job was taken and is on its way to ``run``: a batch being gathered waits (≤ wait_ms)
        for it. Call what this returns once it arrives or turns back (later calls do nothing)."""
        self._on_the_way += 1
        pending = True

        def arrived() -> None:
            nonlocal pending
            if pending:
                pending = False
                self._on_the_way -= 1
                self._arrived.set()
        return arrived

    async def run(self, job: Job, on_stage: Callable[[StageEvent], None], cancel: threading.Event,
                  arrived: Callable[[], None] = lambda: None) -> tuple[Result, int]:
        """This job's result and the size of the batch it ran in. Cancelled (a timeout, the worker
        stopping), it sets ``cancel`` and, if its batch already runs, waits for that batch's end:
        the job's work folder is in use until then."""
        entry = _Entry(job, on_stage, cancel)
        self._waiting.append(entry)
        arrived()
        self._arrived.set()
        if self._driver is None or self._driver.done():
            self._driver = asyncio.create_task(self._drive())
        try:
            return await asyncio.shield(entry.outcome)
        except asyncio.CancelledError:
            cancel.set()
            if entry in self._waiting:
                self._waiting.remove(entry)
            else:
                await asyncio.wait([entry.outcome])
            raise

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        self._free.clear()
        try:
            while self._waiting:
                deadline = loop.time() + self.wait_s
                while len(self._waiting) < self.max_size and self._on_the_way > 0 and loop.time() < deadline:
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
                batch, self._waiting = self._waiting[:self.max_size], self._waiting[self.max_size:]
                try:
                    if batch:
                        await self._run(batch)
                except Exception:
                    log.exception("a batch of %d jobs ended with an error", len(batch))
                finally:  # whatever ended it (the worker stopping included), no job waits forever
                    for e in batch:
                        _settle(e, exc=RuntimeError("the batch ended without this job's result"))
        finally:
            self._free.set()

    async def _run(self, batch: list[_Entry]) -> None:
        for e in [e for e in batch if e.cancel.is_set()]:  # cancelled while the batch was gathered
            _settle(e, exc=CancelledError("cancelled before it ran"))
            batch.remove(e)
        for e in batch:
            e.batch_size = len(batch)
        if not batch:
            return
        if len(batch) == 1:
            await self._alone(batch[0])
            return

        def on_stage(ev: StageEvent) -> None:
            for e in batch:
                e.on_stage(ev)

        def all_cancelled() -> bool:
            return all(e.cancel.is_set() for e in batch)

        log.info("fitting %d jobs as one batch", len(batch))
        try:
            results = await asyncio.to_thread(self.pipeline.run_batch, [e.job for e in batch], on_stage,
                                              all_cancelled)
        except CancelledError as exc:
            for e in batch:
                _settle(e, exc=exc)
        except Exception as exc:  # one photo spoils the batch: each job alone, so only that one fails
            log.info("batch of %d failed (%s: %s); running its jobs one at a time", len(batch),
                     exc.__class__.__name__, exc)
            for e in batch:
                e.batch_size = 1
                await self._alone(e)
        else:
            for e, result in zip(batch, results):
                _settle(e, result=result)

    async def _alone(self, e: _Entry) -> None:
        if e.cancel.is_set():
            _settle(e, exc=CancelledError("cancelled before it ran"))
            return
        try:
            result = await asyncio.to_thread(self.pipeline.run, e.job, e.on_stage, e.cancel.is_set)
        except Exception as exc:
            _settle(e, exc=exc)
        else:
            _settle(e, result=result)


def _settle(e: _Entry, result: Result | None = None, exc: BaseException | None = None) -> None:
    if e.outcome.done():
        return
    if exc is None:
        e.outcome.set_result((result, e.batch_size))
    else:
        e.outcome.set_exception(exc)
        e.outcome.exception()  # retrieved: a job that stopped waiting must not leave a warning

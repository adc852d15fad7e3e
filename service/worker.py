"""What a worker does with one job: take it (queued → processing), get the photo, run the
Pipeline in a thread (in one batch with the other jobs that reach it together, see
``service.batches``) while reporting progress and watching for a cancel, upload every artefact
under the try's own keys, and only then mark the job completed. Every path ends the job or, when
the worker is stopping, hands it back to the queue; a try that loses its job (the reaper gave it
to another) can no longer move it."""
from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import tempfile
import threading
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from arq.connections import ArqRedis
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inference.errors import AvatarError, CancelledError, InputError
from inference.pipeline import Job as PipelineJob
from inference.pipeline import Pipeline, StageEvent
from inference.types import Subject
from service import events, jobs, metrics, queue
from service.batches import BatchingPipeline
from service.db import Job
from service.objects import artefact_key, try_prefix
from service.photos import fetch_photo
from service.schemas import FitSummary
from service.settings import Settings
from service.storage import FileStorage, ObjectNotFound, S3Storage

log = logging.getLogger("avatar.worker")

# progress bands: fetching the photo, the pipeline's stages, uploading the artefacts
_FETCH_END, _PIPELINE_END = 5, 90


def worker_name() -> str:
    # the token keeps a restarted worker (same host, same pid in a container) from passing as the old one
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


@dataclass
class JobRunner:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    storage: FileStorage | S3Storage
    redis: ArqRedis
    pipeline: Pipeline
    name: str = field(default_factory=worker_name)
    jobs_done: int = 0
    current: list[str] = field(default_factory=list)  # the jobs this worker holds, oldest first
    # one pipeline per process, run by one batch at a time: its models are not safe to run twice
    # at once, and a batch holds it until the pipeline's thread has really returned
    batches: BatchingPipeline | None = None

    def __post_init__(self) -> None:
        if self.batches is None:
            self.batches = BatchingPipeline(self.pipeline, self.settings.worker_batch,
                                            self.settings.worker_batch_wait_ms)

    @property
    def current_job(self) -> str | None:
        return self.current[0] if self.current else None

    async def run(self, job_id: str, job_try: int = 1) -> str:
        """Process one job; returns the final status it reached (or the status it was left in)."""
        # delivered while a batch runs: it stays queued until that batch ends (its time starts then)
        await self.batches.until_free()
        self.current.append(job_id)
        arrived = self.batches.expect()
        try:
            return await self._run(job_id, arrived)
        finally:
            arrived()
            self.current.remove(job_id)
            self.jobs_done += 1

    async def _take(self, job_id: str) -> Job | str:
        """queued → processing for this worker; the job, or the status that kept us from taking it.
        The move comes first (a compare-and-set that also counts the try): reading the row before
        it cost a database round trip between the queue and the job's start."""
        async with self.sessions() as s:
            took = await jobs.move(s, job_id, jobs.PROCESSING, when=(Job.attempts < self.settings.job_max_tries,),
                                   attempts=Job.attempts + 1, worker=self.name, started_at=jobs.utcnow(),
                                   progress=0, stage="fetch", message="fetching the photo", completed_at=None,
                                   error_code=None, error_message=None)
            job = await s.get(Job, job_id, populate_existing=True)
            if not took:
                if job is None:
                    log.warning("job %s is not in the database; dropped", job_id)
                    return "missing"
                if job.status != jobs.QUEUED:  # final, or another worker's try runs it
                    log.info("job %s is %s (worker %s); this delivery skipped", job_id, job.status, job.worker)
                    return job.status
                if job.attempts < self.settings.job_max_tries:
                    return job.status
                await jobs.move(s, job_id, jobs.FAILED, error_code="worker_lost", message="failed",
                                error_message=f"the job's worker stopped {job.attempts} time(s); it is not "
                                              "tried again")
                status = (await s.get(Job, job_id, populate_existing=True)).status
        if not took:
            await events.publish(self.redis, job_id)
            return status
        await events.publish(self.redis, job_id)
        return job

    async def _run(self, job_id: str, arrived: Callable[[], None]) -> str:
        take = asyncio.ensure_future(self._take(job_id))
        try:
            job = await asyncio.shield(take)  # a database error here leaves the job queued: the reaper re-queues it
        except asyncio.CancelledError:
            # the worker is stopping while it takes the job: the take's move may already have
            # counted this try (processing, attempts + 1); left so, the reaper would find the
            # worker gone and, were that its last try, fail a job nothing was done for
            try:
                job = await take
            except Exception:  # the take failed: the job stayed queued
                raise asyncio.CancelledError from None
            if not isinstance(job, str):
                await self._hand_back_untried(job, job.attempts)
            raise
        if isinstance(job, str):
            return job
        try_no, owner = job.attempts, (self.name, job.attempts)
        log.info("job %s: processing (try %d) for %s/%s", job_id, try_no, job.tenant, job.user_id)
        t0 = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix=f"avatar-{job_id}-"))
        cancel = threading.Event()
        watcher = asyncio.create_task(self._watch_cancel(job_id, cancel))
        try:
            async with asyncio.timeout(self.settings.job_timeout_seconds):
                photo = await self._photo(job)
                result, batch_size = await self._pipeline(job, photo, workdir / "out", cancel, arrived)
                if cancel.is_set():  # cancelled while its batch ran on: its result is not stored
                    raise CancelledError("cancelled while its batch ran")
                files = {name: artefact_key(job.user_id, job.id, name, try_no) for name in result.files}
                await self._upload(job_id, files, result.files)
            done = await self._move(
                job_id, jobs.COMPLETED, owner=owner, files=files, measurements=result.measurements,
                timings={"stages_ms": result.timings_ms, "total_ms": result.total_ms,
                         "wall_ms": round((time.monotonic() - t0) * 1000.0, 1), "batch_size": batch_size},
                body_model=result.body_model, fit=stored_fit(job, result.fit), stage="done", message="avatar ready")
            if not done:  # cancelled, past its deadline or handed to another try meanwhile: drop our files
                await self._discard(job, try_no)
                return (await self._status(job_id)) or jobs.CANCELLED
            log.info("job %s: completed in %.1f s", job_id, result.total_ms / 1000.0)
            await metrics.record_stages(self.redis, result.timings_ms)
            return jobs.COMPLETED
        except CancelledError:
            return await self._end(job, owner, jobs.CANCELLED, message="cancelled")
        except AvatarError as exc:
            log.info("job %s: failed: %s (%s)", job_id, exc, exc.code)
            return await self._end(job, owner, jobs.FAILED, error_code=exc.code, error_message=str(exc),
                                   message="failed")
        except TimeoutError:
            log.warning("job %s: timed out after %d s", job_id, self.settings.job_timeout_seconds)
            return await self._end(job, owner, jobs.FAILED, error_code="timeout", message="failed",
                                   error_message=f"the job did not finish within "
                                                 f"{self.settings.job_timeout_seconds} s")
        except asyncio.CancelledError:  # the worker is stopping (SIGTERM): hand the job back, untried
            await self._hand_back_untried(job, try_no)
            raise
        except Exception:  # a bug or a storage outage: the job still ends; the details stay in our log
            log.exception("job %s: internal error", job_id)
            return await self._end(job, owner, jobs.FAILED, error_code="internal_error", message="failed",
                                   error_message="the worker hit an internal error; the operator's logs "
                                                 "have the details")
        finally:
            cancel.set()
            watcher.cancel()
            shutil.rmtree(workdir, ignore_errors=True)

    async def _hand_back_untried(self, job: Job, try_no: int) -> None:
        """The worker is stopping: this try's files removed, the job queued again as if this try
        had never been taken (whatever cancels the caller meanwhile)."""
        log.info("job %s: worker stopping; the job goes back to the queue", job.id)
        await asyncio.shield(self._end(job, (self.name, try_no), jobs.QUEUED, attempts=try_no - 1, worker=None,
                                       progress=0, stage="queued", message="waiting for a worker "
                                       "(its worker was stopped)", started_at=None))

    async def _upload(self, job_id: str, keys: dict[str, str], paths: dict[str, Path]) -> None:
        """Every artefact at once, beside the progress write (nothing waits on a courtesy). All of
        them have ended before this returns or raises, so a discard after a failure finds every
        file that was written."""
        uploads = asyncio.ensure_future(asyncio.gather(
            self._progress(job_id, _PIPELINE_END, "upload", "uploading the artefacts"),
            *(self.storage.put_file(keys[n], path) for n, path in paths.items()), return_exceptions=True))
        try:
            done = await asyncio.shield(uploads)
        except asyncio.CancelledError:
            # the worker is stopping: let the writes in flight end first, so the discard that
            # follows finds every file (a write cut off here could land after it)
            await asyncio.wait({uploads}, timeout=30)
            raise
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _end(self, job: Job, owner: tuple[str, int], status: str, **values) -> str:
        """Remove this try's files (best effort: a storage outage must not keep the job open),
        then move the job; returns the status the job has now."""
        await self._discard(job, owner[1])
        await self._move(job.id, status, owner=owner, **values)
        return (await self._status(job.id)) or status

    async def _move(self, job_id: str, status: str, **values) -> bool:
        """A job's last move, retried through a database outage of up to ~30 s; past that it
        raises, the job stays with this try and the reaper queues it again once the database is back."""
        for delay in (0.5, 1, 2, 4, 8, 15, None):
            try:
                async with self.sessions() as s:
                    moved = await jobs.move(s, job_id, status, **values)
                break
            except (OSError, SQLAlchemyError) as exc:
                if delay is None:
                    raise
                log.warning("job %s: cannot record %s yet (%s); again in %s s", job_id, status,
                            exc.__class__.__name__, delay)
                await asyncio.sleep(delay)
        if moved:
            await events.publish(self.redis, job_id)
        return moved

    async def _status(self, job_id: str) -> str | None:
        async with self.sessions() as s:
            row = await s.get(Job, job_id)
            return row.status if row else None

    async def _photo(self, job: Job) -> bytes:
        if job.photo_key:
            try:
                return await self.storage.get_bytes(job.photo_key)
            except ObjectNotFound as exc:
                raise InputError("the uploaded photo is no longer in storage; upload it again",
                                 "photo_not_found") from exc
        return await fetch_photo(job.photo_source_url, max_bytes=self.settings.max_upload_bytes,
                                 timeout=self.settings.photo_fetch_timeout_seconds,
                                 allow_private=self.settings.allow_private_photo_urls)

    async def _pipeline(self, job: Job, photo: bytes, out_dir: Path, cancel: threading.Event,
                        arrived: Callable[[], None]):
        loop = asyncio.get_running_loop()
        stage_events: asyncio.Queue[StageEvent | None] = asyncio.Queue()

        def on_stage(ev: StageEvent) -> None:  # called in the pipeline's thread
            loop.call_soon_threadsafe(stage_events.put_nowait, ev)

        async def report() -> None:  # the photo is in: said while the pipeline starts, not before it
            await self._progress(job.id, _FETCH_END, "fetch", "photo received")
            while (ev := await stage_events.get()) is not None:
                pct = _FETCH_END + ev.progress * (_PIPELINE_END - _FETCH_END)
                verb = "running" if ev.status == "start" else "finished"
                await self._progress(job.id, int(pct), ev.stage, f"{verb} {ev.stage} ({ev.index}/{ev.total})")

        reporter = asyncio.create_task(report())
        subject = Subject(height_cm=job.height_cm, gender=job.gender, weight_kg=job.weight_kg,
                          clothing=job.clothing, weight_source=job.weight_source)
        try:
            # a timeout or a shutdown sets ``cancel`` and waits for the job's batch, if it runs:
            # the thread cannot be killed, and the work folder is in use until it returns
            return await self.batches.run(PipelineJob(photo, subject, out_dir), on_stage, cancel, arrived)
        finally:
            stage_events.put_nowait(None)
            await reporter

    async def _watch_cancel(self, job_id: str, cancel: threading.Event) -> None:
        while not cancel.is_set():
            if await queue.cancel_requested(self.redis, job_id):
                cancel.set()
                return
            await asyncio.sleep(0.25)

    async def _progress(self, job_id: str, pct: int, stage: str, message: str) -> None:
        """Progress is a courtesy: a database blip skips a report, it never fails the job."""
        try:
            async with self.sessions() as s:
                if not await jobs.report_progress(s, job_id, pct, stage, message):
                    return  # the job is no longer processing (cancelled, or another try's)
        except (OSError, SQLAlchemyError) as exc:
            log.warning("job %s: progress not recorded (%s)", job_id, exc.__class__.__name__)
            return
        await events.publish(self.redis, job_id, status=jobs.PROCESSING, progress=int(pct), stage=stage,
                             message=message)

    async def _discard(self, job: Job, try_no: int) -> None:
        try:
            await self.storage.delete_prefix(try_prefix(job.user_id, job.id, try_no))
        except Exception:
            log.exception("job %s: could not remove the files of try %d", job.id, try_no)

    async def heartbeat_forever(self, device: str) -> None:
        """Beat until cancelled; a Redis outage skips beats (logged) but never ends the loop."""
        started = time.time()
        try:
            while True:
                try:
                    await queue.beat(self.redis, self.name, {
                        "name": self.name, "device": device, "queue": self.settings.queue_name,
                        "started_at": started, "beat_at": time.time(), "jobs_done": self.jobs_done,
                        "current_job": self.current_job, "current_jobs": list(self.current),
                        "body_model": self.pipeline.body_model,
                        "gpu_memory_bytes": _gpu_memory(device)},
                        self.settings.heartbeat_ttl_seconds)
                except Exception as exc:
                    log.warning("heartbeat not sent (%s: %s)", exc.__class__.__name__, exc)
                await asyncio.sleep(self.settings.heartbeat_seconds)
        finally:
            try:
                await queue.stop_beating(self.redis, self.name)
            except Exception:
                pass


def stored_fit(job: Job, fit: object) -> dict | None:
    """What the job row keeps of a fit (``FitSummary``), as JSON; the RunPod backend stores the same."""
    summary = FitSummary.of(fit, weight_kg=job.weight_kg, clothing=job.clothing, weight_source=job.weight_source)
    return summary.model_dump(mode="json") if summary else None


def _gpu_memory(device: str) -> int | None:
    """Bytes the pipeline holds on its GPU (None on CPU), for /metrics and /admin/queue."""
    if not device.startswith("cuda"):
        return None
    import torch

    return int(torch.cuda.memory_allocated(torch.device(device)))

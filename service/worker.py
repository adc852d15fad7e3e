"""What a worker does with one job: take it (queued → processing), get the photo, run the
Pipeline in a thread while reporting progress and watching for a cancel, upload every artefact,
and only then mark the job completed. Every path ends in a final state."""
from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import tempfile
import threading
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inference.errors import AvatarError, CancelledError, InputError
from inference.pipeline import Job as PipelineJob
from inference.pipeline import Pipeline, StageEvent
from inference.types import Subject
from service import jobs, queue
from service.db import Job
from service.photos import fetch_photo
from service.settings import Settings
from service.storage import FileStorage, ObjectNotFound, S3Storage

log = logging.getLogger("avatar.worker")

# progress bands: fetching the photo, the pipeline's stages, uploading the artefacts
_FETCH_END, _PIPELINE_END = 5, 90


def artefact_key(user_id: str, job_id: str, name: str) -> str:
    return f"avatars/{user_id}/{job_id}/{name}"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class JobRunner:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    storage: FileStorage | S3Storage
    redis: ArqRedis
    pipeline: Pipeline
    name: str = field(default_factory=worker_name)
    jobs_done: int = 0
    current_job: str | None = None
    # one pipeline per process: its models are not safe to run twice at once
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def run(self, job_id: str, job_try: int = 1) -> str:
        """Process one job; returns the final status it reached (or the status it was left in)."""
        async with self._lock:
            self.current_job = job_id
            try:
                return await self._run(job_id, job_try)
            finally:
                self.current_job = None
                self.jobs_done += 1

    async def _run(self, job_id: str, job_try: int) -> str:
        async with self.sessions() as s:
            job = await s.get(Job, job_id)
            if job is None:
                log.warning("job %s is not in the database; dropped", job_id)
                return "missing"
            if job.status in jobs.FINAL:
                log.info("job %s is already %s; skipped", job_id, job.status)
                return job.status
            if job.status == jobs.PROCESSING and job.attempts >= self.settings.job_max_tries:
                await jobs.move(s, job_id, jobs.FAILED, error_code="worker_lost",
                                error_message=f"the worker processing this job stopped {job.attempts} time(s)",
                                message="failed")
                return jobs.FAILED
            took = await jobs.move(s, job_id, jobs.PROCESSING, attempts=job.attempts + 1, worker=self.name,
                                   started_at=jobs.utcnow(), progress=0, stage="fetch",
                                   message="fetching the photo", completed_at=None)
            if not took:
                return (await s.get(Job, job_id, populate_existing=True)).status
            job = await s.get(Job, job_id, populate_existing=True)
        log.info("job %s: processing (try %d) for %s/%s", job_id, job_try, job.tenant, job.user_id)
        t0 = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix=f"avatar-{job_id}-"))
        uploaded: list[str] = []
        cancel = threading.Event()
        watcher = asyncio.create_task(self._watch_cancel(job_id, cancel))
        try:
            photo = await self._photo(job)
            await self._progress(job_id, _FETCH_END, "fetch", "photo received")
            result = await self._pipeline(job, photo, workdir / "out", cancel)
            files = {}
            await self._progress(job_id, _PIPELINE_END, "upload", "uploading the artefacts")
            for name, path in result.files.items():
                key = artefact_key(job.user_id, job.id, name)
                await self.storage.put_file(key, path)
                uploaded.append(key)
                files[name] = key
            async with self.sessions() as s:
                done = await jobs.move(
                    s, job_id, jobs.COMPLETED, files=files, measurements=result.measurements,
                    timings={"stages_ms": result.timings_ms, "total_ms": result.total_ms,
                             "wall_ms": round((time.monotonic() - t0) * 1000.0, 1)},
                    body_model=result.body_model, stage="done", message="avatar ready")
            if not done:  # cancelled while we uploaded: the job says cancelled, so drop the files
                await self._discard(job, uploaded)
                return jobs.CANCELLED
            log.info("job %s: completed in %.1f s", job_id, result.total_ms / 1000.0)
            return jobs.COMPLETED
        except CancelledError:
            await self._discard(job, uploaded)
            await self._finish(job_id, jobs.CANCELLED, message="cancelled")
            return jobs.CANCELLED
        except AvatarError as exc:
            await self._discard(job, uploaded)
            await self._finish(job_id, jobs.FAILED, error_code=exc.code, error_message=str(exc), message="failed")
            log.info("job %s: failed: %s (%s)", job_id, exc, exc.code)
            return jobs.FAILED
        except asyncio.CancelledError:  # arq's job timeout or a worker shutdown
            cancel.set()
            await self._discard(job, uploaded)
            await self._finish(job_id, jobs.FAILED, error_code="timeout",
                               error_message=f"the job did not finish within {self.settings.job_timeout_seconds} s "
                                             "or its worker stopped", message="failed")
            raise
        except Exception as exc:  # a bug or a storage outage: the job still ends, with the reason
            log.exception("job %s: internal error", job_id)
            await self._discard(job, uploaded)
            await self._finish(job_id, jobs.FAILED, error_code="internal_error",
                               error_message=f"{exc.__class__.__name__}: {exc}", message="failed")
            return jobs.FAILED
        finally:
            watcher.cancel()
            shutil.rmtree(workdir, ignore_errors=True)

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

    async def _pipeline(self, job: Job, photo: bytes, out_dir: Path, cancel: threading.Event):
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[StageEvent | None] = asyncio.Queue()

        def on_stage(ev: StageEvent) -> None:  # called in the pipeline's thread
            loop.call_soon_threadsafe(events.put_nowait, ev)

        async def report() -> None:
            while (ev := await events.get()) is not None:
                pct = _FETCH_END + ev.progress * (_PIPELINE_END - _FETCH_END)
                verb = "running" if ev.status == "start" else "finished"
                await self._progress(job.id, int(pct), ev.stage, f"{verb} {ev.stage} ({ev.index}/{ev.total})")

        reporter = asyncio.create_task(report())
        subject = Subject(height_cm=job.height_cm, gender=job.gender, weight_kg=job.weight_kg)
        try:
            return await asyncio.to_thread(self.pipeline.run, PipelineJob(photo, subject, out_dir),
                                           on_stage, cancel.is_set)
        finally:
            events.put_nowait(None)
            await reporter

    async def _watch_cancel(self, job_id: str, cancel: threading.Event) -> None:
        while not cancel.is_set():
            if await queue.cancel_requested(self.redis, job_id):
                cancel.set()
                return
            await asyncio.sleep(0.25)

    async def _progress(self, job_id: str, pct: int, stage: str, message: str) -> None:
        async with self.sessions() as s:
            await jobs.report_progress(s, job_id, pct, stage, message)

    async def _finish(self, job_id: str, status: str, **values) -> None:
        async with self.sessions() as s:
            await jobs.move(s, job_id, status, **values)

    async def _discard(self, job: Job, uploaded: list[str]) -> None:
        if uploaded:
            await self.storage.delete_prefix(artefact_key(job.user_id, job.id, ""))

    async def heartbeat_forever(self, device: str) -> None:
        started = time.time()
        ttl = self.settings.heartbeat_seconds * 3
        try:
            while True:
                await queue.beat(self.redis, self.name, {
                    "name": self.name, "device": device, "queue": self.settings.queue_name,
                    "started_at": started, "jobs_done": self.jobs_done, "current_job": self.current_job,
                    "body_model": self.pipeline.body_model}, ttl)
                await asyncio.sleep(self.settings.heartbeat_seconds)
        finally:
            await queue.stop_beating(self.redis, self.name)

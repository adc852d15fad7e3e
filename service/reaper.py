"""The reaper: the one place that ends or re-queues jobs nobody else will.

Workers beat a heartbeat in Redis; a processing job whose worker stopped beating (SIGKILL, OOM,
a lost machine) goes back to the queue, or fails once it used up ``JOB_MAX_TRIES`` (but not in the
first heartbeat TTL after Redis restarted, when live workers may not have beaten again yet). A job past its
deadline fails. A queued job that Redis no longer holds (a Redis restart without its data, arq
dropping an expired entry, a worker that could not take it) is queued again. One API process at a
time sweeps (a Redis lock), however many run.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from arq.connections import ArqRedis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import events, jobs, queue
from service.db import Job, utcnow
from service.objects import try_prefix
from service.settings import Settings
from service.storage import FileStorage, S3Storage

log = logging.getLogger("avatar.reaper")
LOCK_NAME = "reaper"


@dataclass
class Sweep:
    """What one sweep did, by job id."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    reenqueued: list[str] = field(default_factory=list)


@dataclass
class Reaper:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    storage: FileStorage | S3Storage
    owner: str = field(default_factory=lambda: secrets.token_hex(8))

    async def forever(self) -> None:
        """Sweep every ``REAPER_INTERVAL_SECONDS`` while holding the lock; outages are logged and
        the next sweep tries again."""
        interval = self.settings.reaper_interval_seconds
        while True:
            try:
                if await queue.take_lock(self.redis, LOCK_NAME, self.owner, interval * 3):
                    await self.sweep()
            except Exception as exc:
                log.warning("reaper sweep skipped (%s: %s)", exc.__class__.__name__, exc)
            await asyncio.sleep(interval)

    async def sweep(self) -> Sweep:
        done = Sweep()
        now = utcnow()
        workers = {w.get("name"): w for w in await queue.live_workers(self.redis, self.settings.queue_name)}
        async with self.sessions() as s:
            open_jobs = list((await s.execute(
                select(Job).where(Job.status.in_((jobs.QUEUED, jobs.PROCESSING))))).scalars())
        deadline = now - timedelta(seconds=self.settings.job_deadline_seconds)
        for job in [j for j in open_jobs if j.created_at < deadline]:
            await self._fail_late(job, done)
        open_jobs = [j for j in open_jobs if j.created_at >= deadline]
        # right after Redis restarted (its data lost, or kept while beats ran out) live workers'
        # beats may be missing: give them one TTL to beat again
        beats_count = await queue.redis_age(self.redis) >= self.settings.heartbeat_ttl_seconds
        for job in open_jobs:
            if job.status == jobs.PROCESSING and beats_count and self._worker_lost(job, workers.get(job.worker), now):
                await self._hand_back(job, done)
        stale = now - timedelta(seconds=self.settings.heartbeat_ttl_seconds)
        waiting = [j for j in open_jobs if j.status == jobs.QUEUED and j.updated_at < stale]
        if waiting:
            known = await queue.known_job_ids(self.redis, self.settings.queue_name)
            for job in waiting:
                if job.id not in known:
                    await self.enqueue(job.id)
                    done.reenqueued.append(job.id)
                    log.warning("job %s: queued but not in Redis; queued again", job.id)
        return done

    def _worker_lost(self, job: Job, beat: dict | None, now) -> bool:
        if beat is None:
            return True
        # alive but on something else: it restarted or dropped the job (given a beat to catch up)
        quiet = (now - job.updated_at).total_seconds() > self.settings.heartbeat_ttl_seconds
        return job.id not in queue.held_jobs(beat) and quiet  # a batching worker holds several

    async def _hand_back(self, job: Job, done: Sweep) -> None:
        if job.attempts < self.settings.job_max_tries:
            if await self.requeue(job, "waiting for a worker (its worker stopped; tried again)"):
                done.requeued.append(job.id)
                log.warning("job %s: worker %s stopped beating; queued again", job.id, job.worker)
            return
        async with self.sessions() as s:
            moved = await jobs.move(s, job.id, jobs.FAILED, owner=(job.worker or "", job.attempts),
                                    error_code="worker_lost", message="failed", error_message=f"the job's "
                                    f"worker stopped {job.attempts} time(s); it is not tried again")
        if moved:
            await events.publish(self.redis, job.id)
            done.failed.append(job.id)
            log.warning("job %s: worker %s stopped beating; failed (no tries left)", job.id, job.worker)
            await self._remove_try(job)

    async def requeue(self, job: Job, message: str) -> bool:
        """Take a processing job's try away from its worker: queued again, that try's files removed,
        a fresh delivery on the queue. False if the try already ended (or another took it)."""
        async with self.sessions() as s:
            moved = await jobs.move(s, job.id, jobs.QUEUED, owner=(job.worker or "", job.attempts), worker=None,
                                    progress=0, stage="queued", started_at=None, message=message)
        if moved:
            await events.publish(self.redis, job.id)
            await self._remove_try(job)
            await self.enqueue(job.id)
        return moved

    async def _remove_try(self, job: Job) -> None:
        try:
            await self.storage.delete_prefix(try_prefix(job.user_id, job.id, job.attempts))
        except Exception:
            log.exception("job %s: could not remove the files of its lost try", job.id)

    async def _fail_late(self, job: Job, done: Sweep) -> None:
        async with self.sessions() as s:
            moved = await jobs.move(s, job.id, jobs.FAILED, error_code="deadline_exceeded", message="failed",
                                    error_message=f"the job did not finish within "
                                                  f"{self.settings.job_deadline_seconds} s of its creation")
        if moved:
            await events.publish(self.redis, job.id)
            done.failed.append(job.id)
            log.warning("job %s: past its deadline; failed", job.id)
            await queue.request_cancel(self.redis, job.id)  # a worker still on it stops

    async def enqueue(self, job_id: str) -> None:
        await queue.enqueue(self.redis, self.settings.queue_name, job_id,
                            expires_s=self.settings.job_deadline_seconds)

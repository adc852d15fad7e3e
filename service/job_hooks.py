"""What every worker does around one job, whatever runs it (the local GPU runner or the RunPod
backend): a /v2 request's deadlines (``policy.ttl`` from creation, ``policy.executionTimeout``
from the start) and its webhook once the job is final.

A deadline fails the job (``timeout``, RunPod's TIMED_OUT) and raises the cancel flag: the
runner stops at its next check, and its own finish cannot overwrite the final state."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import jobs, queue, webhooks
from service.db import Job, utcnow
from service.runpod_protocol import TIMEOUT_CODE
from service.settings import Settings
from service.storage import FileStorage, S3Storage

log = logging.getLogger("avatar.worker")


@dataclass
class WorkerStores:
    """What a worker's runner reaches, whatever runs the jobs (``JobRunner`` has the same)."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    storage: FileStorage | S3Storage
    redis: ArqRedis


class Runner(Protocol):
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    storage: FileStorage | S3Storage
    redis: ArqRedis

    async def run(self, job_id: str, job_try: int = 1) -> str: ...


async def run_job(runner: Runner, job_id: str, job_try: int = 1) -> str:
    async with runner.sessions() as s:
        job = await s.get(Job, job_id)
    left = seconds_left(job)
    if left is not None and left <= 0:
        await _time_out(runner, job_id, "its policy's time ran out before a worker took it")
    timer = asyncio.create_task(_expire(runner, job_id, left)) if left and left > 0 else None
    try:
        return await runner.run(job_id, job_try)
    finally:
        if timer:
            timer.cancel()
        if job is not None and job.webhook_state:
            await deliver_webhook(runner, job_id)


def seconds_left(job: Job | None) -> float | None:
    """Time until the job's /v2 policy ends it, from now (a run starts now); None without one."""
    policy = (job.v2_request or {}) if job else {}
    limits = []
    if policy.get("ttl"):
        limits.append((job.created_at + timedelta(milliseconds=policy["ttl"]) - utcnow()).total_seconds())
    if policy.get("executionTimeout"):
        limits.append(policy["executionTimeout"] / 1000.0)
    return min(limits) if limits else None


async def _expire(runner: Runner, job_id: str, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await _time_out(runner, job_id, f"it ran past its policy's limit ({seconds:.1f} s were left when it started)")


async def _time_out(runner: Runner, job_id: str, why: str) -> None:
    async with runner.sessions() as s:
        moved = await jobs.move(s, job_id, jobs.FAILED, error_code=TIMEOUT_CODE, message="failed",
                                error_message=f"the job timed out: {why}")
    if moved:
        log.info("job %s: timed out (%s)", job_id, why)
        await queue.request_cancel(runner.redis, job_id)


async def deliver_webhook(runner: Runner, job_id: str) -> str | None:
    settings = runner.settings

    async def body(job: Job) -> dict:
        from service import v2  # the /v2 routes' module (FastAPI): a worker without webhooks starts without it

        base = settings.public_base_url or f"http://{settings.host}:{settings.port}"
        return (await v2.describe(runner.storage, job, base)).model_dump(exclude_none=True)

    return await webhooks.deliver(runner.sessions, job_id, settings.allow_private_webhook_urls,
                                  settings.webhook_timeout_seconds, body)

"""An operator's hands on single jobs (``avatar jobs retry|fail``): the same moves the reaper makes,
on request. Both go through the state machine, so credits and the passport follow."""
from __future__ import annotations

from service import jobs, queue
from service.db import Job
from service.reaper import Reaper


async def retry(reaper: Reaper, job_id: str) -> str:
    """A waiting job gets a fresh delivery; a processing one is taken from its worker and queued
    again. A final job stays final (create a new one)."""
    async with reaper.sessions() as s:
        job = await s.get(Job, job_id)
    if job is None:
        raise LookupError(f"no job {job_id}")
    if job.status == jobs.QUEUED:
        await reaper.enqueue(job.id)
        return "queued again (a fresh delivery)"
    if job.status == jobs.PROCESSING:
        if await reaper.requeue(job, "waiting for a worker (queued again by the operator)"):
            return f"taken from worker {job.worker} and queued again"
        return "it changed state meanwhile; look again"
    raise ValueError(f"job {job_id} is {job.status}, which is final; create a new job instead")


async def fail(reaper: Reaper, job_id: str, reason: str) -> str:
    async with reaper.sessions() as s:
        moved = await jobs.move(s, job_id, jobs.FAILED, error_code="failed_by_operator", message="failed",
                                error_message=reason or "stopped by the operator")
        job = await s.get(Job, job_id)
    if job is None:
        raise LookupError(f"no job {job_id}")
    if not moved:
        raise ValueError(f"job {job_id} is {job.status}, which is final")
    await queue.request_cancel(reaper.redis, job_id)  # a worker still on it stops
    return "failed; its credit is released"

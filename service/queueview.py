"""The queue at a glance, for ``GET /admin/queue`` (one tenant's jobs) and ``avatar queue`` (all)."""
from __future__ import annotations

import time

from arq.connections import ArqRedis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import jobs, queue
from service.db import Job, utcnow
from service.schemas import FailureOut, QueueOut, WaitingJobOut, WorkerOut

COUNT_NAMES = {jobs.QUEUED: "waiting", jobs.PROCESSING: "active", jobs.COMPLETED: "completed",
               jobs.FAILED: "failed", jobs.CANCELLED: "cancelled"}


async def queue_view(sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, queue_name: str,
                     tenant: str | None = None, failures: int = 10) -> QueueOut:
    mine = [Job.tenant == tenant] if tenant else []
    async with sessions() as s:
        by_state = dict((await s.execute(select(Job.status, func.count()).where(*mine).group_by(Job.status))).all())
        oldest = (await s.execute(select(Job).where(Job.status == jobs.QUEUED, *mine)
                                  .order_by(Job.created_at).limit(1))).scalar_one_or_none()
        failed = (await s.execute(select(Job).where(Job.status == jobs.FAILED, *mine)
                                  .order_by(Job.completed_at.desc()).limit(failures))).scalars().all()
    now = time.time()
    workers = [WorkerOut(name=w.get("name", "?"), device=w.get("device", "?"), current_job=w.get("current_job"),
                         current_jobs=queue.held_jobs(w), last_beat_seconds_ago=round(max(0.0, now - float(w.get("beat_at") or now)), 1),
                         jobs_done=int(w.get("jobs_done") or 0), gpu_memory_bytes=w.get("gpu_memory_bytes"))
               for w in await queue.live_workers(redis, queue_name)]
    return QueueOut(
        counts={name: by_state.get(state, 0) for state, name in COUNT_NAMES.items()},
        queue_depth=await queue.queued_count(redis, queue_name),
        oldest_waiting=WaitingJobOut(job_id=oldest.id, tenant=oldest.tenant,
                                     waiting_seconds=round((utcnow() - oldest.created_at).total_seconds(), 1))
        if oldest else None,
        workers=sorted(workers, key=lambda w: w.name),
        recent_failures=[FailureOut(job_id=j.id, tenant=j.tenant, error_code=j.error_code,
                                    error_message=j.error_message, completed_at=j.completed_at) for j in failed])

"""The use cases behind the RunPod-compatible /v2 routes. A /v2 job is an ordinary job (same
row, queue, workers and passport); this module only translates: RunPod's request into a job,
a job into RunPod's status body."""
from __future__ import annotations

import asyncio
import base64
import time
import uuid
from datetime import datetime

from fastapi import Request
from sqlalchemy import func, select

from inference.errors import InputError
from service import avatars, jobs, queue, webhooks
from service.auth import Principal
from service.db import Job, utcnow
from service.deps import Services
from service.errors import ApiError, not_found
from service.runpod_protocol import (FINAL_STATES, AvatarOutput, Progress, V2HealthJobs, V2HealthOut,
                                     V2HealthWorkers, V2JobOut, V2RunIn, runpod_status, error_text)
from service.schemas import CreateAvatarIn
from service.storage import FileStorage, S3Storage

RUNSYNC_DEFAULT_WAIT_MS = 90_000


def check_endpoint(svc: Services, endpoint_id: str) -> None:
    if endpoint_id not in svc.settings.v2_endpoint_ids:
        raise not_found(f"endpoint {endpoint_id!r}")


async def submit(svc: Services, who: Principal, request: Request, endpoint_id: str, body: V2RunIn) -> Job:
    """Validate like /api/avatar/create (plus the webhook's address), create and queue the job."""
    if body.webhook:
        try:
            await webhooks.check_url(body.webhook, svc.settings.allow_private_webhook_urls)
        except InputError as exc:
            raise ApiError(422, exc.code, str(exc)) from exc
    inp = body.input
    fields = inp.model_dump(exclude={"return_files"})
    fields["user_id"] = inp.user_id or f"rp-{uuid.uuid4().hex[:20]}"  # no user given: a passport of its own
    policy = body.policy.model_dump(exclude_none=True) if body.policy else {}
    options = {"return_files": inp.return_files, "webhook": body.webhook, **policy}
    made = await avatars.create_job(svc, who, request, CreateAvatarIn(**fields), v2_endpoint=endpoint_id,
                                    v2_request=options, webhook_state=webhooks.PENDING if body.webhook else None)
    return await avatars.get_job(svc, who, made.job_id)


async def wait_final(svc: Services, who: Principal, job_id: str, wait_ms: int) -> Job:
    """The job once final, or as it is when ``wait_ms`` has passed (runsync)."""
    deadline = time.monotonic() + wait_ms / 1000.0
    while True:
        job = await avatars.get_job(svc, who, job_id)
        if job.status in jobs.FINAL or time.monotonic() >= deadline:
            return job
        await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def _ms(start: datetime | None, end: datetime | None) -> int | None:
    return None if start is None else max(0, round(((end or utcnow()) - start).total_seconds() * 1000))


async def describe(storage: FileStorage | S3Storage, job: Job, base_url: str) -> V2JobOut:
    """RunPod's status body for a job: its output once completed (files in base64 or as links,
    as the request asked), the stage progress while it runs, ``"code: message"`` when it failed."""
    status = runpod_status(job.status, job.error_code)
    out = V2JobOut(id=job.id, status=status, delayTime=_ms(job.created_at, job.started_at),
                   executionTime=_ms(job.started_at, job.completed_at))
    if status == "COMPLETED":
        out.output = await _output(storage, job, base_url)
    elif status == "IN_PROGRESS":
        out.output = Progress(progress=job.progress, stage=job.stage, message=job.message)
    elif status in FINAL_STATES and job.error_code:
        out.error = error_text(job.error_code, job.error_message or "")
    return out


async def _output(storage: FileStorage | S3Storage, job: Job, base_url: str) -> AvatarOutput:
    files = dict(job.files or {})
    out = AvatarOutput(measurements=job.measurements or {}, timings=job.timings or {}, body_model=job.body_model,
                       fit=job.fit)
    if (job.v2_request or {}).get("return_files") == "links":
        out.files = {name: storage.url(key, base_url) for name, key in files.items()}
    else:
        blobs = await asyncio.gather(*(storage.get_bytes(key) for key in files.values()))
        out.files_base64 = {name: base64.b64encode(b).decode() for name, b in zip(files, blobs)}
    return out


async def cancel(svc: Services, who: Principal, job_id: str) -> Job:
    """RunPod's cancel: a final job is left as it is (no 409 as on /api)."""
    job = await avatars.get_job(svc, who, job_id)
    if job.status in jobs.FINAL:
        return job
    return await avatars.cancel_job(svc, who, job_id)


async def health(svc: Services, who: Principal, endpoint_id: str) -> V2HealthOut:
    async with svc.sessions() as s:
        rows = (await s.execute(
            select(Job.status, func.count())
            .where(Job.tenant == who.tenant, Job.v2_endpoint == endpoint_id).group_by(Job.status))).all()
        retried = (await s.execute(select(func.count()).where(
            Job.tenant == who.tenant, Job.v2_endpoint == endpoint_id, Job.retries > 0))).scalar_one()
    counts = {status: n for status, n in rows}
    workers = await queue.live_workers(svc.redis, svc.settings.queue_name)
    running = sum(1 for w in workers if w.get("current_job"))
    return V2HealthOut(
        jobs=V2HealthJobs(completed=counts.get(jobs.COMPLETED, 0), failed=counts.get(jobs.FAILED, 0),
                          inProgress=counts.get(jobs.PROCESSING, 0), inQueue=counts.get(jobs.QUEUED, 0),
                          retried=retried),
        workers=V2HealthWorkers(idle=len(workers) - running, running=running))


async def purge_queue(svc: Services, who: Principal, endpoint_id: str) -> int:
    """Cancel every job of this endpoint and tenant that no worker has started."""
    async with svc.sessions() as s:
        ids = (await s.execute(select(Job.id).where(Job.tenant == who.tenant, Job.v2_endpoint == endpoint_id,
                                                    Job.status == jobs.QUEUED))).scalars().all()
    removed = 0
    for job_id in ids:
        await queue.request_cancel(svc.redis, job_id)
        async with svc.sessions() as s:
            removed += await jobs.move(s, job_id, jobs.CANCELLED, message="removed by purge-queue")
    return removed


async def retry(svc: Services, who: Principal, job_id: str) -> Job:
    """Queue a failed or timed-out job again under the same id (409 for any other state)."""
    from arq.constants import result_key_prefix

    job = await avatars.get_job(svc, who, job_id)
    async with svc.sessions() as s:
        again = await jobs.retry(s, job.id, runpod_id=None,  # BACKEND=runpod submits it anew
                                 webhook_state=webhooks.PENDING if job.webhook_state else None)
    if not again:
        raise ApiError(409, "not_retryable", f"only a FAILED or TIMED_OUT job can be retried; this one is "
                                             f"{runpod_status(job.status, job.error_code)}")
    await svc.redis.delete(result_key_prefix + job.id)  # arq keeps the first run's result under this id
    await queue.enqueue(svc.redis, svc.settings.queue_name, job.id)
    return await avatars.get_job(svc, who, job.id)

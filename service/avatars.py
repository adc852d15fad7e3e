"""The avatar use cases behind the routes: accept a photo, create and queue a job, describe a
job or a passport with fresh links, cancel, correct measurements."""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

from fastapi import Request
from sqlalchemy import select

from inference.errors import InputError
from inference.types import Subject
from service import credits, events, jobs, queue
from service.auth import Principal
from service.db import Avatar, Job, new_id
from service.deps import Services
from service.errors import ApiError, not_found
from service.photos import check_host_public, check_url_shape, sniff_image
from service.schemas import (CreateAvatarIn, CreateAvatarOut, FitSummary, JobError, JobInputs, JobStatusOut,
                             PassportOut)

PHOTO_PATH = re.compile(r"^/api/photos/([0-9a-f]{32})$")
PHOTO_TYPES = ("image/jpeg", "image/png", "image/webp")
PHOTO_TYPE_MESSAGE = "upload a JPEG, PNG or WebP photo"
PHOTO_SIZE_MESSAGE = "the photo is over the {limit} byte limit"
MEASUREMENT_RANGE_CM = (1.0, 400.0)
MEASUREMENT_MESSAGE = "{name}: {value} cm is outside {lo:.0f}-{hi:.0f} cm"
PASSPORT_LIST_LIMIT = 50


def photo_key(tenant: str, photo_id: str) -> str:
    return f"photos/{tenant}/{photo_id}"


async def store_photo(svc: Services, who: Principal, data: bytes) -> tuple[str, str]:
    """Check an upload is a JPEG/PNG/WebP within the pipeline's limits by its header (the worker
    decodes it; decoding here cost the API hundreds of MB per large photo); store it."""
    from inference.stages.load import open_checked

    content_type = sniff_image(data)
    if content_type is None:
        raise ApiError(415, "unsupported_image_type", PHOTO_TYPE_MESSAGE)
    open_checked(data)  # InputError → 422
    photo_id = new_id()
    await svc.storage.put_bytes(photo_key(who.tenant, photo_id), data, content_type)
    return photo_id, content_type


async def resolve_photo(svc: Services, who: Principal, request: Request, url: str) -> tuple[str | None, str | None]:
    """(storage key, None) for our own photo URLs, (None, url) for a public http(s) URL."""
    try:
        parsed = urlparse(url)
    except ValueError as exc:
        raise ApiError(422, "invalid_photo_url", "photo_url is not a well-formed URL") from exc
    m = PHOTO_PATH.match(parsed.path or "")
    ours = {urlparse(svc.base_url(request)).netloc, request.url.netloc}
    if m and (not parsed.netloc or parsed.netloc in ours):
        key = photo_key(who.tenant, m.group(1))
        if not await svc.storage.exists(key):
            raise ApiError(404, "photo_not_found", "no such photo for this API key's tenant; upload it with POST /api/photos")
        return key, None
    try:
        check_url_shape(url)
        await check_host_public(url, svc.settings.allow_private_photo_urls)
    except InputError as exc:
        raise ApiError(422, exc.code, str(exc)) from exc
    return None, url


async def create_job(svc: Services, who: Principal, request: Request, body: CreateAvatarIn,
                     **columns: Any) -> CreateAvatarOut:
    """``columns``: more values for the job row (the /v2 routes keep their request's options)."""
    try:  # the fields' own rules cannot say it: a scale weight needs a weight (invalid_weight_source)
        Subject(height_cm=body.height, gender=body.gender, weight_kg=body.weight, clothing=body.clothing,
                weight_source=body.weight_source).validate()
    except InputError as exc:
        raise ApiError(422, exc.code, str(exc)) from exc
    key, external = await resolve_photo(svc, who, request, body.photo_url)
    async with svc.sessions() as s:
        job = Job(id=new_id(), tenant=who.tenant, user_id=body.user_id, status=jobs.QUEUED, progress=0,
                  stage="queued", message="waiting for a worker", photo_key=key, photo_source_url=external,
                  height_cm=body.height, weight_kg=body.weight, gender=body.gender, clothing=body.clothing,
                  weight_source=body.weight_source, files={}, measurements={}, timings={}, attempts=0, **columns)
        s.add(job)
        await jobs.register_new(s, job)
        try:
            await credits.reserve(s, job, svc.settings.credits_per_job)
        except credits.NoCredit as exc:
            await s.rollback()  # no job, no passport change
            raise ApiError(402, "no_credit", f"this tenant has no credit left for a job ({exc})") from exc
        await s.commit()
    try:
        await queue.enqueue(svc.redis, svc.settings.queue_name, job.id, expires_s=svc.settings.job_deadline_seconds)
        async with svc.sessions() as s:
            eta = await estimate_seconds(svc, s)
        waiting = await waiting_message(svc, job)
    except Exception as exc:  # the row exists: close it so no job is left queued forever
        async with svc.sessions() as s:
            await jobs.move(s, job.id, jobs.FAILED, error_code="queue_unavailable",
                            error_message="could not queue the job: the job queue was not reachable",
                            message="failed")
        raise ApiError(503, "queue_unavailable", "the job queue (Redis) is not reachable; try again later") from exc
    note = f" ({waiting})" if waiting == NO_WORKER else ""
    return CreateAvatarOut(job_id=job.id, user_id=job.user_id, status="queued",
                           message=f"queued: poll GET /api/avatar/status/{job.id}{note}",
                           estimated_time_seconds=eta)


async def estimate_seconds(svc: Services, s) -> float:
    """Average wall time of recent jobs × (jobs waiting ahead + 1) / live workers."""
    rows = (await s.execute(select(Job.started_at, Job.completed_at).where(Job.status == jobs.COMPLETED)
                            .order_by(Job.completed_at.desc()).limit(20))).all()
    spans = [(c - a).total_seconds() for a, c in rows if a and c]
    per_job = sum(spans) / len(spans) if spans else svc.settings.estimated_time_seconds
    waiting = await queue.queued_count(svc.redis, svc.settings.queue_name)
    workers = max(1, len(await queue.live_workers(svc.redis, svc.settings.queue_name)))
    return round(per_job * (1 + waiting / workers), 1)


async def get_job(svc: Services, who: Principal, job_id: str) -> Job:
    async with svc.reads() as s:
        job = await s.get(Job, job_id) if re.fullmatch(r"[0-9a-f]{32}", job_id) else None
    if job is None or job.tenant != who.tenant:  # another tenant's job does not exist for you
        raise not_found("job")
    return job


NO_WORKER = "waiting for a worker: none is running now (the operator is told by /ready)"


async def waiting_message(svc: Services, job: Job) -> str:
    """A queued job says so plainly when no worker is alive to take it, never a silent spinner."""
    if job.status != jobs.QUEUED:
        return job.message
    try:
        alive = await queue.any_worker_alive(svc.redis, svc.settings.queue_name)
    except Exception:  # Redis down: the job's own message is all we know
        return job.message
    return job.message if alive else NO_WORKER


def job_status(svc: Services, request: Request, job: Job, message: str | None = None) -> JobStatusOut:
    files = {name: svc.link(request, key) for name, key in (job.files or {}).items()}
    error = JobError(code=job.error_code, message=job.error_message or "") if job.error_code else None
    return JobStatusOut(
        job_id=job.id, user_id=job.user_id, status=job.status, progress=job.progress, stage=job.stage,
        inputs=JobInputs(height=job.height_cm, weight=job.weight_kg, gender=job.gender,
                         clothing=job.clothing, weight_source=job.weight_source),
        message=message or job.message, avatar_url=files.get("avatar_textured.glb"), files=files,
        measurements=job.measurements or {}, error=error, timings=job.timings or {},
        fit=FitSummary.model_validate(job.fit) if job.fit else None,
        created_at=job.created_at, started_at=job.started_at, completed_at=job.completed_at)


async def cancel_job(svc: Services, who: Principal, job_id: str) -> Job:
    job = await get_job(svc, who, job_id)
    if job.status in jobs.FINAL:
        raise ApiError(409, "job_finished", f"job is already {job.status}")
    try:
        await queue.request_cancel(svc.redis, job.id)  # a worker running it stops at the next stage
    except Exception as exc:  # without the flag a running worker would finish it: change nothing
        raise ApiError(503, "queue_unavailable", "the job queue (Redis) is not reachable; the job was not "
                       "cancelled, try again later") from exc
    async with svc.sessions() as s:
        await jobs.move(s, job.id, jobs.CANCELLED, message="cancelled by the client", error_code=None)
        job = await s.get(Job, job.id)
    await events.publish(svc.redis, job.id)
    return job


async def list_passports(svc: Services, who: Principal, limit: int = PASSPORT_LIST_LIMIT) -> list[Avatar]:
    """The tenant's people, the most recently changed first (the page's "earlier avatars")."""
    async with svc.sessions() as s:
        rows = await s.execute(select(Avatar).where(Avatar.tenant == who.tenant)
                               .order_by(Avatar.updated_at.desc(), Avatar.user_id).limit(limit))
        return list(rows.scalars())


async def get_passport(svc: Services, who: Principal, user_id: str) -> Avatar:
    async with svc.reads() as s:
        passport = await s.get(Avatar, (who.tenant, user_id))
    if passport is None:
        raise not_found("avatar for this user")
    return passport


def passport_out(svc: Services, request: Request, p: Avatar) -> PassportOut:
    fitted = dict(p.measurements or {})
    manual = dict(p.manual_measurements or {})
    return PassportOut(
        user_id=p.user_id, status=p.status, latest_job_id=p.latest_job_id, avatar_job_id=p.avatar_job_id,
        avatar_url=svc.link(request, p.avatar_key), measurements=fitted, manual_measurements=manual,
        effective_measurements={**fitted, **manual},
        pipeline_files={n: svc.link(request, k) for n, k in (p.pipeline_files or {}).items()},
        processing_started_at=p.processing_started_at, processing_completed_at=p.processing_completed_at,
        updated_at=p.updated_at)


async def correct_measurements(svc: Services, who: Principal, user_id: str, values: dict[str, float | None]) -> Avatar:
    lo, hi = MEASUREMENT_RANGE_CM
    for name, v in values.items():
        if v is not None and not (lo <= v <= hi):
            raise ApiError(422, "invalid_measurement", MEASUREMENT_MESSAGE.format(name=name, value=v, lo=lo, hi=hi))
    async with svc.sessions() as s:
        passport = await s.get(Avatar, (who.tenant, user_id))
        if passport is None:
            raise not_found("avatar for this user")
        manual = dict(passport.manual_measurements or {})
        for name, v in values.items():
            if v is None:
                manual.pop(name, None)
            else:
                manual[name] = round(float(v), 1)
        passport.manual_measurements = manual
        passport.updated_at = jobs.utcnow()
        await s.commit()
        return passport


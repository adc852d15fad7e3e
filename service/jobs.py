"""The job state machine, in one place: queued → processing → completed | failed | cancelled.

Every change of state is a compare-and-set on the row (``UPDATE ... WHERE status IN (...)``),
so the API's cancel and the worker's finish can race without either overwriting the other.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service import credits
from service.db import Avatar, Job, insert_once, utcnow

QUEUED, PROCESSING, COMPLETED, FAILED, CANCELLED = "queued", "processing", "completed", "failed", "cancelled"
STATUSES = (QUEUED, PROCESSING, COMPLETED, FAILED, CANCELLED)
FINAL = frozenset({COMPLETED, FAILED, CANCELLED})

# state → the states it may move to; ``processing → queued`` hands a try back (its worker died or
# was stopped), so one worker at a time owns a processing job
TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({PROCESSING, FAILED, CANCELLED}),
    PROCESSING: frozenset({QUEUED, COMPLETED, FAILED, CANCELLED}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


def sources_of(target: str) -> tuple[str, ...]:
    """The states from which ``target`` can be reached."""
    return tuple(s for s, nxt in TRANSITIONS.items() if target in nxt)


async def move(session: AsyncSession, job_id: str, target: str, *, owner: tuple[str, int] | None = None,
               when: tuple = (), **values: Any) -> bool:
    """Move the job to ``target`` if its current state allows it; False if it does not
    (already final, or someone else moved it first). ``owner`` = (worker, try): only that try of
    the job may make the move, so a try that lost its job (worker presumed dead, job re-queued)
    can never finish or fail the job another try now runs. ``when``: more conditions on the row
    (SQLAlchemy expressions) for the move to happen. Commits."""
    if target not in TRANSITIONS:
        raise ValueError(f"unknown job status {target!r}")
    now = utcnow()
    if target in FINAL:
        values.setdefault("completed_at", now)
    if target == COMPLETED:
        values.setdefault("progress", 100)
    where = [Job.id == job_id, Job.status.in_(sources_of(target))]
    if owner is not None:
        where += [Job.worker == owner[0], Job.attempts == owner[1]]
    where += list(when)
    res = await session.execute(
        update(Job).where(*where)
        .values(status=target, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:
        await session.rollback()
        return False
    job = await session.get(Job, job_id, populate_existing=True)
    await _update_passport(session, job)
    if target in FINAL:
        await credits.settle(session, job)  # in this transaction: the final move and the ledger agree
    await session.commit()
    return True


async def report_progress(session: AsyncSession, job_id: str, progress: int, stage: str, message: str) -> bool:
    """Progress of a processing job (ignored once the job is final)."""
    res = await session.execute(
        update(Job).where(Job.id == job_id, Job.status == PROCESSING)
        .values(progress=int(progress), stage=stage, message=message, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return res.rowcount == 1


async def _update_passport(session: AsyncSession, job: Job) -> None:
    """Keep the user's fit passport in step with their jobs: its status follows the newest job;
    its avatar, measurements and files come from the newest job that completed."""
    await _insert_passport_once(session, job)
    passport = await session.get(Avatar, (job.tenant, job.user_id), populate_existing=True)
    newest = await _newest_job_created(session, job.tenant, job.user_id)
    if newest is None or job.id == newest:
        passport.latest_job_id = job.id
        passport.status = job.status
        passport.processing_started_at = job.started_at
        passport.processing_completed_at = job.completed_at if job.status == COMPLETED else None
    if job.status == COMPLETED and await _is_newer(session, job, passport.avatar_job_id):
        passport.avatar_job_id = job.id
        passport.avatar_key = job.files.get("avatar_textured.glb")
        passport.measurements = dict(job.measurements)
        passport.pipeline_files = dict(job.files)
    passport.updated_at = utcnow()


async def _insert_passport_once(session: AsyncSession, job: Job) -> None:
    """The user's passport row, created by whichever of several concurrent first jobs comes first
    (a check-then-insert lost that race with a 500)."""
    await session.execute(insert_once(
        session, Avatar, ["tenant", "user_id"], tenant=job.tenant, user_id=job.user_id, status=job.status,
        measurements={}, manual_measurements={}, pipeline_files={}, updated_at=utcnow()))


async def register_new(session: AsyncSession, job: Job) -> None:
    """A job was just created: it becomes the passport's latest job (status queued)."""
    await session.flush()
    await _update_passport(session, job)


async def _newest_job_created(session: AsyncSession, tenant: str, user_id: str) -> str | None:
    row = await session.execute(
        select(Job.id).where(Job.tenant == tenant, Job.user_id == user_id)
        .order_by(Job.created_at.desc(), Job.id.desc()).limit(1))
    return row.scalar_one_or_none()


async def _is_newer(session: AsyncSession, job: Job, other_id: str | None) -> bool:
    if other_id is None or other_id == job.id:
        return True
    other = await session.get(Job, other_id)
    return other is None or _ts(job.created_at) >= _ts(other.created_at)


def _ts(value: datetime) -> float:
    from datetime import timezone

    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()


async def retry(session: AsyncSession, job_id: str, **values: Any) -> bool:
    """RunPod's /retry: the one way out of a final state, ``failed → queued``, for a job that failed
    or timed out. Its error and progress are cleared; ``retries`` counts these. Commits."""
    res = await session.execute(
        update(Job).where(Job.id == job_id, Job.status == FAILED)
        .values(status=QUEUED, progress=0, stage="queued", message="waiting for a worker (retried)",
                error_code=None, error_message=None, started_at=None, completed_at=None, updated_at=utcnow(),
                retries=Job.retries + 1, **values)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:
        await session.rollback()
        return False
    await _update_passport(session, await session.get(Job, job_id, populate_existing=True))
    await session.commit()
    return True

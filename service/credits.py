"""Credits, per tenant and optional: a tenant that was never granted any is not metered.

Every movement is a row of the ledger, keyed by job id; the balance is the ledger's sum, never
stored apart. Creating a job reserves its cost (in the transaction that creates the job); the
job's one move to a final state commits the reservation (completed) or releases it (failed,
cancelled, timed out, worker lost), in that move's transaction. One row per (job, kind): a job
is never charged or refunded twice, whatever crashes or retries happen in between.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import CreditMove, Job, insert_once, utcnow

GRANT, RESERVE, COMMIT, RELEASE = "grant", "reserve", "commit", "release"


class NoCredit(Exception):
    """The tenant's balance does not cover a job."""


@dataclass(frozen=True)
class Balance:
    metered: bool
    balance: int  # what is left to spend: grants less open and committed reservations
    reserved: int  # held by jobs not final yet


async def _lock_tenant(session: AsyncSession, tenant: str) -> None:
    """Serialise reservations of one tenant (PostgreSQL; SQLite writers are serial already)."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:t))"), {"t": f"credits:{tenant}"})


async def balance(session: AsyncSession, tenant: str) -> Balance:
    rows = (await session.execute(select(CreditMove.kind, func.sum(CreditMove.amount), func.count())
                                  .where(CreditMove.tenant == tenant).group_by(CreditMove.kind))).all()
    if not rows:
        return Balance(False, 0, 0)
    total = sum(int(amount or 0) for _, amount, _ in rows)
    open_jobs = (await session.execute(
        select(func.coalesce(func.sum(-CreditMove.amount), 0)).where(
            CreditMove.tenant == tenant, CreditMove.kind == RESERVE,
            ~CreditMove.job_id.in_(select(CreditMove.job_id).where(
                CreditMove.tenant == tenant, CreditMove.kind.in_((COMMIT, RELEASE))))))).scalar_one()
    return Balance(True, total, int(open_jobs))


async def reserve(session: AsyncSession, job: Job, cost: int) -> bool:
    """Hold ``cost`` for a new job (flushed, not committed: the caller's transaction creates the
    job too). False when the tenant is not metered; NoCredit when its balance is short."""
    await _lock_tenant(session, job.tenant)
    now = await balance(session, job.tenant)
    if not now.metered:
        return False
    if now.balance < cost:
        raise NoCredit(f"{now.balance} credit(s) left, a job costs {cost}")
    session.add(CreditMove(tenant=job.tenant, job_id=job.id, kind=RESERVE, amount=-cost,
                           note="job created", created_at=utcnow()))
    await session.flush()
    return True


async def settle(session: AsyncSession, job: Job) -> None:
    """The job just became final: commit or release its reservation, if it has one (same transaction)."""
    held = (await session.execute(select(CreditMove.amount).where(
        CreditMove.job_id == job.id, CreditMove.kind == RESERVE))).scalar_one_or_none()
    if held is None:
        return
    kind, amount = (COMMIT, 0) if job.status == "completed" else (RELEASE, -held)
    await session.execute(insert_once(session, CreditMove, ["job_id", "kind"], tenant=job.tenant, job_id=job.id,
                                      kind=kind, amount=amount, note=f"job {job.status}", created_at=utcnow()))


async def grant(session: AsyncSession, tenant: str, amount: int, note: str = "") -> CreditMove:
    row = CreditMove(tenant=tenant, job_id=None, kind=GRANT, amount=amount, note=note or "granted",
                     created_at=utcnow())
    session.add(row)
    await session.commit()
    return row


async def movements(session: AsyncSession, tenant: str, limit: int = 100) -> list[CreditMove]:
    return list((await session.execute(select(CreditMove).where(CreditMove.tenant == tenant)
                                       .order_by(CreditMove.id.desc()).limit(limit))).scalars())

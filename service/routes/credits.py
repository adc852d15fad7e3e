"""The caller's credits: balance and movements, straight from the ledger."""
from __future__ import annotations

from fastapi import APIRouter

from service import credits
from service.deps import PrincipalDep, SvcDep
from service.errors import documented
from service.schemas import CreditMoveOut, CreditsOut

router = APIRouter(prefix="/api", responses=documented(401, 413, 422, 429, 503))


@router.get("/credits", response_model=CreditsOut)
async def get_credits(svc: SvcDep, who: PrincipalDep) -> CreditsOut:
    async with svc.sessions() as s:
        now = await credits.balance(s, who.tenant)
        moves = await credits.movements(s, who.tenant)
    return CreditsOut(metered=now.metered, balance=now.balance, reserved=now.reserved,
                      movements=[CreditMoveOut(kind=m.kind, amount=m.amount, job_id=m.job_id, note=m.note,
                                               created_at=m.created_at) for m in moves])

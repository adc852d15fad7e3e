"""Credits, straight from the ledger: a tenant's own (any key), and every tenant's for the
operator (an operator key: grants and balances)."""
from __future__ import annotations

from fastapi import APIRouter, Path

from service import auth, credits
from service.deps import OperatorDep, PrincipalDep, SvcDep
from service.errors import ApiError, documented
from service.schemas import CreditMoveOut, CreditsOut, GrantIn, TenantCreditsOut

router = APIRouter(responses=documented(401, 413, 422, 429, 503))
TENANT = r"^[a-z0-9][a-z0-9_-]{0,63}$"


@router.get("/api/credits", response_model=CreditsOut)
async def get_credits(svc: SvcDep, who: PrincipalDep) -> CreditsOut:
    return await _credits_of(svc, who.tenant)


@router.post("/admin/credits", response_model=TenantCreditsOut, status_code=201, responses=documented(403))
async def grant_credits(body: GrantIn, svc: SvcDep, who: OperatorDep) -> TenantCreditsOut:
    """The operator grants credits to a tenant (``avatar credits grant`` on the server does the same)."""
    try:
        tenant = auth.check_tenant(body.tenant)
    except ValueError as exc:
        raise ApiError(422, "invalid_tenant", str(exc)) from exc
    async with svc.sessions() as s:
        await credits.grant(s, tenant, body.amount, body.note or f"granted by operator key {who.key_id}")
    return await _credits_of(svc, tenant)


@router.get("/admin/credits/{tenant}", response_model=TenantCreditsOut, responses=documented(403))
async def tenant_credits(svc: SvcDep, who: OperatorDep, tenant: str = Path(pattern=TENANT)) -> TenantCreditsOut:
    return await _credits_of(svc, tenant)


async def _credits_of(svc, tenant: str) -> TenantCreditsOut:
    async with svc.sessions() as s:
        now = await credits.balance(s, tenant)
        moves = await credits.movements(s, tenant)
    return TenantCreditsOut(tenant=tenant, metered=now.metered, balance=now.balance, reserved=now.reserved,
                            movements=[CreditMoveOut(kind=m.kind, amount=m.amount, job_id=m.job_id, note=m.note,
                                                     created_at=m.created_at) for m in moves])

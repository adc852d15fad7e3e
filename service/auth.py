"""API keys: random tokens shown once, stored as SHA-256 hashes, each scoped to one tenant.

An admin key manages the keys of its own tenant only. The operator, who manages every tenant,
is whoever runs ``avatar keys`` next to the database: no API key reaches across tenants."""
from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import ApiKey, utcnow

KEY_PREFIX = "avk_"
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's tenant, and whether it may manage keys."""

    key_id: str
    tenant: str
    is_admin: bool


class RecentKeys:
    """Keys checked in the last ``ttl`` seconds, so a busy client's requests cost no database round
    trip each. A revoked key stops working at once in the process that revoked it, and within
    ``ttl`` in every other (API processes, the CLI)."""

    def __init__(self, ttl: float = 5.0):
        self.ttl = ttl
        self._seen: dict[str, tuple[float, Principal]] = {}

    def get(self, digest: str) -> Principal | None:
        hit = self._seen.get(digest)
        if hit is None or hit[0] < time.monotonic():
            self._seen.pop(digest, None)
            return None
        return hit[1]

    def put(self, digest: str, who: Principal) -> None:
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[digest] = (time.monotonic() + self.ttl, who)

    def forget(self, key_id: str) -> None:
        for digest in [d for d, (_, who) in self._seen.items() if who.key_id == key_id]:
            del self._seen[digest]


recent = RecentKeys()


def hash_key(key: str) -> str:
    # keys carry 256 random bits, so a plain SHA-256 is enough (no password stretching needed)
    return hashlib.sha256(key.encode()).hexdigest()


def check_tenant(tenant: str) -> str:
    if not TENANT_RE.match(tenant):
        raise ValueError("tenant must be 1-64 characters of a-z, 0-9, _ and -, starting with a letter or digit")
    return tenant


async def create_key(session: AsyncSession, tenant: str, name: str = "", is_admin: bool = False) -> tuple[ApiKey, str]:
    """A new key; the plain token is returned here and never stored."""
    token = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(tenant=check_tenant(tenant), name=name, key_hash=hash_key(token),
                 prefix=token[:12], is_admin=is_admin)
    session.add(row)
    await session.commit()
    return row, token


async def authenticate(session: AsyncSession, token: str) -> Principal | None:
    if not token.startswith(KEY_PREFIX) or len(token) > 200:
        return None
    digest = hash_key(token)
    if (who := recent.get(digest)) is not None:
        return who
    row = (await session.execute(select(ApiKey).where(ApiKey.key_hash == digest))).scalar_one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    last = row.last_used_at
    if last is None or (now - (last if last.tzinfo else last.replace(tzinfo=now.tzinfo))).total_seconds() > 60:
        row.last_used_at = now  # at most one write a minute per key
        await session.commit()
    who = Principal(key_id=row.id, tenant=row.tenant, is_admin=row.is_admin)
    recent.put(digest, who)
    return who


async def revoke_key(session: AsyncSession, key_id: str, tenant: str | None = None) -> bool:
    """Revoke a key; with ``tenant``, only a key of that tenant (an admin key's reach)."""
    row = await session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None or (tenant is not None and row.tenant != tenant):
        return False
    row.revoked_at = utcnow()
    await session.commit()
    recent.forget(key_id)
    return True


async def list_keys(session: AsyncSession, tenant: str | None = None) -> list[ApiKey]:
    """Every key (the operator, on the CLI), or one tenant's keys (that tenant's admin key)."""
    query = select(ApiKey).order_by(ApiKey.created_at)
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    return list((await session.execute(query)).scalars())

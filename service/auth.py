"""API keys: random tokens shown once, stored as SHA-256 hashes, each scoped to one tenant.

An admin key manages the keys of its own tenant only. The operator manages every tenant: on the
CLI next to the database (``avatar keys``, ``avatar credits``), or through the API with an
operator key, which only the CLI creates (``avatar keys create --operator``)."""
from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import ApiKey, utcnow

log = logging.getLogger("avatar.auth")
KEY_PREFIX = "avk_"
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# replaced on every revocation; a remembered key counts only while this has not changed
KEYS_VERSION_KEY = "avatar:keys:version"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's tenant, whether it may manage its tenant's keys (admin) and
    whether it manages every tenant's credits (operator)."""

    key_id: str
    tenant: str
    is_admin: bool
    is_operator: bool = False


class RecentKeys:
    """Keys checked in the last ``ttl`` seconds, so a busy client's requests cost no database round
    trip each. Each is remembered with the revocation version it was checked under (a random token
    in Redis that every revocation replaces) and counts only while that version is current: a key
    revoked in any process (another API process, the CLI) stops working at once in every process.
    A Redis that lost its data has no version; the first process to notice sets a new one, so
    nothing remembered before survives that either."""

    def __init__(self, ttl: float = 30.0):
        self.ttl = ttl
        self._seen: dict[str, tuple[float, str, Principal]] = {}

    def get(self, digest: str, version: str | None) -> Principal | None:
        hit = self._seen.get(digest)
        if hit is None or version is None or hit[1] != version or hit[0] < time.monotonic():
            self._seen.pop(digest, None)
            return None
        return hit[2]

    def put(self, digest: str, who: Principal, version: str | None) -> None:
        if version is None:  # Redis down: no way to hear of a revocation, so nothing is remembered
            return
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[digest] = (time.monotonic() + self.ttl, version, who)

    def forget(self, key_id: str) -> None:
        for digest in [d for d, (_, _, who) in self._seen.items() if who.key_id == key_id]:
            del self._seen[digest]


recent = RecentKeys()


async def keys_version(redis) -> str | None:
    """The current revocation version; None when Redis does not answer (then every key is
    checked in the database, and nothing is remembered)."""
    try:
        raw = await redis.get(KEYS_VERSION_KEY)
        if raw is None:  # never set, or Redis lost its data: start a new version
            await redis.set(KEYS_VERSION_KEY, secrets.token_hex(8), nx=True)
            raw = await redis.get(KEYS_VERSION_KEY)
    except Exception as exc:
        log.debug("revocation version unknown (%s)", exc.__class__.__name__)
        return None
    return raw.decode() if isinstance(raw, bytes) else raw


async def announce_revocation(redis) -> None:
    """Tell every process that a key was revoked (after the database says so)."""
    await redis.set(KEYS_VERSION_KEY, secrets.token_hex(8))


def hash_key(key: str) -> str:
    # keys carry 256 random bits, so a plain SHA-256 is enough (no password stretching needed)
    return hashlib.sha256(key.encode()).hexdigest()


def check_tenant(tenant: str) -> str:
    if not TENANT_RE.match(tenant):
        raise ValueError("tenant must be 1-64 characters of a-z, 0-9, _ and -, starting with a letter or digit")
    return tenant


async def create_key(session: AsyncSession, tenant: str, name: str = "", is_admin: bool = False,
                     is_operator: bool = False) -> tuple[ApiKey, str]:
    """A new key; the plain token is returned here and never stored."""
    token = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(tenant=check_tenant(tenant), name=name, key_hash=hash_key(token),
                 prefix=token[:12], is_admin=is_admin, is_operator=is_operator)
    session.add(row)
    await session.commit()
    return row, token


async def authenticate(session: AsyncSession, token: str, version: str | None = None) -> Principal | None:
    """The key's principal, or None. ``version``: the revocation version read before this check
    (``keys_version``); without one the key is checked in the database and not remembered."""
    if not token.startswith(KEY_PREFIX) or len(token) > 200:
        return None
    digest = hash_key(token)
    if (who := recent.get(digest, version)) is not None:
        return who
    row = (await session.execute(select(ApiKey).where(ApiKey.key_hash == digest))).scalar_one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    last = row.last_used_at
    if last is None or (now - (last if last.tzinfo else last.replace(tzinfo=now.tzinfo))).total_seconds() > 60:
        row.last_used_at = now  # at most one write a minute per key
        await session.commit()
    who = Principal(key_id=row.id, tenant=row.tenant, is_admin=row.is_admin, is_operator=row.is_operator)
    recent.put(digest, who, version)
    return who


async def revoke_key(session: AsyncSession, key_id: str, tenant: str | None = None) -> bool:
    """Revoke a key; with ``tenant``, only a key of that tenant (an admin key's reach). The caller
    then calls ``announce_revocation`` so that other processes stop accepting it too."""
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

"""Requests per API key per minute, counted in Redis so every API process shares the count."""
from __future__ import annotations

import logging
import time

from arq.connections import ArqRedis

log = logging.getLogger("avatar.api")
RATE_KEY = "avatar:rate:{key_id}:{window}"


async def over_limit(redis: ArqRedis, key_id: str, per_minute: int) -> int | None:
    """Count one request; the seconds to wait (for ``Retry-After``) when the key is over its limit,
    else None. A Redis outage lets requests through: the queue's own errors say what is wrong."""
    if per_minute <= 0:
        return None
    now = time.time()
    window = int(now // 60)
    key = RATE_KEY.format(key_id=key_id, window=window)
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 61)
            count, _ = await pipe.execute()
    except Exception as exc:
        log.warning("rate limit not counted (%s)", exc.__class__.__name__)
        return None
    if count <= per_minute:
        return None
    return max(1, int((window + 1) * 60 - now + 0.999))

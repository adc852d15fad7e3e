"""The job queue on Redis (arq), the cancel flags and the workers' heartbeats.

The API enqueues job ids; any worker sharing ``REDIS_URL`` and ``QUEUE_NAME`` takes them, one
at a time per GPU. The database, not Redis, holds each job's state.
"""
from __future__ import annotations

import json

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from service.errors import DependencyError

TASK_NAME = "process_avatar"
CANCEL_KEY = "avatar:cancel:{job_id}"
WORKER_KEY = "avatar:worker:{name}"


class QueueUnavailable(DependencyError):
    """Redis cannot be reached; the message says how to fix it."""


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 3
    settings.conn_retries = 1
    return settings


async def connect(url: str) -> ArqRedis:
    try:
        pool = await create_pool(redis_settings(url))
        await pool.ping()
        return pool
    except Exception as exc:  # arq/redis raise several kinds on a refused or unknown host
        raise QueueUnavailable(f"cannot reach Redis at {safe_url(url)} ({exc.__class__.__name__}: {exc}); "
                               "start redis-server or fix REDIS_URL") from exc


async def enqueue(pool: ArqRedis, queue_name: str, job_id: str) -> None:
    job = await pool.enqueue_job(TASK_NAME, job_id, _job_id=job_id, _queue_name=queue_name)
    if job is None:
        raise QueueUnavailable(f"job {job_id} is already queued")


async def request_cancel(pool: ArqRedis, job_id: str, ttl_seconds: int = 24 * 3600) -> None:
    await pool.set(CANCEL_KEY.format(job_id=job_id), b"1", ex=ttl_seconds)


async def cancel_requested(pool: ArqRedis, job_id: str) -> bool:
    return bool(await pool.exists(CANCEL_KEY.format(job_id=job_id)))


async def beat(pool: ArqRedis, name: str, info: dict, ttl_seconds: float) -> None:
    await pool.set(WORKER_KEY.format(name=name), json.dumps(info), px=int(ttl_seconds * 1000))


async def stop_beating(pool: ArqRedis, name: str) -> None:
    await pool.delete(WORKER_KEY.format(name=name))


async def live_workers(pool: ArqRedis) -> list[dict]:
    out = []
    async for key in pool.scan_iter(match=WORKER_KEY.format(name="*")):
        raw = await pool.get(key)
        if raw:
            out.append(json.loads(raw))
    return out


async def queued_count(pool: ArqRedis, queue_name: str) -> int:
    return int(await pool.zcard(queue_name))


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlparse

    p = urlparse(url)
    return p._replace(netloc=f"{p.hostname}:{p.port}" if p.port else (p.hostname or "")).geturl()

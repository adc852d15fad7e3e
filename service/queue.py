"""The job queue on Redis (arq), the cancel flags and the workers' heartbeats.

The API enqueues job ids; any worker sharing ``REDIS_URL`` and ``QUEUE_NAME`` takes them, one
at a time per GPU (or a batch of them, WORKER_BATCH). The database, not Redis, holds each job's state.
"""
from __future__ import annotations

import json
import secrets
import time

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix
from redis.exceptions import ResponseError

from service.errors import DependencyError
from service.waking import wake

TASK_NAME = "process_avatar"
CANCEL_KEY = "avatar:cancel:{job_id}"
WORKER_KEY = "avatar:worker:{name}"
LOCK_KEY = "avatar:lock:{name}"
EPOCH_KEY = "avatar:redis:epoch"


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


async def enqueue(pool: ArqRedis, queue_name: str, job_id: str, expires_s: float | None = None) -> str:
    """Put the job on the queue under a fresh arq id (``JOB_ID.TOKEN``): arq refuses an id it still
    holds (a dead worker's claim), and a job handed back must be queued again at once. Several
    deliveries of one job are harmless: only a try that moves it queued → processing runs it."""
    arq_id = f"{job_id}.{secrets.token_hex(4)}"
    job = await pool.enqueue_job(TASK_NAME, job_id, _job_id=arq_id, _queue_name=queue_name,
                                 _expires=expires_s)
    if job is None:
        raise QueueUnavailable(f"job {job_id} is already queued")
    await wake(pool, queue_name, job_id)  # an idle worker takes it now, not at its next poll
    return arq_id


def job_id_of(arq_id: str) -> str:
    return arq_id.split(".", 1)[0]


async def known_job_ids(pool: ArqRedis, queue_name: str) -> set[str]:
    """Our job ids that Redis still holds a runnable delivery of: in the queue with their data
    (arq drops an entry whose data expired), or claimed by a worker."""
    members = [m.decode() if isinstance(m, bytes) else m for m in await pool.zrange(queue_name, 0, -1)]
    async with pool.pipeline(transaction=False) as pipe:
        for arq_id in members:
            pipe.exists(job_key_prefix + arq_id, in_progress_key_prefix + arq_id)
        held = await pipe.execute() if members else []
    return {job_id_of(arq_id) for arq_id, n in zip(members, held) if n}


async def take_lock(pool: ArqRedis, name: str, owner: str, ttl_seconds: float) -> bool:
    """Hold (or keep holding) a named lock for ``ttl_seconds``; False while another owner holds it."""
    key, ms = LOCK_KEY.format(name=name), int(ttl_seconds * 1000)
    if await pool.set(key, owner, nx=True, px=ms):
        return True
    held = await pool.get(key)
    if held is not None and (held.decode() if isinstance(held, bytes) else held) == owner:
        await pool.pexpire(key, ms)
        return True
    return False


async def request_cancel(pool: ArqRedis, job_id: str, ttl_seconds: int = 24 * 3600) -> None:
    await pool.set(CANCEL_KEY.format(job_id=job_id), b"1", ex=ttl_seconds)


async def cancel_requested(pool: ArqRedis, job_id: str) -> bool:
    return bool(await pool.exists(CANCEL_KEY.format(job_id=job_id)))


async def beat(pool: ArqRedis, name: str, info: dict, ttl_seconds: float) -> None:
    await pool.set(WORKER_KEY.format(name=name), json.dumps(info), px=int(ttl_seconds * 1000))


def held_jobs(beat: dict) -> list[str]:
    """Every job a worker's heartbeat says it holds: a batching worker lists them all in
    ``current_jobs``; a beat without that list (an older worker, the RunPod backend's) names
    one in ``current_job``, or none."""
    held = beat.get("current_jobs")
    if held is None:
        held = [beat["current_job"]] if beat.get("current_job") else []
    return [str(j) for j in held]


async def stop_beating(pool: ArqRedis, name: str) -> None:
    await pool.delete(WORKER_KEY.format(name=name))


async def redis_age(pool: ArqRedis) -> float:
    """Seconds since this Redis began its data or last started, whichever is later. A heartbeat
    missing from a Redis younger than the heartbeat's life proves no worker dead: after a restart
    without its data every live worker's beat is gone until its next one, and after a restart that
    kept its data a beat whose life ran out while the server was down is gone too. The marker (the
    server's ``run_id``, new at every start, and when this code first saw it) goes with the data
    and is set afresh when the run_id it names is not the server's."""
    now = time.time()
    try:
        run_id = str((await pool.info("server")).get("run_id", ""))
    except ResponseError:  # a Redis that refuses INFO (some managed ones): the data's age alone
        run_id = ""
    await pool.set(EPOCH_KEY, json.dumps({"run_id": run_id, "since": now}), nx=True)
    raw = await pool.get(EPOCH_KEY)
    try:
        mark = json.loads(raw)
        if mark["run_id"] == run_id or not run_id:
            return now - float(mark["since"])
    except (TypeError, ValueError, KeyError):  # an older marker (a bare time): set afresh
        pass
    await pool.set(EPOCH_KEY, json.dumps({"run_id": run_id, "since": now}))
    return 0.0


async def live_workers(pool: ArqRedis, queue_name: str) -> list[dict]:
    """The workers beating for ``queue_name`` (several services may share one Redis)."""
    out = []
    # one SCAN step covers a queue of thousands: the default (10 keys a step) made a status call slow
    async for key in pool.scan_iter(match=WORKER_KEY.format(name="*"), count=5000):
        raw = await pool.get(key)
        if raw and (info := json.loads(raw)).get("queue") == queue_name:
            out.append(info)
    return out


_alive: tuple[float, bool] = (0.0, False)


async def any_worker_alive(pool: ArqRedis, queue_name: str, max_age: float = 1.0) -> bool:
    """Whether some worker beats, remembered for ``max_age`` s: status polls ask it many times a second."""
    global _alive
    if _alive[0] < time.monotonic():
        _alive = (time.monotonic() + max_age, bool(await live_workers(pool, queue_name)))
    return _alive[1]


async def queued_count(pool: ArqRedis, queue_name: str) -> int:
    return int(await pool.zcard(queue_name))


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlparse

    p = urlparse(url)
    return p._replace(netloc=f"{p.hostname}:{p.port}" if p.port else (p.hostname or "")).geturl()

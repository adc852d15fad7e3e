"""Job state changes pushed to clients (server-sent events) instead of polled.

Whoever changes a job (the worker's progress and moves, a cancel, the reaper) publishes a note on
the job's Redis channel after its commit. A progress note carries what it wrote (status, progress,
stage, message), so a stage that lasts a few milliseconds still reaches the client; any other note
is bare and the follower re-reads the row, which stays the one source of truth (a final status
always comes from the row, with its files and measurements). Without notes a follower re-reads
every ``RECHECK_SECONDS``, so changes made where nothing publishes still arrive.
"""
from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import jobs
from service.db import Job

log = logging.getLogger("avatar.events")

CHANNEL = "avatar:job-events:{job_id}"
RECHECK_SECONDS = 1.0
SHOWN = ("status", "progress", "stage", "message")


def channel(job_id: str) -> str:
    return CHANNEL.format(job_id=job_id)


async def publish(redis: ArqRedis, job_id: str, **shown: Any) -> None:
    """Tell followers the job changed: ``shown`` = status, progress, stage, message as just written
    (a progress report), or nothing (the follower re-reads the row). Best effort: a follower
    re-reads on its own anyway, and progress must never fail a job."""
    try:
        await redis.publish(channel(job_id), json.dumps(shown))
    except Exception as exc:
        log.debug("job %s: change not published (%s)", job_id, exc.__class__.__name__)


async def follow(redis: ArqRedis, sessions: async_sessionmaker[AsyncSession],
                 job_id: str) -> AsyncIterator[tuple[Job, dict[str, Any]]]:
    """(row, newer values from a note) now, then at every change a client can see; ends after a
    final state. Subscribes before the first read, so no change between the two is missed."""
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel(job_id))
    try:
        if (row := await _load(sessions, job_id)) is None:
            return
        yield row, {}
        last = _shown(row)
        while row.status not in jobs.FINAL:
            note = await _next_note(pubsub)
            if note is not None and set(SHOWN) <= note.keys() and note["status"] == jobs.PROCESSING:
                if note["progress"] >= last[1] and tuple(note[k] for k in SHOWN) != last:
                    last = tuple(note[k] for k in SHOWN)
                    yield row, {k: note[k] for k in SHOWN}
                continue
            if (row := await _load(sessions, job_id)) is None:
                return
            if _shown(row) != last:
                last = _shown(row)
                yield row, {}
    finally:
        try:
            await pubsub.unsubscribe()
            await pubsub.aclose()
        except Exception:  # the connection went with Redis; nothing left to release
            pass


def _shown(job: Job) -> tuple:
    return tuple(getattr(job, k) for k in SHOWN)


async def _load(sessions: async_sessionmaker[AsyncSession], job_id: str) -> Job | None:
    async with sessions() as s:
        return await s.get(Job, job_id)


async def _next_note(pubsub) -> dict[str, Any] | None:
    """The next note (``{}`` for a bare one), or None after RECHECK_SECONDS without one."""
    msg = await pubsub.get_message(timeout=RECHECK_SECONDS)
    if msg is None or msg.get("type") != "message":
        return None
    try:
        note = json.loads(msg["data"])
    except ValueError:
        return {}
    return note if isinstance(note, dict) else {}

"""A /v2 job's webhook: checked at submit with the photo URLs' address rules, called once with
the final status body by the worker that saw the job end. "Once" is a compare-and-set on the
job row (pending → sending), so two workers, or a retried task, never both call it."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inference.errors import InputError
from service import jobs
from service.db import Job
from service.photos import check_host_public, check_url_shape

log = logging.getLogger("avatar.webhooks")
PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
TRIES = 3


async def check_url(url: str, allow_private: bool) -> None:
    """Raises InputError (code ``invalid_webhook``) unless ``url`` is a public http(s) URL."""
    try:
        check_url_shape(url)
        await check_host_public(url, allow_private)
    except InputError as exc:
        raise InputError("webhook must be a public http(s) URL without credentials; private and local "
                         "addresses are refused (ALLOW_PRIVATE_WEBHOOK_URLS)", "invalid_webhook") from exc


async def _claim(sessions: async_sessionmaker[AsyncSession], job_id: str) -> bool:
    async with sessions() as s:
        res = await s.execute(update(Job).where(Job.id == job_id, Job.webhook_state == PENDING,
                                                Job.status.in_(jobs.FINAL))
                              .values(webhook_state=SENDING).execution_options(synchronize_session=False))
        await s.commit()
        return res.rowcount == 1


async def deliver(sessions: async_sessionmaker[AsyncSession], job_id: str, allow_private: bool,
                  timeout: float, body: Callable[[Job], Awaitable[dict]]) -> str | None:
    """Call the job's webhook if it has one, the job is final and nobody called it yet.
    ``body`` builds the final status body. Returns the delivery state, None when nothing was due."""
    if not await _claim(sessions, job_id):
        return None
    async with sessions() as s:
        job = await s.get(Job, job_id)
    url = (job.v2_request or {}).get("webhook")
    state = FAILED
    try:
        await check_url(url, allow_private)  # again: the name may resolve elsewhere by now
        payload = await body(job)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            for attempt in range(1, TRIES + 1):
                try:
                    r = await client.post(url, json=payload)
                    if r.is_success:
                        state = SENT
                        break
                    log.warning("webhook for job %s answered HTTP %d (try %d)", job_id, r.status_code, attempt)
                except httpx.HTTPError as exc:
                    log.warning("webhook for job %s failed (try %d): %s", job_id, attempt, exc)
                if attempt < TRIES:
                    await asyncio.sleep(attempt)
    except InputError as exc:
        log.warning("webhook for job %s refused: %s", job_id, exc)
    async with sessions() as s:
        await s.execute(update(Job).where(Job.id == job_id).values(webhook_state=state)
                        .execution_options(synchronize_session=False))
        await s.commit()
    return state

"""The waking worker (arq's Worker, woken on the queue's channel) against the session's real Redis:
with a poll too slow to matter (60 s), a job queued now still starts now, and a job waiting behind
another starts as soon as that one ends."""
from __future__ import annotations

import asyncio
import uuid

from arq.worker import func

from service import queue
from service.waking import WakingWorker

SLOW_POLL_S = 60.0  # a job found by a poll would wait this long: the tests would time out first


def run(redis_url: str, scenario):
    async def go():
        name = f"avatar:test:{uuid.uuid4().hex[:8]}"
        started: asyncio.Queue[str] = asyncio.Queue()
        release = asyncio.Event()

        async def task(ctx, job_id: str) -> str:
            await started.put(job_id)
            if job_id == "blocker":
                await release.wait()
            return job_id

        worker = WakingWorker(functions=[func(task, name=queue.TASK_NAME)], queue_name=name, max_jobs=1,
                              redis_settings=queue.redis_settings(redis_url), poll_delay=SLOW_POLL_S,
                              handle_signals=False)
        pool = await queue.connect(redis_url)
        main = asyncio.create_task(worker.main())
        try:
            await asyncio.sleep(0.5)  # the worker's first poll has passed: from now on it sleeps 60 s
            return await scenario(pool, name, started, release)
        finally:
            release.set()
            for _ in range(100):  # arq records each job's end after its function returns: let it
                if all(t.done() for t in list(worker.tasks.values())):
                    break
                await asyncio.sleep(0.05)
            main.cancel()
            await asyncio.gather(main, return_exceptions=True)
            await worker.close()
            await pool.aclose()
    return asyncio.run(go())


def test_an_idle_worker_takes_a_job_when_it_is_queued_not_at_its_next_poll(redis_url):
    async def scenario(pool, name, started, release):
        await queue.enqueue(pool, name, "first")
        return await asyncio.wait_for(started.get(), 10)
    assert run(redis_url, scenario) == "first"


def test_a_job_waiting_behind_another_starts_when_that_one_ends(redis_url):
    async def scenario(pool, name, started, release):
        await queue.enqueue(pool, name, "blocker")
        assert await asyncio.wait_for(started.get(), 10) == "blocker"
        await queue.enqueue(pool, name, "next")  # its wake-up comes while the only slot is taken
        await asyncio.sleep(0.3)
        assert started.empty()
        release.set()
        return await asyncio.wait_for(started.get(), 10)
    assert run(redis_url, scenario) == "next"

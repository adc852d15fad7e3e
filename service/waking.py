"""arq's worker, woken when a job is queued instead of finding it at its next poll, and kept
alive through a Redis outage.

arq polls its queue every ``poll_delay`` (0.5 s): a job waited 0.25 s on average before a worker
even looked. Every enqueue here also publishes the job id on the queue's wake channel; each idle
worker listens there and polls at once. A job finishing wakes its own worker too, so the next
waiting job starts without a poll's pause. The poll stays as the fallback for a missed message
(Redis restarting, a job queued by something that does not publish). A poll that cannot reach
Redis is tried again a second later; arq's own loop ended the worker there. A worker whose
``ctx["take_gate"]`` is set (an async callable) polls only once it returns: a GPU worker takes
new jobs only while its pipeline is free.
"""
from __future__ import annotations

import asyncio
import logging

from arq.connections import ArqRedis, create_pool, log_redis_info
from arq.worker import Worker, get_kwargs
from redis.exceptions import RedisError

log = logging.getLogger("avatar.worker")
WAKE_CHANNEL = "avatar:wake:{queue}"
REDIS_RETRY_S = 1.0


def wake_channel(queue_name: str) -> str:
    return WAKE_CHANNEL.format(queue=queue_name)


async def wake(pool: ArqRedis, queue_name: str, job_id: str) -> None:
    """Tell idle workers of ``queue_name`` to look now (best effort: they poll anyway)."""
    try:
        await pool.publish(wake_channel(queue_name), job_id)
    except Exception as exc:
        log.debug("wake-up not published (%s); workers find the job at their next poll", exc.__class__.__name__)


class WakingWorker(Worker):
    """A Worker whose wait between polls ends early on a message on the queue's wake channel."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._wake = asyncio.Event()

    async def main(self) -> None:
        if self.burst:  # arq's own loop: a burst run ends when the queue is empty
            return await super().main()
        if self._pool is None:
            self._pool = await create_pool(self.redis_settings, job_deserializer=self.job_deserializer,
                                           job_serializer=self.job_serializer, default_queue_name=self.queue_name,
                                           expires_extra_ms=self.expires_extra_ms)
        log.info("starting worker for %d functions: %s", len(self.functions), ", ".join(self.functions))
        await log_redis_info(self.pool, log.info)
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        listener = asyncio.create_task(self._listen())
        try:
            while True:
                if (gate := self.ctx.get("take_gate")) is not None:
                    await gate()  # a busy pipeline: jobs stay queued for a free worker, not held here
                self._wake.clear()  # before the poll: a message during it makes the next wait end at once
                try:
                    await self._poll_iteration()
                except (RedisError, OSError) as exc:
                    # arq's own loop ends the worker here: a Redis restart (its health record every
                    # 30 s, a poll) stopped a worker that was running a job fine without Redis
                    log.warning("queue not polled (%s: %s); again in %.1f s", exc.__class__.__name__, exc,
                                REDIS_RETRY_S)
                    await asyncio.sleep(REDIS_RETRY_S)
                    continue
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll_delay_s)
                except TimeoutError:
                    pass
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._wake.set()  # a slot is free: take the next waiting job now, not at the next poll

    async def _listen(self) -> None:
        channel = wake_channel(self.queue_name)
        while True:
            try:
                async with self.pool.pubsub() as pubsub:
                    await pubsub.subscribe(channel)
                    self._wake.set()  # (re)subscribed: anything queued while not listening is found now
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarting: poll meanwhile, listen again shortly
                log.warning("wake-up channel lost (%s); polling every %.1f s until it is back",
                            exc.__class__.__name__, self.poll_delay_s)
                await asyncio.sleep(REDIS_RETRY_S)


def run_worker(settings_cls) -> WakingWorker:
    """``arq.run_worker`` with the waking worker."""
    worker = WakingWorker(**get_kwargs(settings_cls))
    worker.run()
    return worker

"""Prometheus metrics for the whole service, served by any API process at ``/metrics``.

The API and the workers are separate processes, so nothing is kept in one process's memory:
job counts come from the database, the queue and the workers from Redis, and the workers add
each finished job's stage times to histogram counters in Redis. A scrape reads them all, so
every API process answers the same.
"""
from __future__ import annotations

import logging
import time

from arq.connections import ArqRedis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import jobs, queue
from service.db import Job, utcnow

log = logging.getLogger("avatar.metrics")
STAGE_KEY = "avatar:metrics:stage:{stage}"
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


async def record_stages(redis: ArqRedis, timings_ms: dict[str, float]) -> None:
    """Add one job's stage times (ms) to the shared histograms; a Redis hiccup loses one sample."""
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for stage, ms in timings_ms.items():
                key, seconds = STAGE_KEY.format(stage=stage), float(ms) / 1000.0
                for le in STAGE_BUCKETS:
                    if seconds <= le:
                        pipe.hincrby(key, str(le), 1)
                pipe.hincrby(key, "+Inf", 1)
                pipe.hincrbyfloat(key, "sum", seconds)
            await pipe.execute()
    except Exception as exc:
        log.warning("stage times not recorded (%s)", exc.__class__.__name__)


class _Snapshot:
    """The metric families of one scrape, gathered beforehand (collectors cannot await)."""

    def __init__(self, families: list):
        self.families = families

    def collect(self):
        return iter(self.families)


async def scrape(sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, queue_name: str) -> bytes:
    families = await _job_families(sessions)
    try:
        families += await _queue_families(sessions, redis, queue_name)
    except Exception as exc:  # Redis down: the database's figures still come
        log.warning("queue metrics skipped (%s)", exc.__class__.__name__)
        up = GaugeMetricFamily("avatar_redis_up", "1 when Redis answered this scrape")
        up.add_metric([], 0)
        families.append(up)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return generate_latest(registry)


async def _job_families(sessions) -> list:
    async with sessions() as s:
        by_state = dict((await s.execute(select(Job.status, func.count()).group_by(Job.status))).all())
        failures = (await s.execute(select(Job.error_code, func.count()).where(Job.status == jobs.FAILED)
                                    .group_by(Job.error_code))).all()
    states = GaugeMetricFamily("avatar_jobs", "jobs by state", labels=["state"])
    for state in jobs.STATUSES:
        states.add_metric([state], by_state.get(state, 0))
    failed = CounterMetricFamily("avatar_job_failures", "failed jobs by error code", labels=["code"])
    for code, n in failures:
        failed.add_metric([code or "unknown"], n)
    return [states, failed]


async def _queue_families(sessions, redis: ArqRedis, queue_name: str) -> list:
    depth = GaugeMetricFamily("avatar_queue_depth", "deliveries waiting in the Redis queue")
    depth.add_metric([], await queue.queued_count(redis, queue_name))
    async with sessions() as s:
        oldest = (await s.execute(select(func.min(Job.created_at)).where(Job.status == jobs.QUEUED))).scalar()
    age = GaugeMetricFamily("avatar_queue_oldest_waiting_seconds", "age of the oldest queued job (0: none)")
    age.add_metric([], (utcnow() - oldest).total_seconds() if oldest else 0.0)
    beat = GaugeMetricFamily("avatar_worker_heartbeat_age_seconds", "seconds since each live worker's last beat",
                             labels=["worker", "device"])
    busy = GaugeMetricFamily("avatar_worker_busy", "1 while the worker runs a job", labels=["worker", "job_id"])
    gpu = GaugeMetricFamily("avatar_worker_gpu_memory_bytes", "GPU memory the worker's pipeline holds",
                            labels=["worker", "device"])
    for w in await queue.live_workers(redis, queue_name):
        name, device = w.get("name", "?"), w.get("device", "?")
        beat.add_metric([name, device], max(0.0, time.time() - float(w.get("beat_at") or time.time())))
        busy.add_metric([name, w.get("current_job") or ""], 1 if w.get("current_job") else 0)
        if w.get("gpu_memory_bytes") is not None:
            gpu.add_metric([name, device], w["gpu_memory_bytes"])
    return [depth, age, beat, busy, gpu, await _stage_family(redis)]


async def _stage_family(redis: ArqRedis) -> HistogramMetricFamily:
    hist = HistogramMetricFamily("avatar_stage_seconds", "time of each pipeline stage of finished jobs",
                                 labels=["stage"])
    async for key in redis.scan_iter(match=STAGE_KEY.format(stage="*"), count=5000):
        key = key.decode() if isinstance(key, bytes) else key
        raw = {(k.decode() if isinstance(k, bytes) else k): v for k, v in (await redis.hgetall(key)).items()}
        buckets = [(str(le), int(raw.get(str(le), 0))) for le in STAGE_BUCKETS] + [("+Inf", int(raw.get("+Inf", 0)))]
        hist.add_metric([key.rsplit(":", 1)[1]], buckets, float(raw.get("sum", 0.0)))
    return hist

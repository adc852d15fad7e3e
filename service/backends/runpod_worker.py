"""The arq worker for ``BACKEND=runpod``: no GPU and no Pipeline; it follows many RunPod jobs at
once (``RUNPOD_MAX_JOBS``), each job one task on the same queue the GPU workers use.

    avatar worker --backend runpod      # or: BACKEND=runpod avatar worker
"""
from __future__ import annotations

import asyncio
import logging

from arq.worker import func

from service.queue import TASK_NAME, redis_settings
from service.settings import get_settings

log = logging.getLogger("avatar.worker")
_settings = get_settings()
# past our own deadline (JOB_TIMEOUT_SECONDS from creation), so the runner ends each job itself
_ARQ_TIMEOUT_S = _settings.job_timeout_seconds + 120


async def startup(ctx: dict) -> None:
    from gpu_worker import open_stores
    from service.backends.runpod import RunpodClient, RunpodRunner
    from service.db import session_factory
    from service.errors import DependencyError
    from service.storage import FileStorage

    settings = get_settings()
    engine, storage = await open_stores(settings)
    if isinstance(storage, FileStorage) and not settings.public_base_url:
        await engine.dispose()
        raise DependencyError("BACKEND=runpod with local storage: RunPod fetches each photo through a link, "
                              "so set PUBLIC_BASE_URL to an address it can reach (or use STORAGE_URL=s3://...)")
    client = RunpodClient(settings.runpod_base_url, settings.runpod_endpoint_id, settings.runpod_api_key)
    runner = RunpodRunner(settings, session_factory(engine), storage, ctx["redis"], client=client)
    ctx.update(runner=runner, engine=engine, client=client, heartbeat=asyncio.create_task(runner.heartbeat_forever()))
    log.info("worker %s ready on queue %s: backend runpod, endpoint %s at %s", runner.name, settings.queue_name,
             settings.runpod_endpoint_id, settings.runpod_base_url)


async def shutdown(ctx: dict) -> None:
    import gpu_worker

    await gpu_worker.shutdown(ctx)  # the heartbeat and the engine, as a GPU worker's
    if "client" in ctx:
        await ctx["client"].aclose()


async def process_avatar(ctx: dict, job_id: str) -> str:
    from service.job_hooks import run_job

    return await run_job(ctx["runner"], job_id, ctx.get("job_try", 1))


class WorkerSettings:
    functions = [func(process_avatar, name=TASK_NAME, timeout=_ARQ_TIMEOUT_S, max_tries=_settings.job_max_tries + 1)]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = redis_settings(_settings.redis_url)
    queue_name = _settings.queue_name
    max_jobs = _settings.runpod_max_jobs
    job_timeout = _ARQ_TIMEOUT_S
    max_tries = _settings.job_max_tries + 1
    keep_result = 3600
    health_check_interval = 30

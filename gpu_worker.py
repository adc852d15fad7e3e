"""The arq worker: one process per GPU. It pins its GPU, loads the Pipeline once, warms it on a
real photo, then takes jobs from the shared queue: whenever its pipeline is free, up to
WORKER_BATCH of them, fitted as one batch.

    avatar worker --gpu 0          # or: CUDA_VISIBLE_DEVICES=0 arq gpu_worker.WorkerSettings
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime, timezone

from arq.worker import func

from service.queue import TASK_NAME, redis_settings
from service.settings import get_settings

log = logging.getLogger("avatar.worker")
_settings = get_settings()


async def open_stores(settings):
    """The database (at the newest schema) and storage, or a DependencyError with the fix."""
    from service import migrate
    from service.db import make_engine
    from service.errors import DependencyError
    from service.storage import make_storage

    engine = make_engine(settings.database_url)
    try:
        current = await migrate.current_revision(settings.database_url)
    except Exception as exc:
        raise DependencyError(f"cannot reach the database ({exc.__class__.__name__}: {exc}); start it or fix "
                           "DATABASE_URL") from exc
    if current != migrate.head_revision():
        raise DependencyError(f"the database schema is at {current or 'nothing'}, not {migrate.head_revision()}: "
                           "run `avatar db upgrade` (or start `avatar serve`, which upgrades) first")
    storage = make_storage(settings)
    await storage.check()
    return engine, storage


async def startup(ctx: dict) -> None:
    from inference.pipeline import Pipeline
    from service.db import session_factory
    from service.worker import JobRunner

    settings = get_settings()
    lower_priority(settings.worker_nice)  # started by `arq` by hand; `avatar worker` did it already
    engine, storage = await open_stores(settings)

    t0 = time.perf_counter()
    pipeline = await asyncio.to_thread(Pipeline, pipeline_config(settings), log.info)
    log.info("pipeline loaded in %.1f s on %s", time.perf_counter() - t0, pipeline.device)
    if settings.worker_warmup:
        t0 = time.perf_counter()
        warm = await asyncio.to_thread(warm_up, pipeline)
        log.info("pipeline warmed in %.1f s (%s)", time.perf_counter() - t0,
                 ", ".join(f"{stage} {ms:.0f} ms" for stage, ms in warm.timings_ms.items()))
    runner = JobRunner(settings, session_factory(engine), storage, ctx["redis"], pipeline)
    ctx.update(runner=runner, engine=engine, pipeline=pipeline, take_gate=runner.batches.until_free,
               heartbeat=asyncio.create_task(runner.heartbeat_forever(pipeline.device)))
    log.info("worker %s ready on queue %s", runner.name, settings.queue_name)


def pipeline_config(settings):
    """The worker's pipeline, as its settings say (device, body model, where it renders)."""
    from inference.pipeline import PipelineConfig

    return PipelineConfig(device=_device(settings.worker_device), body_model=settings.worker_body_model,
                          render_process=settings.worker_render_process)


def lower_priority(nice: int) -> None:
    """Run at CPU priority ``nice`` (WORKER_NICE) or lower. On Linux a priority belongs to a thread
    and threads inherit it when they start, so this is called before any thread starts."""
    if nice and os.getpriority(os.PRIO_PROCESS, 0) < nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)


def _device(wanted: str) -> str:
    """WORKER_DEVICE as this process sees it: pinned to one GPU (CUDA_VISIBLE_DEVICES=N, as
    `avatar worker --gpu N` or `arq` started by hand), that GPU is cuda:0 whatever it is called."""
    import os

    from inference.gpu import device_in_pinned_process

    pinned = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    return device_in_pinned_process(wanted, pinned) if pinned.isdigit() else wanted


# the warm-up: every stage runs once, as cheaply as still initialises what a first run would
# (the detector's first call, the texture's UV raster cache, the renderer's GL context and
# imports): a photo scaled down to WARM_UP_SIDE px (segmentation and the overlay on fewer pixels)
# and a fit of one step per stage. A first client job after it runs as fast as the next one
# (BENCHMARKS.md); the full-size photo and 4-step fit before took ~1.2 s more on this 2-core CPU
WARM_UP_FIT = {"iterations": 1, "refit_iterations": 1, "rounds": 1, "shape_iterations": 1, "coarse_grid": 2}
WARM_UP_SIDE = 480


def warm_up(pipeline):
    """One real run on a photo shipped with Ultralytics, with a short fit, so the first client job
    does not pay for lazy initialisation (CUDA kernels, the renderer's context, allocator growth)."""
    import dataclasses
    import importlib.util
    import tempfile
    from pathlib import Path

    import cv2

    from inference.pipeline import Job
    from inference.types import Subject

    spec = importlib.util.find_spec("ultralytics")
    image = cv2.imread(str(Path(spec.origin).parent / "assets" / "bus.jpg"))
    scale = WARM_UP_SIDE / max(image.shape[:2])
    image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                       interpolation=cv2.INTER_AREA)
    photo = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    fit = dataclasses.replace(pipeline.config.fit, **WARM_UP_FIT)
    with tempfile.TemporaryDirectory(prefix="avatar-warmup-") as tmp:
        return pipeline.warm_up(Job(photo, Subject(height_cm=175, gender="male", weight_kg=75), Path(tmp) / "out"),
                                fit)


async def shutdown(ctx: dict) -> None:
    if "heartbeat" in ctx:
        ctx["heartbeat"].cancel()
        try:
            await ctx["heartbeat"]
        except asyncio.CancelledError:
            pass
    if "pipeline" in ctx:
        ctx["pipeline"].close()
    if "engine" in ctx:
        await ctx["engine"].dispose()


async def process_avatar(ctx: dict, job_id: str) -> str:
    from service.job_hooks import run_job  # a /v2 request's policy and webhook around the run

    if (queued := ctx.get("enqueue_time")) is not None:  # arq's: when this delivery was queued
        log.info("job %s: queued at %s, delivery taken %.1f ms later", job_id, queued.isoformat(),
                 (datetime.now(timezone.utc) - queued).total_seconds() * 1000.0)
    return await run_job(ctx["runner"], job_id, ctx.get("job_try", 1))


# the runner enforces JOB_TIMEOUT_SECONDS itself (and fails the job); arq's own limit is a backstop
# after it, so a cancel that reaches the runner from arq always means the worker is stopping
_ARQ_TIMEOUT_S = _settings.job_timeout_seconds + 120


class WorkerSettings:
    # JOB_MAX_TRIES is counted in the database (the runner and the reaper); arq's redeliveries of a
    # job handed back on shutdown are bounded here, and a job arq gives up on is re-queued by the reaper
    functions = [func(process_avatar, name=TASK_NAME, timeout=_ARQ_TIMEOUT_S,
                      max_tries=_settings.job_max_tries + 1)]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = redis_settings(_settings.redis_url)
    queue_name = _settings.queue_name
    # one GPU, one pipeline in this process: a poll takes up to WORKER_BATCH jobs, fitted as one
    # batch (service.batches), and polls happen only while no batch runs (``take_gate``); the
    # slots of a batch still uploading its artefacts do not keep the next batch from being taken
    queue_read_limit = _settings.worker_batch
    max_jobs = 2 * _settings.worker_batch
    job_timeout = _ARQ_TIMEOUT_S
    max_tries = _settings.job_max_tries + 1
    keep_result = 3600
    health_check_interval = 30

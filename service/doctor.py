"""``avatar doctor``: every dependency checked the way the service uses it, each failure with the
command or setting that fixes it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


async def run_checks() -> list[Check]:
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        return [Check("settings", False, str(exc).splitlines()[0],
                      "fix that variable in the environment or .env (.env.example lists each)")]
    checks = [Check("settings", True, "loaded"), _weights(), _gpu(settings.worker_device),
              rendering(settings.worker_device)]
    checks.append(await _database(settings))
    checks.append(await _storage(settings))
    checks += await _redis_and_workers(settings)
    backend = getattr(settings, "backend", "local")
    if backend == "runpod":
        checks.append(_runpod(settings))
    return checks


def _weights() -> Check:
    from inference.weights import OFFLINE_WEIGHTS, check, default_weights_dir

    wdir = default_weights_dir()
    rows = {name: (ok, detail) for name, ok, detail in check(wdir)}
    found = [(name, *rows.get(name, (False, "missing"))) for name in (wf.name for wf in OFFLINE_WEIGHTS)]
    ok = all(good for _, good, _ in found)
    return Check("weights", ok, f"{wdir}: " + "; ".join(f"{name} {detail}" for name, _, detail in found),
                 "" if ok else "avatar weights fetch")


def _gpu(device: str) -> Check:
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Check("gpu", True, f"{torch.cuda.device_count()} visible: {names}")
    if device.startswith("cuda"):
        return Check("gpu", False, f"WORKER_DEVICE={device} but no GPU is visible",
                     "install the NVIDIA driver/container toolkit, check CUDA_VISIBLE_DEVICES, or set WORKER_DEVICE=cpu")
    return Check("gpu", True, "none visible: workers run on the CPU (a job takes ~10 s or more)")


def rendering(device: str) -> Check:
    """How a worker on ``device`` will render (overlay, preview): EGL on a GPU, OSMesa on a CPU or
    when EGL cannot make a context (slower, said in the worker's log), or not at all (the worker
    then stops at start). Probes EGL in a child process, as the worker does."""
    import torch

    from inference.stages import render as R

    gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    osmesa = R.osmesa_available()
    if not gpu:
        if osmesa:
            return Check("rendering", True, "OSMesa (on the CPU)")
        return Check("rendering", False, "OSMesa is not installed: a CPU worker cannot render",
                     "apt-get install libosmesa6 (Debian/Ubuntu)")
    ok, why = R.probe_egl()
    if ok:
        return Check("rendering", True, "EGL (on the GPU)")
    if osmesa:
        return Check("rendering", True, f"EGL failed ({why}): the worker renders with OSMesa on the CPU "
                     f"(slower). {R.EGL_HINT}")
    return Check("rendering", False, f"EGL failed ({why}) and OSMesa is not installed: the worker cannot "
                 "start", f"{R.EGL_HINT}; or apt-get install libosmesa6 (CPU rendering)")


async def _database(settings) -> Check:
    from service import migrate

    try:
        current = await migrate.current_revision(settings.database_url)
    except Exception as exc:
        return Check("database", False, f"cannot connect ({exc.__class__.__name__})",
                     "start the database or fix DATABASE_URL")
    if current != migrate.head_revision():
        return Check("database", False, f"schema at {current or 'nothing'}, the code needs {migrate.head_revision()}",
                     "avatar db upgrade")
    return Check("database", True, f"reachable, schema at {current}")


async def _storage(settings) -> Check:
    from service.storage import make_storage

    try:
        await make_storage(settings).check()
    except Exception as exc:
        return Check("storage", False, str(exc).split(";")[0], _after_semicolon(str(exc)) or "fix STORAGE_URL")
    return Check("storage", True, f"{settings.storage_url} writable")


async def _redis_and_workers(settings) -> list[Check]:
    from service import queue

    try:
        pool = await queue.connect(settings.redis_url)
    except Exception as exc:
        return [Check("redis", False, str(exc).split(";")[0], "start redis-server or fix REDIS_URL"),
                Check("workers", False, "unknown (no Redis)", "start Redis first")]
    try:
        workers = await queue.live_workers(pool, settings.queue_name)
        depth = await queue.queued_count(pool, settings.queue_name)
    finally:
        await pool.aclose()
    redis = Check("redis", True, f"{queue.safe_url(settings.redis_url)}, {depth} waiting in {settings.queue_name}")
    if not workers:
        return [redis, Check("workers", False, "no live worker: queued jobs wait",
                             "avatar worker --gpu 0   (one per GPU)")]
    devices = ", ".join(sorted(f"{w.get('name')} on {w.get('device')}" for w in workers))
    return [redis, Check("workers", True, f"{len(workers)} live: {devices}")]


def _runpod(settings) -> Check:
    missing = [name for name in ("runpod_api_key", "runpod_endpoint_id") if not getattr(settings, name, None)]
    if missing:
        return Check("runpod", False, f"BACKEND=runpod without {', '.join(m.upper() for m in missing)}",
                     "set " + " and ".join(m.upper() for m in missing))
    return Check("runpod", True, "credentials set")


def _after_semicolon(message: str) -> str:
    return message.split(";", 1)[1].strip() if ";" in message else ""


def report(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"{'ok  ' if c.ok else 'FAIL'}  {c.name:<9} {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"      {'':<9} fix: {c.fix}")
    bad = sum(not c.ok for c in checks)
    lines.append("all good" if not bad else f"{bad} problem(s)")
    return "\n".join(lines)

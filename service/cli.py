"""``avatar``: the pipeline's commands plus the service's (serve, worker, keys, db)."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys

from pydantic import ValidationError

from inference import cli as pipeline_cli
from service.errors import DependencyError

SERVICE_COMMANDS = ("up", "serve", "worker", "keys", "db", "credits", "queue", "jobs", "doctor")


def build_parser() -> argparse.ArgumentParser:
    p, sub = pipeline_cli.build_parser()
    b = sub.choices["bench"]  # the service's end-to-end variant of the pipeline's bench
    b.add_argument("--via-api", metavar="URL", default=None,
                   help="time jobs through a running service (create → completed) instead of in-process")
    b.add_argument("--key", default=None, help="with --via-api: an API key")
    b.add_argument("--concurrency", default="1", help="with --via-api: jobs in flight, e.g. 1,4,16")
    b.add_argument("--follow", choices=("events", "poll"), default="events",
                   help="with --via-api: follow each job by its server-sent events (default) or by polling its status")
    u = sub.add_parser("up", help="the whole service in one command: API + worker (+ a private Redis when "
                                  "REDIS_URL is not set); prints the page's address and, the first time, an admin key")
    u.add_argument("--host", default=None, help="default: HOST from the environment, else 127.0.0.1")
    u.add_argument("--port", type=int, default=None, help="default: PORT from the environment, else 8000")
    u.add_argument("--device", default=None, help="the worker's device: auto (a GPU when there is one) | cpu | cuda:N")
    u.add_argument("--tenant", default="studio", help="the tenant of the admin key made on the first start")
    u.add_argument("--demo", action="store_true",
                   help="also send the sample photo (bus.jpg) so a first avatar appears without a photo of your own")
    s = sub.add_parser("serve", help="run the API (FastAPI + uvicorn)")
    s.add_argument("--host", default=None, help="default: HOST from the environment, else 127.0.0.1")
    s.add_argument("--port", type=int, default=None, help="default: PORT from the environment, else 8000")

    w = sub.add_parser("worker", help="run a GPU worker that takes jobs from the queue")
    w.add_argument("--gpu", default=None, help="GPU index to pin (sets CUDA_VISIBLE_DEVICES)")
    w.add_argument("--device", default=None, help="auto | cpu | cuda:N (default: WORKER_DEVICE)")
    w.add_argument("--no-warmup", action="store_true", help="skip the warm-up run on start")
    w.add_argument("--backend", choices=("local", "runpod"), default=None,
                   help="local: run the pipeline here; runpod: forward jobs to RunPod (no GPU). Default: BACKEND")

    k = sub.add_parser("keys", help="manage API keys (writes the database directly)")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", help="create a key for a tenant; prints the secret once")
    kc.add_argument("--tenant", required=True)
    kc.add_argument("--name", default="")
    kc.add_argument("--admin", action="store_true", help="the key may also create and revoke its tenant's keys")
    kc.add_argument("--operator", action="store_true",
                    help="the key may grant credits to, and read the credits of, every tenant (/admin/credits)")
    ksub.add_parser("list", help="list keys (never their secrets)")
    kr = ksub.add_parser("revoke", help="revoke a key by id")
    kr.add_argument("key_id")

    d = sub.add_parser("db", help="database schema")
    dsub = d.add_subparsers(dest="db_command", required=True)
    dsub.add_parser("upgrade", help="migrate the schema to the newest revision")
    dsub.add_parser("current", help="print the schema revision")

    c = sub.add_parser("credits", help="a tenant's credits (the operator; writes the database directly)")
    csub = c.add_subparsers(dest="credits_command", required=True)
    cg = csub.add_parser("grant", help="add credits to a tenant (its jobs are metered from then on)")
    cg.add_argument("--tenant", required=True)
    cg.add_argument("amount", type=int)
    cg.add_argument("--note", default="")
    cs = csub.add_parser("show", help="a tenant's balance and recent movements")
    cs.add_argument("--tenant", required=True)

    q = sub.add_parser("queue", help="waiting/active/failed counts, workers and recent failures (all tenants)")
    q.add_argument("--json", action="store_true")
    j = sub.add_parser("jobs", help="an operator's hands on one job")
    jsub = j.add_subparsers(dest="jobs_command", required=True)
    jr = jsub.add_parser("retry", help="queue a waiting or processing job again (a final job stays final)")
    jr.add_argument("job_id")
    jf = jsub.add_parser("fail", help="end a job as failed (its credit is released, its worker told to stop)")
    jf.add_argument("job_id")
    jf.add_argument("--reason", default="")
    sub.add_parser("doctor", help="check settings, weights, GPU, Redis, storage, database, workers; say the fix")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.whole_process = argv is None  # the console script: see inference.cli.main
    if args.command == "bench" and args.via_api:
        return _bench_api(args)
    if args.command not in SERVICE_COMMANDS:
        return pipeline_cli.run(args)
    from service.logs import configure

    configure(os.environ.get("LOG_LEVEL", "info"), os.environ.get("LOG_FORMAT", "text").lower())
    try:
        return {"up": _up, "serve": _serve, "worker": _worker, "keys": _keys, "db": _db, "credits": _credits,
                "queue": _queue, "jobs": _jobs, "doctor": _doctor}[args.command](args)
    except (DependencyError, ValidationError) as exc:
        print(f"avatar: error: {exc}", file=sys.stderr)
        return 3


def _up(args) -> int:
    from service import up
    from service.settings import get_settings

    settings = get_settings()
    return up.run(up.UpOptions(host=args.host or settings.host, port=args.port or settings.port,
                               device=args.device, tenant=args.tenant, demo=args.demo))


def _serve(args) -> int:
    import uvicorn

    from service.app import create_app
    from service.settings import get_settings

    settings = get_settings()
    # JSON logs: uvicorn's own loggers go through the root handler set up in main()
    log_config = None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG
    uvicorn.run(create_app(settings), host=args.host or settings.host, port=args.port or settings.port,
                log_level=settings.log_level, proxy_headers=True, log_config=log_config)
    return 0


def _worker(args) -> int:
    # pin the GPU before anything imports torch: the process then sees exactly one device
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
        os.environ.setdefault("WORKER_DEVICE", "cuda:0")
    if args.device:
        os.environ["WORKER_DEVICE"] = args.device
    if args.gpu is not None:  # inside the pinned process its GPU is cuda:0, whatever the settings call it
        from inference.gpu import device_in_pinned_process
        from service.settings import Settings

        try:
            os.environ["WORKER_DEVICE"] = device_in_pinned_process(Settings().worker_device, args.gpu)
        except ValueError as exc:
            raise DependencyError(str(exc)) from exc
    if args.no_warmup:
        os.environ["WORKER_WARMUP"] = "false"
    if args.backend:
        os.environ["BACKEND"] = args.backend
    from redis.exceptions import ConnectionError as RedisConnectionError

    import gpu_worker
    from service import queue
    from service.settings import get_settings
    from service.waking import run_worker

    gpu_worker.lower_priority(get_settings().worker_nice)  # before any thread starts: they all inherit it
    url = get_settings().redis_url
    if get_settings().backend == "runpod":
        from service.backends import runpod_worker as worker_module
    else:
        worker_module = gpu_worker

    async def check_redis() -> None:  # fail with the fix before arq's own retries and traceback
        pool = await queue.connect(url)
        await pool.aclose()

    asyncio.run(check_redis())
    try:
        run_worker(worker_module.WorkerSettings)
    except (OSError, RedisConnectionError) as exc:  # Redis went away while starting
        raise queue.QueueUnavailable(f"lost Redis at {queue.safe_url(url)} ({exc}); start redis-server or "
                                     "fix REDIS_URL") from exc
    return 0


def _bench_api(args) -> int:
    import json

    import httpx

    from inference.bench import parse_batches
    from inference.errors import AvatarError
    from service.bench_api import ApiBenchConfig, format_api_report, run_api_bench

    if not args.key:
        print("avatar: error: --via-api needs --key (create one with `avatar keys create --tenant NAME`)",
              file=sys.stderr)
        return 2
    try:
        cfg = ApiBenchConfig(url=args.via_api, key=args.key, photos=args.photos, runs=args.runs,
                             concurrency=parse_batches(args.concurrency), follow=args.follow)
        report = run_api_bench(cfg, log=lambda msg: print(msg, file=sys.stderr))
    except (AvatarError, httpx.HTTPError) as exc:
        print(f"avatar: error: {exc}", file=sys.stderr)
        return 2
    print(format_api_report(report))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    return 0


def _keys(args) -> int:
    from service import auth

    async def go(s) -> int:
        if args.keys_command == "create":
            row, token = await auth.create_key(s, args.tenant, args.name, args.admin, args.operator)
            print(token)
            roles = ", ".join(r for r, on in (("admin", row.is_admin), ("operator", row.is_operator)) if on)
            print(f"key {row.id} for tenant {row.tenant}{f' ({roles})' if roles else ''}: "
                  "store it now, it is not shown again", file=sys.stderr)
        elif args.keys_command == "list":
            for r in await auth.list_keys(s):
                state = "revoked" if r.revoked_at else "active"
                role = "operator" if r.is_operator else "admin" if r.is_admin else "client"
                print(f"{r.id}  {r.tenant:<20} {r.prefix}…  {role:<8} {state}  {r.name}")
        elif not await auth.revoke_key(s, args.key_id):
            print(f"avatar: error: no active key {args.key_id}", file=sys.stderr)
            return 2
        else:
            await _announce_revocation(args.key_id)
        return 0

    return _with_session(go)


async def _announce_revocation(key_id: str) -> None:
    """Tell the API processes (through Redis) that a key was revoked, so none accepts it again."""
    from service import auth, queue
    from service.settings import get_settings

    try:
        pool = await queue.connect(get_settings().redis_url)
        try:
            await auth.announce_revocation(pool)
        finally:
            await pool.aclose()
    except Exception as exc:
        print(f"avatar: warning: key {key_id} is revoked, but Redis was not reachable to say so ({exc}); API "
              f"processes may accept it for up to {auth.recent.ttl:.0f} s more", file=sys.stderr)


def _credits(args) -> int:
    from service import auth, credits

    async def go(s) -> int:
        tenant = auth.check_tenant(args.tenant)
        if args.credits_command == "grant":
            if args.amount <= 0:
                print("avatar: error: grant a positive number of credits", file=sys.stderr)
                return 2
            await credits.grant(s, tenant, args.amount, args.note)
        now = await credits.balance(s, tenant)
        print(f"tenant {tenant}: balance {now.balance}, reserved by running jobs {now.reserved}"
              + ("" if now.metered else " (not metered)"))
        if args.credits_command == "show":
            for m in await credits.movements(s, tenant, 20):
                print(f"  {m.created_at:%Y-%m-%d %H:%M:%S}  {m.kind:<8} {m.amount:+d}  {m.job_id or '':<32}  {m.note}")
        return 0

    return _with_session(go)


def _queue(args) -> int:
    from service.queueview import queue_view

    async def go(svc) -> int:
        view = await queue_view(svc.sessions, svc.redis, svc.settings.queue_name)
        if args.json:
            print(view.model_dump_json(indent=2))
            return 0
        print("  ".join(f"{name} {n}" for name, n in view.counts.items()) + f"   (Redis queue depth {view.queue_depth})")
        if view.oldest_waiting:
            w = view.oldest_waiting
            print(f"oldest waiting: {w.job_id} ({w.tenant}) for {w.waiting_seconds:.0f} s")
        print(f"workers: {len(view.workers)}" + ("" if view.workers else "  (none alive: start `avatar worker`)"))
        for w in view.workers:
            print(f"  {w.name:<40} {w.device:<8} beat {w.last_beat_seconds_ago:>5.1f} s ago  "
                  f"{'on ' + ', '.join(w.current_jobs) if w.current_jobs else 'idle'}  ({w.jobs_done} done)")
        for f in view.recent_failures:
            print(f"failed {f.completed_at:%Y-%m-%d %H:%M:%S} {f.job_id} ({f.tenant}) {f.error_code}: {f.error_message}")
        return 0

    return _with_services(go)


def _jobs(args) -> int:
    from service import operator
    from service.reaper import Reaper

    async def go(svc) -> int:
        reaper = Reaper(svc.settings, svc.sessions, svc.redis, svc.storage)
        try:
            if args.jobs_command == "retry":
                print(f"job {args.job_id}: {await operator.retry(reaper, args.job_id)}")
            else:
                print(f"job {args.job_id}: {await operator.fail(reaper, args.job_id, args.reason)}")
        except (LookupError, ValueError) as exc:
            print(f"avatar: error: {exc}", file=sys.stderr)
            return 2
        return 0

    return _with_services(go)


def _doctor(args) -> int:
    from service import doctor

    checks = asyncio.run(doctor.run_checks())
    print(doctor.report(checks))
    return 0 if all(c.ok for c in checks) else 1


def _with_services(fn) -> int:
    """Run ``fn(services)`` with the database, storage and Redis the API would use."""
    from service.app import connect
    from service.settings import get_settings

    async def go() -> int:
        svc = await connect(get_settings())
        try:
            return await fn(svc)
        finally:
            await svc.redis.aclose()
            await svc.engine.dispose()

    return asyncio.run(go())


def _with_session(fn) -> int:
    """Run ``fn(session)`` against the configured database (its schema brought up to date first)."""
    from service.db import make_engine, session_factory
    from service.settings import get_settings

    async def go() -> int:
        settings = get_settings()
        await _ensure_schema(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            async with session_factory(engine)() as s:
                return await fn(s)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except ValueError as exc:
        print(f"avatar: error: {exc}", file=sys.stderr)
        return 2


async def _ensure_schema(url: str) -> None:
    from service import migrate

    await migrate.upgrade_async(url)


def _db(args) -> int:
    from service import migrate
    from service.settings import get_settings

    url = get_settings().database_url
    if args.db_command == "upgrade":
        migrate.upgrade(url)
        print(f"database at revision {migrate.head_revision()}")
    else:
        print(asyncio.run(migrate.current_revision(url)) or "empty")
    return 0


if __name__ == "__main__":
    sys.exit(main())

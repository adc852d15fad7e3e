"""Our own processes for the integration tests: the API (``avatar serve``) and a worker
(``avatar worker``), started as a user would, with settings from the environment."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from servers import free_port

START_TIMEOUT_S = 180.0


def avatar_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *args]


def run_avatar(env: dict[str, str], cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(avatar_cmd(*args), env={**os.environ, **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def _tail(path: Path, n: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen]:
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env={**os.environ, **env}, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_for(check, proc: subprocess.Popen, log: Path, what: str, timeout: float = START_TIMEOUT_S) -> None:
    """Poll ``check()`` until it is true; fail at once with the log if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s:\n{_tail(log)}")


@contextlib.contextmanager
def api_server(env: dict[str, str], cwd: Path) -> Iterator[str]:
    """``avatar serve`` on a free port; yields its base URL once /health answers."""
    port = free_port()
    log = cwd / f"api-{port}.log"
    with _process(avatar_cmd("serve", "--port", str(port)), env, cwd, log) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, proc, log, "the API")
        yield base


@contextlib.contextmanager
def worker(env: dict[str, str], cwd: Path, api: str, count: int = 1) -> Iterator[subprocess.Popen]:
    """``avatar worker --device cpu``; ready once the API's /ready sees ``count`` live workers."""
    log = cwd / f"worker-{time.monotonic_ns()}.log"
    with _process(avatar_cmd("worker", "--device", "cpu"), env, cwd, log) as proc:
        def seen() -> bool:
            r = httpx.get(f"{api}/ready", timeout=5).json()
            return r["checks"].get("workers", {}).get("count", 0) >= count
        wait_for(seen, proc, log, "the worker")
        proc.log = log  # type: ignore[attr-defined]
        yield proc


@contextlib.contextmanager
def photo_host(files: dict[str, bytes]) -> Iterator[str]:
    """A real HTTP server standing in for "some website" a photo_url points at. ``/redirect``
    answers 302 to the first file, ``/loop`` redirects to itself, ``/slow`` drips the first file
    a byte every 0.2 s; unknown paths 404. Yields the base URL."""
    import http.server
    import threading

    first = next(iter(files))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            name = self.path.lstrip("/")
            if name in ("redirect", "loop"):
                self.send_response(302)
                self.send_header("Location", f"/{first}" if name == "redirect" else "/loop")
                self.end_headers()
            elif name == "slow":
                self.send_response(200)
                self.send_header("Content-Length", str(len(files[first])))
                self.end_headers()
                for byte in files[first][:50]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            elif name in files:
                self.send_response(200)
                self.send_header("Content-Length", str(len(files[name])))
                self.end_headers()
                self.wfile.write(files[name])
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

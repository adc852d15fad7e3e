"""The renderer in a process of its own: :class:`RenderProcess` has the pipeline's side of
:class:`inference.stages.render.Renderer` (``prepare``, ``overlay``, ``preview``, ``render_mesh``,
``overlay_size``, ``close``) and runs each call in a child process that owns the real renderer.

Why: pyrender's import (~1 s, trimesh most of it), its GL contexts' creation and each scene's
Python-side setup hold the interpreter lock. In the pipeline's process they ran on the GL thread
while the fit ran on the main thread, which then waited for the lock: a cold ``avatar create``
fitted ~1.5-2 s slower than a warm one, and a warm job's export shared the lock with the render.
The child has its own interpreter (and the second core); the parent only pickles arrays to it.

The child is a Python that runs :func:`main` with two pipes (requests, replies); it
makes its ``Renderer`` (the GL platform, the EGL device and the OSMesa fallback are chosen there,
and its lines come back to the parent's log) and then answers one call at a time. It exits when
its request pipe closes, so it never outlives the parent, whatever ends the parent. A child that
dies (a crash in the GL driver) fails the calls in flight with a clear error, and the next call
starts a new one; so does one that answers nothing within ``CALL_TIMEOUT_S`` (it is killed).
It ignores SIGINT and SIGTERM: those, sent to the parent's process group, are
the parent's to act on (a worker stopping for a deploy may still render its job).
"""
from __future__ import annotations

import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable, Sequence

from inference.stages.render import Renderer

log = logging.getLogger(__name__)

_STATUS = "__status__"  # the child's own figures, not a Renderer method
START_TIMEOUT_S = 300.0  # the child's first answer: imports, and on a GPU the EGL probe
# a call's answer: a render takes well under a second; a child that says nothing for this long
# (a GL driver hung) is killed and the call fails, so no job waits on it for ever
CALL_TIMEOUT_S = 300.0


class RenderProcessError(RuntimeError):
    """The render process could not start, or died during a call."""


class RenderProcess:
    """A :class:`Renderer` in a child process (see the module's docstring). Thread-safe: calls
    are queued and answered in order by one client thread."""

    overlay_size = staticmethod(Renderer.overlay_size)

    def __init__(self, device: str = "cpu", log: Callable[[str], None] | None = None) -> None:
        self.device = str(device)
        self._say = log or globals()["log"].info
        self._platform: str | None = None  # known once the child has answered
        self._child: subprocess.Popen | None = None
        self._send: Connection | None = None
        self._recv: Connection | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self.call_timeout_s = CALL_TIMEOUT_S
        self._start_child()  # now: its imports overlap the caller's
        self._thread = threading.Thread(target=self._loop, name="avatar-render-client", daemon=True)
        self._thread.start()

    # -- the child --
    def _start_child(self) -> None:
        r_req, w_req = os.pipe()
        r_rep, w_rep = os.pipe()
        # this checkout's package, first on the path: not one the working directory holds
        root = str(Path(__file__).resolve().parents[2])
        code = (f"import sys; sys.path.insert(0, {root!r}); "
                "from inference.stages.render_process import main; main(sys.argv[1:])")
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-c", code, self.device, str(r_req), str(w_rep)],
                # its stdout to our stderr: what a GL library prints must not land in a
                # create's --json output
                pass_fds=(r_req, w_rep), stdin=subprocess.DEVNULL, stdout=2)
        finally:
            os.close(r_req)
            os.close(w_rep)
        self._send = Connection(w_req, readable=False)
        self._recv = Connection(r_rep, writable=False)
        self._handshake_done = False

    def _handshake(self) -> None:
        """The child's first message: its platform and what it said while starting."""
        if not self._recv.poll(START_TIMEOUT_S):
            raise RenderProcessError(f"the render process did not start within {START_TIMEOUT_S:.0f} s")
        ok, value = self._recv.recv()
        if not ok:
            raise value
        self._platform = value["platform"]
        for line in value["said"]:
            self._say(line)
        self._handshake_done = True

    def _stop_child(self, timeout_s: float = 10.0) -> None:
        for conn in (self._send, self._recv):
            if conn is not None:
                try:
                    conn.close()
                except OSError:
                    pass
        self._send = self._recv = None
        if self._child is not None:
            try:
                self._child.wait(timeout_s)  # its request pipe closed: it closes its renderer, exits
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
            self._child = None

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._stop_child()
                return
            method, args, kwargs, done = item
            if not done.set_running_or_notify_cancel():
                continue
            try:
                if self._child is None:  # the last one died: a new one
                    self._start_child()
                if not self._handshake_done:
                    self._handshake()
                self._send.send((method, args, kwargs))
                if not self._recv.poll(self.call_timeout_s):
                    raise RenderProcessError(f"the render process gave no answer to {method} within "
                                             f"{self.call_timeout_s:.0f} s: stopped")
                ok, value = self._recv.recv()
            except (EOFError, OSError, pickle.PicklingError, RenderProcessError) as exc:
                code = None
                if self._child is not None:
                    try:
                        code = self._child.wait(1.0)  # its pipe closed: it is ending, or gone
                    except subprocess.TimeoutExpired:
                        pass
                self._stop_child(timeout_s=1.0)
                done.set_exception(exc if isinstance(exc, RenderProcessError) else RenderProcessError(
                    f"the render process failed during {method} (exit code {code}): {exc!r}"))
                continue
            except BaseException as exc:  # e.g. the child's own start failed (sent as its error)
                self._stop_child(timeout_s=1.0)
                done.set_exception(exc)
                continue
            if ok:
                done.set_result(value)
            else:
                done.set_exception(value)

    def _submit(self, method: str, *args, **kwargs) -> Future:
        done: Future = Future()
        if self._closed:
            done.set_exception(RenderProcessError("the renderer is closed"))
        else:
            self._queue.put((method, args, kwargs, done))
        return done

    @property
    def platform(self) -> str:
        """The GL platform the child renders with (waits for the child to have started)."""
        return self.status()["platform"]

    def status(self) -> dict:
        """The child's GL platform and peak resident memory (MB)."""
        return self._submit(_STATUS).result()

    # -- the Renderer's side the pipeline uses --
    def prepare(self, sizes: Sequence[tuple[int, int, bool]]) -> Future:
        """:meth:`Renderer.prepare` in the child; the future is done when the child has done it."""
        return self._submit("_prepare", [tuple(s) for s in sizes])

    def render_mesh(self, *args, **kwargs):
        return self._submit("render_mesh", *args, **kwargs).result()

    def overlay(self, *args, **kwargs):
        return self._submit("overlay", *args, **kwargs).result()

    def preview(self, *args, **kwargs):
        return self._submit("preview", *args, **kwargs).result()

    def close(self) -> None:
        """Let the child close its GL contexts and exit (waits for the calls queued before)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    def __enter__(self) -> "RenderProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _serve(device: str, requests: Connection, replies: Connection) -> int:
    """The child's loop: make the renderer, say so, answer each call until the parent is gone."""
    said: list[str] = []
    try:
        renderer = Renderer(device, log=said.append)
    except BaseException as exc:
        replies.send((False, _sendable(exc)))
        return 1
    replies.send((True, {"platform": renderer.platform, "said": said}))
    try:
        while True:
            try:
                method, args, kwargs = requests.recv()
            except EOFError:  # the parent closed its end (or died)
                return 0
            try:
                if method == _STATUS:
                    from inference.bench import peak_rss_mb

                    value, ok = {"platform": renderer.platform, "peak_rss_mb": peak_rss_mb()}, True
                else:
                    value, ok = getattr(renderer, method)(*args, **kwargs), True
            except Exception as exc:
                value, ok = _sendable(exc), False
            replies.send((ok, value))
    finally:
        try:
            renderer.close()
        except Exception:
            pass


def _sendable(exc: BaseException) -> BaseException:
    """``exc`` when it pickles, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def main(argv: list[str]) -> None:
    """The child's entry (``RenderProcess`` starts it): DEVICE REQUEST_FD REPLY_FD."""
    # a Ctrl-C or a SIGTERM to the parent's process group (a worker stopped for a deploy) is the
    # parent's to handle: it may still need a render to finish its job, and closes the pipe
    # when done, which ends this process (SIGKILL still does at once)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    device_arg, req_fd, rep_fd = argv[0], int(argv[1]), int(argv[2])
    try:
        code = _serve(device_arg, Connection(req_fd, writable=False), Connection(rep_fd, readable=False))
    except (BrokenPipeError, EOFError):  # the parent went away mid-reply
        code = 0
    os._exit(code)  # no interpreter teardown (GL contexts are gone with the process)

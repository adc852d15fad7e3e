"""The renderer in a child process: the same images as in this process, errors that reach the
caller, a child that never outlives its parent and is replaced when it dies."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from inference.stages.render import configure_gl_platform

configure_gl_platform("cpu")  # before anything imports pyrender / OpenGL

from inference.stages import render as R  # noqa: E402
from inference.stages.render_process import RenderProcess, RenderProcessError  # noqa: E402
from inference.types import Camera  # noqa: E402


def tetra(scale=0.4):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64) * scale
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int64)
    return v - v.mean(0), f


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def both():
    here, there = R.Renderer("cpu"), RenderProcess("cpu")
    yield here, there
    there.close()
    here.close()


def test_the_child_renders_what_this_process_renders(both):
    here, there = both
    v, f = tetra()
    cam = R.look_at_camera(v, "front", width=96, height=128)
    a, b = here.render_mesh(v, f, cam), there.render_mesh(v, f, cam)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert a[2].any()  # something was drawn
    photo = np.random.default_rng(0).integers(0, 255, (128, 96, 3), dtype=np.uint8)
    np.testing.assert_array_equal(here.overlay(photo, v, f, cam), there.overlay(photo, v, f, cam))
    uv = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float64)
    tex = np.random.default_rng(1).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    p1 = here.preview(v, f, uv, f, tex, size=64)
    p2 = there.preview(v, f, uv, f, tex, size=64)
    np.testing.assert_array_equal(p1, p2)
    assert p2.shape == (64, 128, 3)
    assert there.platform == "osmesa"  # the child's, once it has answered
    assert there.status()["peak_rss_mb"] > 10  # the child's own memory, for the bench


def test_a_prepare_is_a_future_that_completes(both):
    _, there = both
    done = there.prepare([(40, 30, False), (32, 32, True)])
    assert done.result(timeout=120) is None


def test_the_childs_error_reaches_the_caller_and_the_child_goes_on(both):
    _, there = both
    v, f = tetra()
    cam = Camera(100.0, 100.0, 32.0, 32.0, 64, 64, np.eye(3), np.array([0.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="camera is 64x64, photo is 48x48"):
        there.overlay(np.zeros((48, 48, 3), np.uint8), v, f, cam)
    assert there.render_mesh(v, f, cam)[2].any()  # the same child, still answering


def test_a_dead_child_fails_the_call_then_a_new_one_renders():
    r = RenderProcess("cpu")
    try:
        v, f = tetra()
        cam = R.look_at_camera(v, "front", width=48, height=48)
        assert r.render_mesh(v, f, cam)[2].any()
        first = r._child.pid
        os.kill(first, signal.SIGKILL)
        r._child.wait(10)
        with pytest.raises(RenderProcessError, match="render process failed during render_mesh"):
            r.render_mesh(v, f, cam)
        assert r.render_mesh(v, f, cam)[2].any()
        assert r._child.pid != first
    finally:
        r.close()
    with pytest.raises(RenderProcessError, match="closed"):
        r.render_mesh(v, f, cam)


def test_close_ends_the_child():
    r = RenderProcess("cpu")
    v, f = tetra()
    r.render_mesh(v, f, R.look_at_camera(v, "front", width=32, height=32))
    child = r._child
    r.close()
    assert child.poll() == 0
    r.close()  # twice is harmless


def test_the_child_does_not_outlive_a_killed_parent(tmp_path):
    code = textwrap.dedent("""
        import sys, time
        from inference.stages.render_process import RenderProcess
        import numpy as np
        from inference.stages import render as R
        r = RenderProcess("cpu")
        v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float) * 0.3
        f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
        r.render_mesh(v, f, R.look_at_camera(v, "front", width=32, height=32))
        print(r._child.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.kill()  # SIGKILL: no cleanup of its own runs
        parent.wait(10)
        deadline = time.monotonic() + 20
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_the_child_leaves_sigterm_and_sigint_to_its_parent():
    """A worker stopped by SIGTERM to its process group (or Ctrl-C) may still render its job:
    the signal must not take the renderer away from under it."""
    r = RenderProcess("cpu")
    try:
        v, f = tetra()
        cam = R.look_at_camera(v, "front", width=32, height=32)
        r.render_mesh(v, f, cam)
        for sig in (signal.SIGTERM, signal.SIGINT):
            os.kill(r._child.pid, sig)
        time.sleep(0.5)
        assert r._child.poll() is None
        assert r.render_mesh(v, f, cam)[2].any()
    finally:
        r.close()


def test_the_child_imports_this_checkout_whatever_the_working_directory(tmp_path, monkeypatch):
    """A folder with another ``inference`` package (an older checkout) as the working
    directory must not change what the child runs."""
    other = tmp_path / "inference"
    other.mkdir()
    (other / "__init__.py").write_text("raise ImportError('the wrong inference package')\n")
    monkeypatch.chdir(tmp_path)
    r = RenderProcess("cpu")
    try:
        v, f = tetra()
        assert r.render_mesh(v, f, R.look_at_camera(v, "front", width=32, height=32))[2].any()
    finally:
        r.close()


def test_a_create_starts_its_renderer_before_torch_is_imported():
    """``avatar create`` on the CPU starts the render process first, so the child's own start
    runs beside the torch import (nothing in that start may import torch)."""
    code = textwrap.dedent("""
        import sys
        from inference.cli import _early_renderer
        r = _early_renderer("cpu", print)
        print(type(r).__name__, "torch" in sys.modules, r.platform)
        r.close()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["RenderProcess", "False", "osmesa"], out.stderr


def test_the_pipeline_takes_a_started_renderer_or_replaces_one_it_cannot_use(weights_dir):
    from inference.pipeline import Pipeline, PipelineConfig

    given = RenderProcess("cpu")
    pipe = Pipeline(PipelineConfig(device="cpu", weights_dir=weights_dir), renderer=given)
    try:
        assert pipe.renderer is given
    finally:
        pipe.close()
    assert given._closed
    other = RenderProcess("cpu")
    pipe = Pipeline(PipelineConfig(device="cpu", weights_dir=weights_dir, render_process=False),
                    renderer=other)
    try:  # asked to render in this process: the given one is closed, not leaked
        assert isinstance(pipe.renderer, R.Renderer) and other._closed
    finally:
        pipe.close()



def test_what_the_child_prints_goes_to_stderr_not_stdout():
    """``avatar create --json`` prints one JSON document on stdout: a line a GL library prints in
    the render process must not land there (its stdout is the parent's stderr)."""
    code = textwrap.dedent("""
        import os
        from inference.stages.render_process import RenderProcess
        r = RenderProcess("cpu")
        r.status()
        child = r._child.pid
        print(os.readlink(f"/proc/{child}/fd/1") == os.readlink("/proc/self/fd/2"),
              os.readlink(f"/proc/{child}/fd/1") != os.readlink("/proc/self/fd/1"))
        r.close()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "True"], out.stderr


def test_a_hung_child_is_killed_the_call_fails_and_the_next_one_renders():
    """Nothing waits for ever on a GL driver that hangs: no answer within the call timeout
    kills the child and fails the call; the next call gets a new child."""
    r = RenderProcess("cpu")
    try:
        v, f = tetra()
        cam = R.look_at_camera(v, "front", width=32, height=32)
        r.render_mesh(v, f, cam)
        hung = r._child
        r.call_timeout_s = 1.0
        os.kill(hung.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(RenderProcessError, match="no answer to render_mesh within 1 s"):
            r.render_mesh(v, f, cam)
        assert time.monotonic() - t0 < 10
        assert hung.poll() is not None  # killed, not left stopped
        r.call_timeout_s = 60.0
        assert r.render_mesh(v, f, cam)[2].any() and r._child.pid != hung.pid
    finally:
        r.close()

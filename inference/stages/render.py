"""Offscreen rendering of body meshes with pyrender.

The OpenGL platform is chosen by :func:`configure_gl_platform` (OSMesa on CPU, EGL on CUDA
machines) and must be set before ``pyrender``/``OpenGL`` are first imported, so this module only
imports them lazily, inside functions.

One :class:`Renderer` owns one ``pyrender.OffscreenRenderer`` per viewport size and reuses it across
calls; the module-level functions use a process-wide instance (:func:`get_renderer`).

Every OpenGL call runs on one dedicated thread per process (:class:`GLThread`), whichever thread
asks: an EGL context is bound to the thread that made it current, and pyrender's EGL
``make_uncurrent`` does nothing, so a worker rendering from whichever ``asyncio.to_thread`` pool
thread is free would fail with ``EGL_BAD_ACCESS`` on its second job (OSMesa does not care, which is
why only the GPU path broke).

Camera model: the pyrender camera reproduces :meth:`inference.types.Camera.project` exactly, with
OpenCV's pixel convention (the centre of pixel ``(i, j)`` is at ``x = j, y = i``), so a vertex that
projects to ``(u, v)`` lands in pixel ``(round(v), round(u))``.

Colours given as ``(r, g, b)`` may be floats in ``[0, 1]`` or ints in ``[0, 255]``; they are sRGB
(what you see in the image); the renderer converts them to linear for shading.
"""
from __future__ import annotations

import atexit
import logging
import os
import queue
import subprocess
import sys
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import Future
from typing import Callable, Sequence, TypeVar

import numpy as np

from inference.types import Camera, focal_px_from_35mm  # noqa: F401 (re-exported)

RGB = Sequence[float]
T = TypeVar("T")
log = logging.getLogger("avatar.render")

SKIN = (0.86, 0.68, 0.58)  # default mesh colour (sRGB)
OVERLAY_BLUE = (0.55, 0.70, 0.95)  # "skin-blue" for overlays
PREVIEW_BG = (235, 235, 235)
_MAX_RENDERERS = 4  # cached viewport sizes (OSMesa: one context each)


# ---- platform ----------------------------------------------------------------------------------
def configure_gl_platform(device: str) -> str:
    """Set ``PYOPENGL_PLATFORM`` (only if unset): ``"egl"`` for ``cuda*`` devices, else ``"osmesa"``.

    Must run before anything imports ``pyrender`` or ``OpenGL``. Returns the platform in effect.
    """
    if "PYOPENGL_PLATFORM" not in os.environ:
        os.environ["PYOPENGL_PLATFORM"] = "egl" if str(device).startswith("cuda") else "osmesa"
    if os.environ["PYOPENGL_PLATFORM"] == "egl":
        # pyrender imports pyglet, whose GL module loads X11's libraries unless headless (a GPU
        # image has none: "'NoneType' object has no attribute 'XRenderFindVisualFormat'")
        os.environ.setdefault("PYGLET_HEADLESS", "1")
    return os.environ["PYOPENGL_PLATFORM"]


EGL_HINT = "For GPU rendering the container needs NVIDIA_DRIVER_CAPABILITIES with 'graphics' and NVIDIA's EGL"


def prepare_gl_platform(device: str, say: Callable[[str], None] | None = None) -> str:
    """:func:`configure_gl_platform`, then for EGL: render on the GPU this process computes on
    (``EGL_DEVICE_ID`` = its machine index, unless set) and fall back to OSMesa, saying so, when
    an EGL context cannot be made (no NVIDIA EGL in the image, no ``graphics`` capability): a
    slower render beats a worker that never starts. Returns the platform in effect."""
    from inference.gpu import machine_gpu_index

    platform = configure_gl_platform(device)
    if platform != "egl":
        return platform
    index = machine_gpu_index(str(device), os.environ.get("CUDA_VISIBLE_DEVICES"))
    if "EGL_DEVICE_ID" not in os.environ and index is not None:
        os.environ["EGL_DEVICE_ID"] = str(index)
    if "OpenGL" in sys.modules:  # the platform is fixed once PyOpenGL is imported: keep it
        return platform
    ok, why = probe_egl()
    if not ok:
        if not osmesa_available():  # a fallback that cannot render would fail every job later
            raise RuntimeError(f"cannot render: EGL failed on EGL device {os.environ.get('EGL_DEVICE_ID', 0)} "
                               f"({why}) and OSMesa, the CPU fallback, is not installed (Debian/Ubuntu: "
                               f"apt-get install libosmesa6). {EGL_HINT}")
        os.environ["PYOPENGL_PLATFORM"] = "osmesa"
        (say or log.warning)(f"EGL rendering failed on EGL device {os.environ.get('EGL_DEVICE_ID', 0)} "
                             f"({why}): falling back to OSMesa (CPU rendering, slower). {EGL_HINT}")
        return "osmesa"
    return platform


def osmesa_available() -> bool:
    """Whether OSMesa's library can be found (the CPU fallback when EGL cannot render)."""
    import ctypes.util

    return ctypes.util.find_library("OSMesa") is not None


def keep_egl_display() -> None:
    """pyrender's EGL platform ends each context with ``eglTerminate`` of its display, and every
    context on one GPU shares that display: deleting one renderer (a viewport evicted, a closed
    ``Renderer``) breaks all the others at their next ``eglMakeCurrent`` (EGL_BAD_CONTEXT or
    EGL_NOT_INITIALIZED). Seen on an H200 and with Mesa's EGL on a CPU. From the first call on,
    deleting a context destroys that context alone; the display lives as long as the process."""
    from pyrender.platforms import egl

    if getattr(egl.EGLPlatform.delete_context, "keeps_display", False):
        return

    def delete_context(self) -> None:
        from OpenGL.EGL import eglDestroyContext

        if self._egl_display is not None and self._egl_context is not None:
            eglDestroyContext(self._egl_display, self._egl_context)
        self._egl_context = None
        self._egl_display = None

    delete_context.keeps_display = True
    egl.EGLPlatform.delete_context = delete_context


def probe_egl(timeout_s: float = 120.0) -> tuple[bool, str]:
    """Whether an EGL context can be made here (in a child process: a failed attempt cannot
    leave this one with a half-initialised PyOpenGL)."""
    code = "import pyrender; r = pyrender.OffscreenRenderer(8, 8); r.delete()"
    env = {**os.environ, "PYOPENGL_PLATFORM": "egl"}
    try:
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"no context within {timeout_s:.0f} s"
    if r.returncode == 0:
        return True, ""
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    return False, lines[-1] if lines else f"exit code {r.returncode}"


class GLThread:
    """The one thread of this process that makes GL calls; :meth:`call` runs a function there
    and returns its result (or raises its exception) in the calling thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="avatar-gl", daemon=True)
        self._thread.start()

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def call(self, fn: Callable[..., T], *args) -> T:
        if threading.current_thread() is self._thread:  # already on it (nested calls)
            return fn(*args)
        return self.submit(fn, *args).result()

    def submit(self, fn: Callable[..., T], *args) -> "Future[T]":
        """Queue ``fn(*args)`` for the GL thread; its future holds the result or exception."""
        done: Future = Future()
        self._queue.put((fn, args, done))
        return done

    def _loop(self) -> None:
        while True:
            fn, args, done = self._queue.get()
            try:
                done.set_result(fn(*args))
            except BaseException as exc:  # handed to the caller
                done.set_exception(exc)


_GL_THREAD: GLThread | None = None
_GL_THREAD_LOCK = threading.Lock()


def gl_thread() -> GLThread:
    """The process-wide GL thread (started on first use)."""
    global _GL_THREAD
    with _GL_THREAD_LOCK:
        if _GL_THREAD is None:
            _GL_THREAD = GLThread()
        return _GL_THREAD


# ---- small helpers -----------------------------------------------------------------------------
def _rgb01(color: RGB) -> np.ndarray:
    """(r, g, b) as floats in [0, 1] or ints in [0, 255] → float array in [0, 1]."""
    c = np.asarray(color, dtype=np.float64).reshape(-1)[:3]
    if c.max(initial=0.0) > 1.0:
        c = c / 255.0
    return np.clip(c, 0.0, 1.0)


def _np(x, dtype=np.float64) -> np.ndarray:
    """Array-like or (any-device) torch tensor → numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) area-weighted unit vertex normals, oriented outwards for a closed mesh."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 * area
    n = np.zeros_like(v)
    for k in range(3):
        for c in range(3):
            n[:, c] += np.bincount(f[:, k], weights=fn[:, c], minlength=len(v))
    # a mesh wound clockwise has negative signed volume: flip so normals face outwards
    if np.einsum("ij,ij->", v[f[:, 0]], fn) < 0:
        n = -n
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return (n / np.maximum(norm, 1e-12)).astype(np.float32)


_SPLIT_CACHE: OrderedDict = OrderedDict()
_SPLIT_LOCK = threading.Lock()


def split_by_uv(faces: np.ndarray, face_uv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique (vertex, uv) corner pairs → (vertex index (N,), uv index (N,), new faces (F, 3)).

    Cached per (faces, face_uv) content, since a body model's topology never changes.
    """
    faces = np.asarray(faces, dtype=np.int64)
    face_uv = np.asarray(face_uv, dtype=np.int64)
    key = (faces.shape, hash(faces.tobytes()), face_uv.shape, hash(face_uv.tobytes()))
    with _SPLIT_LOCK:  # the export (GLB) and the render (preview) may ask from two threads
        hit = _SPLIT_CACHE.get(key)
        if hit is not None:
            _SPLIT_CACHE.move_to_end(key)
            return hit
    n_uv = int(face_uv.max()) + 1
    pair = faces.ravel() * n_uv + face_uv.ravel()
    uniq, inverse = np.unique(pair, return_inverse=True)
    out = (uniq // n_uv, uniq % n_uv, inverse.reshape(faces.shape).astype(np.int64))
    with _SPLIT_LOCK:
        _SPLIT_CACHE[key] = out
        while len(_SPLIT_CACHE) > 8:
            _SPLIT_CACHE.popitem(last=False)
    return out


def scale_camera(camera: Camera, s: float) -> Camera:
    """The same camera for an image resized by ``s`` (pixel centres stay consistent)."""
    w, h = max(1, int(round(camera.width * s))), max(1, int(round(camera.height * s)))
    sx, sy = w / camera.width, h / camera.height
    return Camera(
        fx=camera.fx * sx, fy=camera.fy * sy,
        cx=(camera.cx + 0.5) * sx - 0.5, cy=(camera.cy + 0.5) * sy - 0.5,
        width=w, height=h, R=np.array(camera.R, dtype=np.float64), t=np.array(camera.t, dtype=np.float64),
    )


def _look_rotation(forward: np.ndarray) -> np.ndarray:
    """Rows = OpenCV camera axes (x right, y down, z forward) in body coordinates, world up = +Y."""
    z = forward / np.linalg.norm(forward)
    up = np.array([0.0, 1.0, 0.0])
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:  # looking straight up/down
        x = np.array([1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z])


def _hull_points(v: np.ndarray) -> np.ndarray:
    """The convex hull's vertices (perspective-projected extremes always lie on them)."""
    if len(v) < 64:
        return v
    try:
        from scipy.spatial import ConvexHull

        return v[ConvexHull(v).vertices]
    except Exception:  # flat or degenerate point sets
        return v


_VIEW_DIRS = {  # where the camera sits relative to the body (unit vector, body frame)
    "front": np.array([0.0, 0.0, 1.0]),
    "back": np.array([0.0, 0.0, -1.0]),
    "side": np.array([1.0, 0.0, 0.0]),  # the body's left side
    "left": np.array([1.0, 0.0, 0.0]),
    "right": np.array([-1.0, 0.0, 0.0]),
}


def look_at_camera(
    vertices: np.ndarray,
    view: str = "front",
    size: int = 512,
    *,
    width: int | None = None,
    height: int | None = None,
    focal_px: float | None = None,
    focal_35mm: float = 50.0,
    distance: float | None = None,
    margin: float = 0.08,
    camera_height: float | None = None,
    aim_at_center: bool = True,
) -> Camera:
    """A pinhole camera looking at the body from ``view`` ("front", "side" = the body's left,
    "back", "left", "right").

    Image ``width`` x ``height`` (default ``size`` x ``size``); focal length ``focal_px`` or, if
    None, from ``focal_35mm``. ``distance`` is measured horizontally from the bbox centre; if None
    the camera is placed as close as possible with every vertex inside the image and ``margin``
    (fraction of each half-extent of the image) to spare. ``camera_height`` (body-frame y) defaults to the bbox
    centre height; with ``aim_at_center`` the optical axis goes through the bbox centre (tilting
    when the camera is higher or lower), otherwise it is horizontal.
    """
    if view not in _VIEW_DIRS:
        raise ValueError(f"view must be one of {sorted(_VIEW_DIRS)}, not {view!r}")
    w = int(width if width is not None else size)
    h = int(height if height is not None else size)
    f = float(focal_px) if focal_px is not None else focal_px_from_35mm(focal_35mm, w, h)
    v = _np(vertices).reshape(-1, 3)
    lo, hi = v.min(0), v.max(0)
    centre = (lo + hi) / 2
    direction = _VIEW_DIRS[view]
    cam_y = centre[1] if camera_height is None else float(camera_height)

    def make(d: float) -> Camera:
        C = centre + direction * d
        C[1] = cam_y
        target = centre if aim_at_center else C - direction
        R = _look_rotation(target - C)
        return Camera(fx=f, fy=f, cx=(w - 1) / 2, cy=(h - 1) / 2, width=w, height=h, R=R, t=-R @ C)

    if distance is None:
        pts = _hull_points(v)
        mx, my = (w / 2) * margin, (h / 2) * margin

        def fits(dist: float) -> bool:
            cam = make(dist)
            if np.any(pts @ cam.R[2] + cam.t[2] <= 1e-6):
                return False
            uv = cam.project(pts)
            return bool(np.all((uv[:, 0] >= mx - 0.5) & (uv[:, 0] <= w - 0.5 - mx)
                               & (uv[:, 1] >= my - 0.5) & (uv[:, 1] <= h - 0.5 - my)))

        # smallest distance at which all vertices fit: grow, then bisect
        lo_d = 1e-3
        hi_d = max(float(np.linalg.norm(hi - lo)), 1e-2)
        while not fits(hi_d):
            lo_d, hi_d = hi_d, hi_d * 2
            if hi_d > 1e6:
                raise ValueError("cannot frame these vertices")
        for _ in range(40):
            mid = (lo_d + hi_d) / 2
            lo_d, hi_d = (lo_d, mid) if fits(mid) else (mid, hi_d)
        d = hi_d
        distance = d
    return make(float(distance))


# ---- renderer ----------------------------------------------------------------------------------
class Renderer:
    """Owns one ``pyrender.OffscreenRenderer`` per viewport size (few kept) and renders meshes.

    Thread-safe: every GL call is marshalled to the process's GL thread, which also serialises
    them. Call :meth:`close` to free the GL contexts.
    """

    def __init__(self, device: str = "cpu", max_viewports: int = _MAX_RENDERERS,
                 log: Callable[[str], None] | None = None) -> None:
        self.platform = prepare_gl_platform(device, log)
        self._renderers: OrderedDict[tuple[int, int], object] = OrderedDict()
        self._max = max(1, int(max_viewports))
        self._gl = gl_thread()
        _LIVE.add(self)

    # -- GL plumbing --
    def _offscreen(self, width: int, height: int):
        import pyrender

        if self.platform == "egl":
            keep_egl_display()
        key = (int(width), int(height))
        r = self._renderers.get(key)
        if r is None:
            while len(self._renderers) >= self._max:
                _, old = self._renderers.popitem(last=False)
                old.delete()
            r = pyrender.OffscreenRenderer(key[0], key[1])
            self._renderers[key] = r
        else:
            self._renderers.move_to_end(key)
        return r

    def prepare(self, sizes: Sequence[tuple[int, int, bool]]) -> "Future[None]":
        """Make the GL context for each ``(width, height, textured)`` viewport this renderer
        has none for yet, and draw a small mesh through it (textured or flat), so its shader
        programs are compiled: on the GL thread, without waiting. A job starts this as its fit
        begins, and its render stage, after the fit, finds the work done (the first
        render in a process costs ~0.3-1 s more than later ones). The images rendered later
        are the same: nothing carries from one scene to the next but the compiled programs."""
        return self._gl.submit(self._prepare, [tuple(s) for s in sizes])

    def _prepare(self, sizes: list[tuple[int, int, bool]]) -> None:
        for w, h, textured in sizes:
            if (int(w), int(h)) in self._renderers:
                continue
            try:
                v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64) * 0.3
                f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int64)
                cam = look_at_camera(v, "front", width=int(w), height=int(h))
                if textured:
                    uv = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float64)
                    self.render_mesh(v, f, cam, uv=uv, face_uv=f, texture=np.zeros((4, 4, 3), np.uint8))
                else:
                    self.render_mesh(v, f, cam)
            except Exception as exc:  # the job's own render will meet (and report) the same
                log.warning("renderer warm-up at %dx%d failed: %s", w, h, exc)

    @staticmethod
    def overlay_size(width: int, height: int, max_side: int = 2048) -> tuple[int, int]:
        """The viewport :meth:`overlay` renders a ``width`` x ``height`` photo at."""
        s = min(1.0, max_side / max(width, height))
        return (width, height) if s >= 1.0 else (max(1, int(round(width * s))), max(1, int(round(height * s))))

    def close(self) -> None:
        """Free every GL context this renderer holds (on the GL thread that made them)."""
        self._gl.call(self._delete_all)

    def _delete_all(self) -> None:
        while self._renderers:
            _, r = self._renderers.popitem()
            try:
                r.delete()
            except Exception:  # context already gone (interpreter shutdown)
                pass

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- rendering --
    def render_mesh(
        self,
        vertices: np.ndarray,
        faces: np.ndarray,
        camera: Camera,
        *,
        uv: np.ndarray | None = None,
        face_uv: np.ndarray | None = None,
        texture: np.ndarray | None = None,
        color: RGB = SKIN,
        vertex_colors: np.ndarray | None = None,
        background: np.ndarray | RGB | None = None,
        roughness: float = 0.75,
        key_light: float = 2.6,
        fill_light: float = 0.9,
        ambient: float = 0.22,
        key_direction: Sequence[float] = (0.35, 0.5, 1.0),
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render a body-frame mesh through ``camera``.

        ``texture`` (H, W, 3) uint8 with ``uv`` (T, 2) (origin bottom-left, OBJ/glTF-style v up)
        and ``face_uv`` (F, 3); otherwise flat ``color`` or per-vertex ``vertex_colors`` (V, 3)
        (sRGB, floats in [0, 1] or uint8). ``background``: None (black), an rgb tuple or an
        (h, w, 3) image. Returns ``rgb`` uint8 (h, w, 3), ``depth`` float32 (h, w) (camera z in
        metres, 0 off the mesh) and ``mask`` bool (h, w). ``key_direction``: the direction the key light
        shines along, in the camera's axes (x right, y down, z forward).
        """
        import pyrender

        v = _np(vertices).reshape(-1, 3)
        f = _np(faces, np.int64).reshape(-1, 3)
        w, h = int(camera.width), int(camera.height)
        R = np.asarray(camera.R, dtype=np.float64)
        t = np.asarray(camera.t, dtype=np.float64).reshape(3)
        normals = vertex_normals(v, f)

        textured = texture is not None and uv is not None and face_uv is not None
        if textured:
            vi, ti, f_draw = split_by_uv(f, _np(face_uv, np.int64))
            positions = v[vi]
            normals = normals[vi]
            texcoords = _np(uv)[ti]
            tex = np.ascontiguousarray(_np(texture, None)[..., :3])
            if tex.dtype != np.uint8:
                tex = np.clip(tex * (255.0 if tex.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
            sampler = pyrender.Sampler(magFilter=pyrender.constants.GLTF.LINEAR,
                                       minFilter=pyrender.constants.GLTF.LINEAR_MIPMAP_LINEAR,
                                       wrapS=pyrender.constants.GLTF.CLAMP_TO_EDGE,
                                       wrapT=pyrender.constants.GLTF.CLAMP_TO_EDGE)
            material = pyrender.MetallicRoughnessMaterial(
                baseColorFactor=[1.0, 1.0, 1.0, 1.0], metallicFactor=0.0, roughnessFactor=roughness,
                baseColorTexture=pyrender.Texture(source=tex, source_channels="RGB", sampler=sampler),
            )
            colors = None
        else:
            positions, f_draw, texcoords = v, f, None
            if vertex_colors is not None:
                vc = np.asarray(vertex_colors, dtype=np.float64).reshape(len(v), -1)[:, :3]
                if vc.max(initial=0.0) > 1.0:
                    vc = vc / 255.0
                colors = np.concatenate([_srgb_to_linear(vc), np.ones((len(v), 1))], axis=1)
                base = [1.0, 1.0, 1.0, 1.0]
            else:
                colors = None
                base = [*_srgb_to_linear(_rgb01(color)), 1.0]
            material = pyrender.MetallicRoughnessMaterial(
                baseColorFactor=base, metallicFactor=0.0, roughnessFactor=roughness)

        prim = pyrender.Primitive(
            positions=positions.astype(np.float32), normals=normals.astype(np.float32),
            texcoord_0=None if texcoords is None else texcoords.astype(np.float32),
            color_0=None if colors is None else colors.astype(np.float32),
            indices=f_draw.astype(np.uint32), material=material,
        )
        mesh = pyrender.Mesh([prim])

        # clipping planes from the mesh's depth range
        z = v @ R[2] + t[2]
        zmax = float(z.max()) if len(z) else 10.0
        zmin_pos = float(z[z > 0].min()) if np.any(z > 0) else 0.05
        znear = max(1e-3, zmin_pos * 0.5)
        zfar = max(zmax * 1.5 + 0.1, znear * 10)

        # OpenCV pixel centres are integers, OpenGL's are at +0.5
        cam = pyrender.IntrinsicsCamera(fx=camera.fx, fy=camera.fy, cx=camera.cx + 0.5,
                                        cy=camera.cy + 0.5, znear=znear, zfar=zfar)
        cam_to_body = np.eye(4)
        cam_to_body[:3, :3] = R.T
        cam_to_body[:3, 3] = -R.T @ t
        pose = cam_to_body @ np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV → OpenGL camera axes

        scene = pyrender.Scene(bg_color=[0.0, 0.0, 0.0, 0.0], ambient_light=[ambient] * 3)
        scene.add(mesh)
        scene.add(cam, pose=pose)
        # key light from above-left of the camera, fill from the right; directions in camera frame
        for direction, intensity in ((tuple(key_direction), key_light), ((-0.6, 0.1, 1.0), fill_light)):
            if intensity <= 0:
                continue
            d_body = R.T @ (np.asarray(direction) / np.linalg.norm(direction))
            light_pose = np.eye(4)
            light_pose[:3, :3] = _light_rotation(d_body)
            scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=intensity), pose=light_pose)

        flags = pyrender.RenderFlags.RGBA | pyrender.RenderFlags.SKIP_CULL_FACES
        color_img, depth = self._gl.call(lambda: self._offscreen(w, h).render(scene, flags=flags))
        depth = np.asarray(depth, dtype=np.float32)
        mask = depth > 0
        rgb = _background(background, h, w)
        rgb[mask] = color_img[..., :3][mask]
        return rgb, depth, mask

    def overlay(
        self,
        photo: np.ndarray,
        vertices: np.ndarray,
        faces: np.ndarray,
        camera: Camera,
        alpha: float = 0.5,
        *,
        color: RGB = OVERLAY_BLUE,
        outline_color: RGB = (255, 255, 255),
        outline_px: int = 2,
        max_side: int = 2048,
    ) -> np.ndarray:
        """The mesh (flat colour, shaded) blended over ``photo`` with weight ``alpha`` where it
        covers the photo, plus an ``outline_px`` outline just inside its silhouette.

        Only pixels under the mesh change. ``camera`` must match the photo's size. Photos larger
        than ``max_side`` are rendered at reduced resolution and upsampled.
        """
        import cv2

        photo = np.asarray(photo)
        H, W = photo.shape[:2]
        if (camera.width, camera.height) != (W, H):
            raise ValueError(f"camera is {camera.width}x{camera.height}, photo is {W}x{H}")
        s = min(1.0, max_side / max(W, H))
        cam = camera if s >= 1.0 else scale_camera(camera, s)
        rgb, _, mask = self.render_mesh(vertices, faces, cam, color=color)
        if s < 1.0:
            rgb = cv2.resize(rgb, (W, H), interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST) > 0
        out = photo[..., :3].astype(np.float32).copy()
        a = float(np.clip(alpha, 0.0, 1.0))
        out[mask] = (1 - a) * out[mask] + a * rgb[mask].astype(np.float32)
        if outline_px > 0 and mask.any():
            k = np.ones((3, 3), np.uint8)
            inner = cv2.erode(mask.astype(np.uint8), k, iterations=int(outline_px),
                              borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
            edge = mask & ~inner
            out[edge] = (_rgb01(outline_color) * 255.0).astype(np.float32)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def preview(
        self,
        vertices: np.ndarray,
        faces: np.ndarray,
        uv: np.ndarray | None = None,
        face_uv: np.ndarray | None = None,
        texture: np.ndarray | None = None,
        size: int = 512,
        *,
        color: RGB = SKIN,
        background: RGB = PREVIEW_BG,
    ) -> np.ndarray:
        """Front (camera on +Z) and side (camera on +X, the body's left) views side by side,
        (size, 2*size, 3) uint8, same scale in both, whole body framed with a margin."""
        v = _np(vertices).reshape(-1, 3)
        f = focal_px_from_35mm(50.0, size, size)
        cams = {view: look_at_camera(v, view, size, focal_px=f) for view in ("front", "side")}
        # same distance for both views so they share a scale
        lo, hi = v.min(0), v.max(0)
        centre = (lo + hi) / 2
        d = max(float(np.linalg.norm(-c.R.T @ c.t - centre)) for c in cams.values())
        panels = []
        for view in ("front", "side"):
            cam = look_at_camera(v, view, size, focal_px=f, distance=d)
            rgb, _, _ = self.render_mesh(v, faces, cam, uv=uv, face_uv=face_uv, texture=texture,
                                         color=color, background=background)
            panels.append(rgb)
        return np.concatenate(panels, axis=1)


def _light_rotation(direction: np.ndarray) -> np.ndarray:
    """Rotation whose -Z axis points along ``direction`` (pyrender lights shine along local -Z)."""
    z = -np.asarray(direction, dtype=np.float64)
    z /= np.linalg.norm(z)
    a = np.array([0.0, 1.0, 0.0]) if abs(z[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = np.cross(a, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def _background(background, h: int, w: int) -> np.ndarray:
    if background is None:
        return np.zeros((h, w, 3), np.uint8)
    b = np.asarray(background)
    if b.ndim == 3:
        if b.shape[:2] != (h, w):
            raise ValueError(f"background is {b.shape[1]}x{b.shape[0]}, camera is {w}x{h}")
        return np.ascontiguousarray(b[..., :3]).astype(np.uint8, copy=True)
    return np.broadcast_to(np.rint(_rgb01(b) * 255).astype(np.uint8), (h, w, 3)).copy()


# ---- process-wide renderer ---------------------------------------------------------------------
_LIVE: "weakref.WeakSet[Renderer]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Free GL contexts before interpreter teardown (pyrender's __del__ then has nothing to do)."""
    for r in list(_LIVE):
        r.close()


_DEFAULT: Renderer | None = None
_DEFAULT_LOCK = threading.Lock()


def get_renderer(device: str = "cpu") -> Renderer:
    """The process-wide :class:`Renderer` (created on first use)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Renderer(device)
        return _DEFAULT


def close_renderer() -> None:
    """Close the process-wide renderer (a later call creates a fresh one)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is not None:
            _DEFAULT.close()
            _DEFAULT = None


def render_mesh(vertices, faces, camera: Camera, **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:meth:`Renderer.render_mesh` on the process-wide renderer."""
    return get_renderer().render_mesh(vertices, faces, camera, **kwargs)


def overlay(photo, vertices, faces, camera: Camera, alpha: float = 0.5, **kwargs) -> np.ndarray:
    """:meth:`Renderer.overlay` on the process-wide renderer."""
    return get_renderer().overlay(photo, vertices, faces, camera, alpha, **kwargs)


def preview(vertices, faces, uv=None, face_uv=None, texture=None, size: int = 512, **kwargs) -> np.ndarray:
    """:meth:`Renderer.preview` on the process-wide renderer."""
    return get_renderer().preview(vertices, faces, uv, face_uv, texture, size, **kwargs)

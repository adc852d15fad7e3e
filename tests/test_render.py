"""Offscreen rendering: projection matches Camera, textures are upright, overlay/preview/photos."""
from __future__ import annotations

import os

import numpy as np
import pytest

from inference.stages.render import configure_gl_platform

configure_gl_platform("cpu")  # before anything imports pyrender / OpenGL

import trimesh  # noqa: E402

from inference.stages import render as R  # noqa: E402
from inference.eval import scenes as S  # noqa: E402
from inference.types import Camera  # noqa: E402


@pytest.fixture(scope="module")
def renderer():
    r = R.Renderer("cpu")
    yield r
    r.close()


def box(extents, centre=(0.0, 0.0, 0.0)):
    m = trimesh.creation.box(extents=extents)
    return np.asarray(m.vertices) + np.asarray(centre), np.asarray(m.faces)


def body_like():
    """A crude 'person': torso box + a head box in front-top (so front and side views differ)."""
    v1, f1 = box((0.45, 1.4, 0.22), (0.0, 0.7, 0.0))
    v2, f2 = box((0.2, 0.25, 0.22), (0.0, 1.55, 0.04))
    return np.concatenate([v1, v2]), np.concatenate([f1, f2 + len(v1)])


def mask_bbox(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=float)


def rot(axis, deg):
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def test_configure_gl_platform(monkeypatch):
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    assert R.configure_gl_platform("cuda:0") == "egl"
    assert os.environ["PYOPENGL_PLATFORM"] == "egl"
    assert R.configure_gl_platform("cpu") == "egl"  # already set: left alone
    monkeypatch.delenv("PYOPENGL_PLATFORM")
    assert R.configure_gl_platform("cpu") == "osmesa"


@pytest.mark.parametrize("target, roll", [(None, 0.0), ((0.8, 0.7, 0.5), 20.0)])
def test_mask_matches_camera_projection(renderer, target, roll):
    # an off-centre box, an anisotropic camera with an off-centre principal point; the second
    # camera is off to the side, tilted and rolled
    v, f = box((0.5, 0.8, 0.3), (0.15, 1.0, -0.1))
    if target is None:
        C = np.array([0.4, 1.2, 3.0])
        Rm = np.diag([1.0, -1.0, -1.0])
    else:
        C = np.array([2.0, 1.9, 2.5])
        Rm = rot("z", roll) @ R._look_rotation(np.array([0.15, 1.0, -0.1]) - C)
    cam = Camera(fx=420.0, fy=380.0, cx=150.3, cy=110.8, width=320, height=240, R=Rm, t=-Rm @ C)
    rgb, depth, mask = renderer.render_mesh(v, f, cam, background=(10, 20, 30))
    assert rgb.shape == (240, 320, 3) and rgb.dtype == np.uint8
    assert depth.shape == (240, 320) and depth.dtype == np.float32
    assert mask.dtype == bool and 500 < mask.sum() < mask.size / 2
    uv = cam.project(v)
    expected = np.array([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()])
    # a pixel is drawn when its centre is inside: the last drawn pixel's index lies up to 1.5 px
    # inside the projected edge (OSMesa stays within 1.0 here, NVIDIA's EGL came to 1.18)
    assert np.abs(mask_bbox(mask) - expected).max() <= 1.5 + 1e-6
    # background kept outside, depth is camera z (metres) inside
    assert np.all(rgb[~mask] == (10, 20, 30))
    assert np.all(depth[~mask] == 0)
    zc = (v @ Rm.T + cam.t)[:, 2]
    assert zc.min() - 1e-3 <= depth[mask].min() and depth[mask].max() <= zc.max() + 1e-3


def test_depth_at_pixel(renderer):
    # a front-facing plane at z = 0.2 seen from z = 2.2: depth 2.0 everywhere on it
    v = np.array([[-0.5, 0.5, 0.2], [0.5, 0.5, 0.2], [0.5, 1.5, 0.2], [-0.5, 1.5, 0.2]])
    f = np.array([[0, 1, 2], [0, 2, 3]])
    cam = R.look_at_camera(v, "front", 64, distance=2.0)
    _, depth, mask = renderer.render_mesh(v, f, cam)
    assert mask[32, 32]
    np.testing.assert_allclose(depth[mask], 2.0, atol=2e-3)


def test_texture_is_upright_and_not_mirrored(renderer):
    # quad facing the front camera; uv origin bottom-left; texture: top half red, bottom blue,
    # a green strip on its left edge (u ~ 0 at the body's right = image left from the front)
    v = np.array([[-0.5, 0.0, 0.0], [0.5, 0.0, 0.0], [0.5, 1.0, 0.0], [-0.5, 1.0, 0.0]])
    f = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    tex = np.zeros((64, 64, 3), np.uint8)
    tex[:32] = (255, 0, 0)
    tex[32:] = (0, 0, 255)
    tex[:, :8] = (0, 255, 0)
    cam = R.look_at_camera(v, "front", 128, margin=0.1)
    rgb, _, mask = renderer.render_mesh(v, f, cam, uv=uv, face_uv=f, texture=tex)
    x0, y0, x1, y1 = mask_bbox(mask).astype(int)
    top = rgb[y0 + 5: (y0 + y1) // 2 - 5, (x0 + x1) // 2].astype(int)
    bottom = rgb[(y0 + y1) // 2 + 5: y1 - 5, (x0 + x1) // 2].astype(int)
    assert np.all(top[:, 0] > top[:, 2] + 100), "top of the quad should be red"
    assert np.all(bottom[:, 2] > bottom[:, 0] + 100), "bottom of the quad should be blue"
    left = rgb[(y0 + y1) // 2, x0 + 3].astype(int)
    right = rgb[(y0 + y1) // 2, x1 - 3].astype(int)
    assert left[1] > left[0] + 100 and left[1] > left[2] + 100, "u = 0 should be on the image left"
    assert right[1] < 100


def test_textured_mesh_with_uv_seams(renderer):
    # a cube whose faces each have their own uv square (so corners split by (v, vt) pairs)
    v, f = box((1.0, 1.0, 1.0), (0.0, 0.5, 0.0))
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    face_uv = np.tile([0, 1, 2], (len(f), 1))
    vi, ti, nf = R.split_by_uv(f, face_uv)
    assert nf.shape == f.shape and np.array_equal(vi[nf], f) and np.array_equal(ti[nf], face_uv)
    tex = np.full((8, 8, 3), (0, 200, 0), np.uint8)
    cam = R.look_at_camera(v, "front", 96)
    rgb, _, mask = renderer.render_mesh(v, f, cam, uv=uv, face_uv=face_uv, texture=tex)
    px = rgb[mask].astype(int)
    assert mask.sum() > 1000
    assert np.median(px[:, 1]) > np.median(px[:, 0]) + 80  # green texture shows


def test_vertex_colors_and_shading(renderer):
    v, f = body_like()
    cam = R.look_at_camera(v, "front", 128)
    cols = np.zeros((len(v), 3))
    cols[:, 0] = 1.0
    rgb, _, mask = renderer.render_mesh(v, f, cam, vertex_colors=cols)
    px = rgb[mask].astype(int)
    assert np.median(px[:, 0]) > 150 and np.median(px[:, 1]) < 30
    # a sphere is shaded: bright towards the key light, darker towards the rim
    s = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    sv = np.asarray(s.vertices) + [0, 1, 0]
    cam = R.look_at_camera(sv, "front", 128)
    rgb, _, mask = renderer.render_mesh(sv, np.asarray(s.faces), cam)
    lum = rgb.astype(float).mean(-1)[mask]
    assert lum.max() - lum.min() > 60


def test_renderer_reused_per_size_and_closed():
    r = R.Renderer("cpu")
    try:
        v, f = box((1, 1, 1), (0, 0.5, 0))
        cam = R.look_at_camera(v, "front", 64)
        r.render_mesh(v, f, cam)
        first = r._renderers[(64, 64)]
        r.render_mesh(v, f, cam)
        assert r._renderers[(64, 64)] is first and len(r._renderers) == 1
        r.render_mesh(v, f, R.look_at_camera(v, "front", 48))
        assert len(r._renderers) == 2
    finally:
        r.close()
    assert not r._renderers


def test_overlay_changes_only_pixels_under_mesh(renderer):
    v, f = body_like()
    cam = R.look_at_camera(v, "front", width=96, height=160)
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, size=(160, 96, 3), dtype=np.uint8)
    out = renderer.overlay(photo, v, f, cam, alpha=0.5)
    assert out.shape == photo.shape and out.dtype == np.uint8
    _, _, mask = renderer.render_mesh(v, f, cam)
    assert np.array_equal(out[~mask], photo[~mask])
    changed = np.any(out != photo, axis=-1)
    assert changed[mask].mean() > 0.9
    # outline: white pixels on the silhouette border, none deep inside
    white = np.all(out == 255, axis=-1)
    import cv2

    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2) > 0
    border = mask & ~inner
    assert white[border].mean() > 0.95 and not white[inner].any()
    # blending: alpha 0 leaves the photo except the outline, alpha 1 is the render
    out0 = renderer.overlay(photo, v, f, cam, alpha=0.0, outline_px=0)
    assert np.array_equal(out0, photo)
    with pytest.raises(ValueError):
        renderer.overlay(photo[:100], v, f, cam)


def test_a_prepared_viewport_renders_what_a_fresh_one_does():
    """prepare() makes the contexts (and compiles the programs) ahead of the job's render, on
    the GL thread; what the job then renders is the same, pixel for pixel."""
    v, f = box((0.5, 1.6, 0.3), (0, 0.8, 0))
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    face_uv = np.tile([0, 1, 2], (len(f), 1))
    tex = np.full((4, 4, 3), (200, 30, 30), np.uint8)
    photo = np.full((90, 70, 3), 40, np.uint8)
    cam = R.look_at_camera(v, "front", width=70, height=90)
    images = []
    for prepared in (False, True):
        r = R.Renderer("cpu")
        try:
            if prepared:
                r.prepare([(96, 96, True), (*r.overlay_size(70, 90), False)]).result()
                assert set(r._renderers) == {(96, 96), (70, 90)}
            images.append((r.preview(v, f, uv, face_uv, tex, size=96), r.overlay(photo, v, f, cam)))
        finally:
            r.close()
    for fresh, prepared in zip(*images):
        assert np.array_equal(fresh, prepared)


def test_overlay_size_is_the_viewport_overlay_renders_at():
    assert R.Renderer.overlay_size(810, 1080) == (810, 1080)
    assert R.Renderer.overlay_size(2598, 4618) == (1152, 2048)
    assert R.Renderer.overlay_size(300, 500, max_side=250) == (150, 250)


def test_overlay_large_photo_is_downscaled(renderer):
    v, f = body_like()
    cam = R.look_at_camera(v, "front", width=300, height=500)
    photo = np.full((500, 300, 3), 40, np.uint8)
    out = renderer.overlay(photo, v, f, cam, max_side=250)
    _, _, mask = renderer.render_mesh(v, f, cam)
    changed = np.any(out != photo, axis=-1)
    assert out.shape == photo.shape
    assert (changed ^ mask).mean() < 0.01  # same coverage up to rounding at the edge


def test_preview_two_views(renderer):
    v, f = body_like()
    img = renderer.preview(v, f, size=160)
    assert img.shape == (160, 320, 3) and img.dtype == np.uint8
    bg = np.array(R.PREVIEW_BG)
    front, side = img[:, :160], img[:, 160:]
    fg_front = np.any(front != bg, axis=-1)
    fg_side = np.any(side != bg, axis=-1)
    assert fg_front.sum() > 500 and fg_side.sum() > 500
    assert not np.array_equal(front, side)
    # the body is 0.45 m wide and 0.22-0.26 m deep: the side view is narrower, same height
    wf = np.ptp(np.nonzero(fg_front)[1])
    ws = np.ptp(np.nonzero(fg_side)[1])
    hf = np.ptp(np.nonzero(fg_front)[0])
    hs = np.ptp(np.nonzero(fg_side)[0])
    assert ws < 0.7 * wf and abs(hf - hs) <= 0.04 * hf
    # framed with a margin: nothing touches the border
    for fg in (fg_front, fg_side):
        assert not (fg[0].any() or fg[-1].any() or fg[:, 0].any() or fg[:, -1].any())


def test_preview_textured(renderer):
    v, f = box((0.5, 1.6, 0.3), (0, 0.8, 0))
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    face_uv = np.tile([0, 1, 2], (len(f), 1))
    tex = np.full((4, 4, 3), (200, 30, 30), np.uint8)
    img = renderer.preview(v, f, uv, face_uv, tex, size=96)
    fg = np.any(img != np.array(R.PREVIEW_BG), axis=-1)
    px = img[fg].astype(int)
    assert np.median(px[:, 0]) > np.median(px[:, 1]) + 60


def test_look_at_camera_views():
    v, _ = body_like()
    front = R.look_at_camera(v, "front", width=300, height=400, margin=0.1)
    side = R.look_at_camera(v, "side", width=300, height=400, margin=0.1)
    centre = (v.min(0) + v.max(0)) / 2
    cf, cs = -front.R.T @ front.t, -side.R.T @ side.t
    assert cf[2] > centre[2] + 1 and abs(cf[0] - centre[0]) < 1e-9
    assert cs[0] > centre[0] + 1 and abs(cs[2] - centre[2]) < 1e-9
    for cam in (front, side):
        assert np.allclose(cam.R @ cam.R.T, np.eye(3)) and np.isclose(np.linalg.det(cam.R), 1)
        uv = cam.project(v)
        assert uv[:, 0].min() >= 0.1 * 150 - 1 and uv[:, 0].max() <= 300 - 0.1 * 150
        assert uv[:, 1].min() >= 0.1 * 200 - 1 and uv[:, 1].max() <= 400 - 0.1 * 200
        # tight: some vertex touches the margin
        slack = min(uv[:, 0].min() - (15 - 0.5), (300 - 0.5 - 15) - uv[:, 0].max(),
                    uv[:, 1].min() - (20 - 0.5), (400 - 0.5 - 20) - uv[:, 1].max())
        assert -1e-6 <= slack < 0.5
    # up is up; from the front the body's left (+x) is image right; from its left side its
    # front (+z) is image left
    assert front.project(np.array([[0, 1.6, 0]]))[0, 1] < front.project(np.array([[0, 0.1, 0]]))[0, 1]
    assert front.project(np.array([[0.2, 1, 0]]))[0, 0] > front.project(np.array([[-0.2, 1, 0]]))[0, 0]
    assert side.project(np.array([[0, 1, 0.1]]))[0, 0] < side.project(np.array([[0, 1, -0.1]]))[0, 0]
    # fixed distance and a raised camera aimed at the centre: centre projects to the image centre
    cam = R.look_at_camera(v, "front", width=300, height=400, distance=3.0, camera_height=1.5)
    np.testing.assert_allclose(cam.project(centre[None])[0], [149.5, 199.5], atol=1e-6)
    flat = R.look_at_camera(v, "front", width=300, height=400, distance=3.0, camera_height=1.5,
                            aim_at_center=False)
    np.testing.assert_allclose(flat.R, np.diag([1.0, -1.0, -1.0]), atol=1e-12)
    with pytest.raises(ValueError):
        R.look_at_camera(v, "top")


def test_synthetic_photo(renderer):
    v, f = body_like()
    cam = R.look_at_camera(v, "front", width=120, height=200, distance=3.0, camera_height=1.3)
    shirt = np.zeros(len(v), bool)
    shirt[:8] = True  # torso box
    img = S.synthetic_photo(renderer, v, f, cam, clothing=(20, 40, 200), clothing_mask=shirt, rng=3)
    assert img.shape == (200, 120, 3) and img.dtype == np.uint8
    again = S.synthetic_photo(renderer, v, f, cam, clothing=(20, 40, 200), clothing_mask=shirt, rng=3)
    assert np.array_equal(img, again)
    _, _, mask = renderer.render_mesh(v, f, cam)
    body = img[mask].astype(int)
    back = img[~mask].astype(int)
    assert np.median(body[:, 2]) > np.median(body[:, 0]) + 50  # mostly blue shirt
    assert back.std(0).mean() > 8  # background is not flat
    flat = S.synthetic_photo(renderer, v, f, cam, background=(128, 128, 128), noise_sigma=0)
    import cv2

    near = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # anti-aliased edge
    assert np.abs(flat[~near].astype(int) - 128).max() <= 1
    noisy = S.synthetic_photo(renderer, v, f, cam, background="noise")
    assert noisy.shape == img.shape and not np.array_equal(noisy, img)
    labels = np.zeros(len(v), int)
    labels[:8], labels[8:] = 1, 2
    two = S.synthetic_photo(renderer, v, f, cam, clothing=[(200, 20, 20), (20, 200, 20)],
                                   clothing_mask=labels, noise_sigma=0)
    assert two[mask].astype(int)[:, 1].max() > 150 and two[mask].astype(int)[:, 0].max() > 150
    with pytest.raises(ValueError):
        S.synthetic_photo(renderer, v, f, cam, background="plaid")


def test_module_level_functions_share_a_renderer():
    v, f = body_like()
    cam = R.look_at_camera(v, "front", 64)
    rgb, depth, mask = R.render_mesh(v, f, cam)
    assert mask.any() and R.get_renderer() is R.get_renderer()
    assert R.preview(v, f, size=64).shape == (64, 128, 3)
    R.close_renderer()


@pytest.mark.slow
def test_synthetic_photo_of_anny_is_detected_by_yolo(renderer, weights_dir):
    """The synthetic photos used by tests/eval must look like a person to the pose detector."""
    from inference.bodies.anny_body import AnnyBody
    weights = weights_dir / "yolo11n-pose.pt"
    from inference.compat import ensure_torchvision_nms
    from inference.types import Subject

    ensure_torchvision_nms()
    from ultralytics import YOLO

    body = AnnyBody("male")
    shape = body.initial_shape(Subject(178, "male", 74))
    rest = body.rest(shape)
    posed = body.posed(shape, body.standard_pose(shape, "apose"))
    va = posed.vertices[0].numpy()
    masks = S.outfit_masks(rest.vertices[0].numpy(), rest.keypoints[0].numpy())
    labels = np.zeros(len(va), int)
    labels[masks["top"]], labels[masks["bottom"]], labels[masks["shoes"]] = 1, 2, 3
    cam = R.look_at_camera(va, "front", width=768, height=1024, distance=3.0, camera_height=1.4)
    img = S.synthetic_photo(renderer, va, body.faces, cam, clothing=[(50, 90, 150), (60, 60, 75), (25, 25, 25)],
                                   clothing_mask=labels, hair_mask=masks["hair"])
    res = YOLO(str(weights)).predict(img[..., ::-1].copy(), verbose=False, device="cpu")[0]
    assert len(res.boxes) >= 1 and float(res.boxes.conf[0]) > 0.6
    kp_conf = res.keypoints.conf[0].numpy()
    assert np.all(kp_conf[5:] > 0.5)  # shoulders down to ankles
    kp = res.keypoints.xy[0].numpy()
    err = np.linalg.norm(kp - cam.project(posed.keypoints[0].numpy()), axis=1)
    assert np.median(err) < 15


def test_renders_from_two_threads_run_on_one_gl_thread(renderer, monkeypatch):
    """EGL contexts belong to a thread: calls from any thread (a worker's to_thread pool) must
    reach GL on the same one. OSMesa would render either way; the recorded thread proves it."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import pyrender

    gl_threads = []
    real = pyrender.OffscreenRenderer.render

    def spy(self, *args, **kwargs):
        gl_threads.append(threading.get_ident())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pyrender.OffscreenRenderer, "render", spy)
    v, f = body_like()
    cam = R.look_at_camera(v, "front", 96)
    callers, images = [], []
    for name in ("job-1", "job-2"):  # in turn, each from its own fresh thread
        with ThreadPoolExecutor(1, thread_name_prefix=name) as pool:
            callers.append(pool.submit(threading.get_ident).result())
            images.append(pool.submit(lambda: renderer.render_mesh(v, f, cam)[0]).result())
    assert len(gl_threads) == 2 and gl_threads[0] == gl_threads[1] == R.gl_thread().ident
    assert gl_threads[0] not in callers and threading.get_ident() not in gl_threads
    assert np.array_equal(images[0], images[1]) and images[0].any()


def test_a_gl_error_reaches_the_caller(renderer):
    with pytest.raises(ZeroDivisionError):
        R.gl_thread().call(lambda: 1 / 0)
    assert R.gl_thread().call(lambda x: x + 1, 41) == 42  # the thread lives on


def test_egl_falls_back_to_osmesa_with_a_log_line(monkeypatch):
    import sys

    lines = []
    monkeypatch.setenv("PYOPENGL_PLATFORM", "egl")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    monkeypatch.delenv("EGL_DEVICE_ID", raising=False)
    monkeypatch.delitem(sys.modules, "OpenGL", raising=False)  # as in a fresh worker process
    monkeypatch.setattr(R, "probe_egl", lambda: (False, "EGLError: EGL_NOT_INITIALIZED"))
    assert R.prepare_gl_platform("cuda:0", lines.append) == "osmesa"
    assert os.environ["PYOPENGL_PLATFORM"] == "osmesa"
    assert os.environ["EGL_DEVICE_ID"] == "2"  # the pinned GPU's machine index, not 0
    assert len(lines) == 1 and "falling back to OSMesa" in lines[0] and "EGL_NOT_INITIALIZED" in lines[0]


def test_no_egl_and_no_osmesa_is_one_clear_error(monkeypatch):
    """A GPU image without OSMesa: a fallback that cannot render would fail every job later."""
    import sys

    monkeypatch.setenv("PYOPENGL_PLATFORM", "egl")
    monkeypatch.delitem(sys.modules, "OpenGL", raising=False)
    monkeypatch.setattr(R, "probe_egl", lambda: (False, "AttributeError: no XRenderFindVisualFormat"))
    monkeypatch.setattr(R, "osmesa_available", lambda: False)
    with pytest.raises(RuntimeError, match="XRenderFindVisualFormat.*libosmesa6"):
        R.prepare_gl_platform("cuda:0", print)
    assert os.environ["PYOPENGL_PLATFORM"] == "egl"  # nothing switched to a platform that cannot work


def test_osmesa_is_found_here():
    assert R.osmesa_available()  # setup installs libosmesa6: the CPU renders with it


def test_doctor_says_how_a_worker_will_render(monkeypatch):
    """``avatar doctor``'s rendering line: here (no GPU) OSMesa; on a GPU, EGL, or OSMesa in its
    stead (said, with the fix for EGL), or a failure with both fixes when neither can render."""
    from service.doctor import rendering

    here = rendering("cpu")
    assert here.ok and "OSMesa" in here.detail
    monkeypatch.setattr(R, "probe_egl", lambda: (True, ""))
    assert rendering("cuda:0").ok and "EGL (on the GPU)" in rendering("cuda:0").detail
    monkeypatch.setattr(R, "probe_egl", lambda: (False, "EGLError: EGL_NOT_INITIALIZED"))
    fallback = rendering("cuda:0")
    assert fallback.ok and "EGL_NOT_INITIALIZED" in fallback.detail and "OSMesa" in fallback.detail
    monkeypatch.setattr(R, "osmesa_available", lambda: False)
    none = rendering("cuda:0")
    assert not none.ok and "libosmesa6" in none.fix and "graphics" in none.fix
    assert not rendering("cpu").ok and "libosmesa6" in rendering("cpu").fix


def test_egl_is_kept_when_it_works(monkeypatch):
    import sys

    monkeypatch.delenv("PYOPENGL_PLATFORM")
    monkeypatch.setenv("EGL_DEVICE_ID", "5")  # set by hand: left alone
    monkeypatch.delitem(sys.modules, "OpenGL", raising=False)
    monkeypatch.setattr(R, "probe_egl", lambda: (True, ""))
    assert R.prepare_gl_platform("cuda:1", print) == "egl" and os.environ["EGL_DEVICE_ID"] == "5"


def test_egl_probe_fails_on_a_device_that_does_not_exist(monkeypatch):
    monkeypatch.setenv("EGL_DEVICE_ID", "99")
    ok, why = R.probe_egl()
    assert not ok and why


EGL_CONTEXTS_CHILD = r"""
import json, os, sys
import numpy as np
os.environ["PYOPENGL_PLATFORM"] = "egl"
from inference.stages import render as R
v = np.array([[-0.3, -0.9, 0.0], [0.3, -0.9, 0.0], [0.0, 0.9, 0.1], [0.0, 0.0, 0.3]])
f = np.array([[0, 1, 2], [0, 3, 1], [1, 3, 2], [2, 3, 0]])
a, b = R.Renderer("cpu", max_viewports=1), R.Renderer("cpu")
if a.platform != "egl":
    print(json.dumps({"platform": a.platform})); sys.exit(0)
first = b.render_mesh(v, f, R.look_at_camera(v, "front", 64))[0]
a.render_mesh(v, f, R.look_at_camera(v, "front", 48))
a.render_mesh(v, f, R.look_at_camera(v, "front", 40))  # one viewport kept: the 48 px one is deleted
a.close()
again = b.render_mesh(v, f, R.look_at_camera(v, "front", 64))[0]
print(json.dumps({"platform": "egl", "same": bool(np.array_equal(first, again)), "drawn": bool(first.any())}))
"""


def test_deleting_one_egl_context_leaves_the_others_working(tmp_path):
    """pyrender ends an EGL context with eglTerminate of the display all contexts share; the
    renderer deletes contexts (an evicted viewport, a closed Renderer) without breaking the
    rest. EGL here is whatever the machine has (Mesa's on a CPU, NVIDIA's on a GPU)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "EGL_DEVICE_ID": "0"}
    r = subprocess.run([sys.executable, "-c", EGL_CONTEXTS_CHILD], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if out["platform"] != "egl":
        pytest.skip("no EGL context can be made on this machine")
    assert out == {"platform": "egl", "same": True, "drawn": True}

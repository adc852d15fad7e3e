"""Tests for inference.stages.texture: baking a synthetic photo onto simple UV-mapped meshes."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from inference.stages.texture import bake_texture, depth_buffer, skin_color, uv_rasterize
from inference.types import Camera

RED = np.array([220, 30, 30], np.uint8)
GREEN = np.array([30, 200, 40], np.uint8)
BLUE = np.array([20, 40, 230], np.uint8)
SIZE = 256


def _camera(t=(0.0, 1.0, 2.0), size=640, f=800.0) -> Camera:
    # default R = diag(1, -1, -1): the camera looks at the body's front (+Z) from in front
    return Camera(fx=f, fy=f, cx=size / 2, cy=size / 2, width=size, height=size,
                  t=np.array(t, dtype=np.float64))


def _grid(o, a, b, n, uv0, uv1):
    """An n×n grid patch o + s a + t b (s, t in [0, 1]); a × b is its outward normal; UVs span
    the rectangle uv0..uv1 with u along s and v along t."""
    s, t = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1), indexing="ij")
    s, t = s.ravel(), t.ravel()
    v = np.asarray(o) + s[:, None] * np.asarray(a) + t[:, None] * np.asarray(b)
    uv = np.stack([uv0[0] + s * (uv1[0] - uv0[0]), uv0[1] + t * (uv1[1] - uv0[1])], axis=1)
    idx = lambda i, j: i * (n + 1) + j  # noqa: E731
    tris = []
    for i in range(n):
        for j in range(n):
            tris.append((idx(i, j), idx(i + 1, j), idx(i + 1, j + 1)))
            tris.append((idx(i, j), idx(i + 1, j + 1), idx(i, j + 1)))
    return v, uv, np.array(tris, dtype=np.int64)


# box: x in [-W, W], y in [Y0 - H, Y0 + H], z in [-D, D]; six UV islands in a 3 × 2 atlas
W_, H_, D_, Y0, MARGIN = 0.2, 0.2, 0.1, 1.0, 0.02
BOX_SIDES = {  # name: (origin, a, b, atlas cell (col, row from the top))
    "front": ((-W_, Y0 - H_, D_), (2 * W_, 0, 0), (0, 2 * H_, 0), (0, 0)),
    "back": ((W_, Y0 - H_, -D_), (-2 * W_, 0, 0), (0, 2 * H_, 0), (1, 0)),
    "right_x": ((W_, Y0 - H_, D_), (0, 0, -2 * D_), (0, 2 * H_, 0), (2, 0)),  # +X side
    "left_x": ((-W_, Y0 - H_, -D_), (0, 0, 2 * D_), (0, 2 * H_, 0), (0, 1)),  # -X side
    "top": ((-W_, Y0 + H_, D_), (2 * W_, 0, 0), (0, 0, -2 * D_), (1, 1)),
    "bottom": ((-W_, Y0 - H_, -D_), (2 * W_, 0, 0), (0, 0, 2 * D_), (2, 1)),
}


def _cell_uv(cell):
    c, r = cell
    return (c / 3 + MARGIN, 1 - (r + 1) / 2 + MARGIN), ((c + 1) / 3 - MARGIN, 1 - r / 2 - MARGIN)


def _box(n=8):
    """A closed, welded box (outward CCW winding) with one UV island per side."""
    vs, uvs, fs, fuvs = [], [], [], []
    nv = 0
    for o, a, b, cell in BOX_SIDES.values():
        v, uv, f = _grid(o, a, b, n, *_cell_uv(cell))
        vs.append(v)
        uvs.append(uv)
        fs.append(f + nv)
        fuvs.append(f + nv)
        nv += len(v)
    v, uv = np.concatenate(vs), np.concatenate(uvs)
    f, fuv = np.concatenate(fs), np.concatenate(fuvs)
    # weld positions shared by neighbouring sides (UVs stay per island)
    key = np.round(v * 1e6).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return v[first], inverse.ravel()[f], uv, fuv


def _region(name, s_range, t_range, size=SIZE):
    """Texture (rows, cols) slices of the sub-rectangle s_range × t_range of a box side."""
    (u0, v0), (u1, v1) = _cell_uv(BOX_SIDES[name][3])
    us = [u0 + s * (u1 - u0) for s in s_range]
    vs = [v0 + t * (v1 - v0) for t in t_range]
    cols = slice(int(np.ceil(min(us) * size)), int(np.floor(max(us) * size)))
    rows = slice(int(np.ceil((1 - max(vs)) * size)), int(np.floor((1 - min(vs)) * size)))
    return rows, cols


def _paint_front(cam: Camera, size=640, occluder=None):
    """Synthetic photo of the box: its front face, the body's right half (x < 0) red and its left
    half (x > 0) green; optionally an occluding blue rectangle (x0, x1, y0, y1) at z = D + 0.1."""
    img = np.full((size, size, 3), 90, np.uint8)
    mask = np.zeros((size, size), np.uint8)

    def poly(x0, x1, y0, y1, z):
        p = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])
        return np.round(cam.project(p)).astype(np.int32)

    for x0, x1, col in ((-W_, 0.0, RED), (0.0, W_, GREEN)):
        q = poly(x0, x1, Y0 - H_, Y0 + H_, D_)
        cv2.fillConvexPoly(img, q, tuple(int(c) for c in col))
        cv2.fillConvexPoly(mask, q, 1)
    if occluder is not None:
        q = poly(*occluder, D_ + 0.1)
        cv2.fillConvexPoly(img, q, tuple(int(c) for c in BLUE))
        cv2.fillConvexPoly(mask, q, 1)
    return img, mask > 0


def _close(pixels, color, tol=40.0):
    d = np.abs(pixels.reshape(-1, 3).astype(np.float64) - color.astype(np.float64)).max(axis=1)
    return d < tol


# ---------------------------------------------------------------------------------------------
def test_uv_rasterize_origin_bottom_left():
    uv = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5]])
    ids, bary = uv_rasterize(uv, np.array([[0, 1, 2]]), 64)
    assert ids.shape == (64, 64) and bary.shape == (64, 64, 3)
    assert (ids[-5:, :5] == 0).all()  # v = 0 is the bottom row
    assert (ids[:20, :] == -1).all() and (ids[:, 40:] == -1).all()
    b = bary[ids == 0]
    assert np.allclose(b.sum(1), 1.0, atol=1e-5) and (b >= 0).all()
    # texel (row 63, col 0) sits at u = v = 0.5 / 64: mostly vertex 0
    assert bary[63, 0, 0] > 0.9


def test_depth_buffer_plane():
    cam = _camera()
    v, uv, f = _grid((-0.5, 0.5, 0.0), (1, 0, 0), (0, 1, 0), 4, (0, 0), (1, 1))
    vc = v @ cam.R.T + cam.t
    z = depth_buffer(vc, f, cam.fx, cam.fy, cam.cx, cam.cy, 640, 640)
    assert np.isinf(z[0, 0])
    assert z[320, 320] == pytest.approx(2.0, abs=1e-6)


def test_quad_front_left_red_right_green():
    cam = _camera()
    v, uv, f = _grid((-0.5, 0.5, 0.0), (1, 0, 0), (0, 1, 0), 1, (0, 0), (1, 1))  # 2 triangles
    img = np.zeros((640, 640, 3), np.uint8)
    img[:, :320] = RED  # image left = the body's right (x < 0) = u < 0.5
    img[:, 320:] = GREEN
    corners = np.round(cam.project(v[[0, 2, 3, 1]])).astype(np.int32)
    mask = np.zeros((640, 640), np.uint8)
    cv2.fillConvexPoly(mask, corners, 1)
    tex, cov = bake_texture(img, mask > 0, v, f, uv, f, cam, size=SIZE)
    assert tex.shape == (SIZE, SIZE, 3) and tex.dtype == np.uint8
    assert cov.shape == (SIZE, SIZE) and cov.dtype == bool
    assert cov[5:-5, 5:-5].all()
    assert _close(tex[:, : int(0.45 * SIZE)], RED, 5).all()
    assert _close(tex[:, int(0.55 * SIZE):], GREEN, 5).all()


def test_box_front_seen_back_mirrored_rest_filled():
    cam = _camera()
    v, f, uv, fuv = _box()
    img, mask = _paint_front(cam)
    # mirror_head: the box's top 13 % would otherwise count as a head (not mirrored)
    tex, cov = bake_texture(img, mask, v, f, uv, fuv, cam, size=SIZE, mirror_head=True)
    assert tex.shape == (SIZE, SIZE, 3) and tex.dtype == np.uint8 and cov.dtype == bool

    # front: straight from the photo; s is along +x, so s < 0.5 is x < 0 (red)
    r, c = _region("front", (0.05, 0.45), (0.05, 0.95))
    assert cov[r, c].all() and _close(tex[r, c], RED, 10).all()
    r, c = _region("front", (0.55, 0.95), (0.05, 0.95))
    assert cov[r, c].all() and _close(tex[r, c], GREEN, 10).all()

    # back: not seen, mirrored from the front (its s runs along -x: s < 0.5 is x > 0, green)
    r, c = _region("back", (0.0, 1.0), (0.0, 1.0))
    assert not cov[r, c].any()
    r, c = _region("back", (0.05, 0.45), (0.05, 0.95))
    assert _close(tex[r, c], GREEN, 10).all()
    r, c = _region("back", (0.55, 0.95), (0.05, 0.95))
    assert _close(tex[r, c], RED, 10).all()

    # sides / top / bottom: unseen, filled with plausible (seen-like, non-black) colours
    for name in ("right_x", "left_x", "top", "bottom"):
        r, c = _region(name, (0.0, 1.0), (0.0, 1.0))
        assert not cov[r, c].any(), name
        px = tex[r, c].reshape(-1, 3).astype(np.float64)
        assert (px.max(axis=1) > 60).all(), name  # nothing black
        assert (px[:, 2] < 90).all(), name  # no colour that was never seen (blue)
        assert (px[:, 0] + px[:, 1] > 180).all(), name  # red, green or a mix of them
    # the +X side (the body's left, x > 0) is next to the green half, -X next to the red
    r, c = _region("right_x", (0.3, 0.7), (0.2, 0.8))
    assert np.median(tex[r, c, 1]) > np.median(tex[r, c, 0])
    r, c = _region("left_x", (0.3, 0.7), (0.2, 0.8))
    assert np.median(tex[r, c, 0]) > np.median(tex[r, c, 1])

    # gutters between islands are filled too (no black seams), coverage only where seen
    assert tex.reshape(-1, 3).max(axis=1).min() > 40
    assert 0.05 < cov.mean() < 0.2


def test_box_without_mirror_fills_back_smoothly():
    cam = _camera()
    v, f, uv, fuv = _box()
    img, mask = _paint_front(cam)
    tex, cov = bake_texture(img, mask, v, f, uv, fuv, cam, size=SIZE, mirror_back=False)
    r, c = _region("back", (0.05, 0.95), (0.05, 0.95))
    assert not cov[r, c].any()
    px = tex[r, c].reshape(-1, 3).astype(np.float64)
    assert (px.max(axis=1) > 60).all() and (px[:, 2] < 90).all()


def test_occluded_texels_are_not_covered():
    cam = _camera()
    v, f, uv, fuv = _box()
    # a blue plate (its own UV island, part of the mesh) hovering 10 cm in front of the box's
    # lower-left (x < 0) part
    occ = (-W_ - 0.05, -0.05, Y0 - H_ - 0.05, Y0)
    img, mask = _paint_front(cam, occluder=occ)
    pv, puv, pf = _grid((occ[0], occ[2], D_ + 0.1), (occ[1] - occ[0], 0, 0),
                        (0, occ[3] - occ[2], 0), 2, (0.70, 0.55), (0.98, 0.95))
    vv = np.concatenate([v, pv])
    ff = np.concatenate([f, pf + len(v)])
    uu = np.concatenate([uv, puv])
    fu = np.concatenate([fuv, pf + len(uv)])
    tex, cov = bake_texture(img, mask, vv, ff, uu, fu, cam, size=SIZE)
    # box front: the lower-left is behind the plate → not covered, and not painted blue
    r, c = _region("front", (0.05, 0.3), (0.05, 0.4))
    assert not cov[r, c].any()
    assert not _close(tex[r, c], BLUE, 60).any()
    # the upper-left of the front is still seen red
    r, c = _region("front", (0.05, 0.45), (0.6, 0.95))
    assert cov[r, c].all() and _close(tex[r, c], RED, 10).all()
    # the plate itself is seen blue
    rows = slice(int((1 - 0.9) * SIZE), int((1 - 0.6) * SIZE))
    cols = slice(int(0.75 * SIZE), int(0.93 * SIZE))
    assert cov[rows, cols].all() and _close(tex[rows, cols], BLUE, 10).all()


def test_outside_mask_is_not_taken_from_photo():
    cam = _camera()
    v, f, uv, fuv = _box()
    img, mask = _paint_front(cam)
    mask[:, 320:] = False  # the silhouette says the right half of the image is not the person
    tex, cov = bake_texture(img, mask, v, f, uv, fuv, cam, size=SIZE)
    r, c = _region("front", (0.6, 0.95), (0.05, 0.95))
    assert not cov[r, c].any()
    r, c = _region("front", (0.05, 0.4), (0.05, 0.95))
    assert cov[r, c].all()


def test_image_of_another_size_rescales_intrinsics():
    cam = _camera()
    v, f, uv, fuv = _box()
    img, mask = _paint_front(cam)
    small = cv2.resize(img, (320, 320), interpolation=cv2.INTER_AREA)
    small_mask = cv2.resize(mask.astype(np.uint8), (320, 320), interpolation=cv2.INTER_NEAREST) > 0
    tex, cov = bake_texture(small, small_mask, v, f, uv, fuv, cam, size=SIZE)
    r, c = _region("front", (0.1, 0.4), (0.1, 0.9))
    assert cov[r, c].all() and _close(tex[r, c], RED, 15).all()


def test_inverted_winding_closed_mesh_is_handled():
    cam = _camera()
    v, f, uv, fuv = _box()
    img, mask = _paint_front(cam)
    f_cw, fuv_cw = f[:, ::-1].copy(), fuv[:, ::-1].copy()
    tex, cov = bake_texture(img, mask, v, f_cw, uv, fuv_cw, cam, size=SIZE)
    r, c = _region("front", (0.05, 0.45), (0.05, 0.95))
    assert cov[r, c].all() and _close(tex[r, c], RED, 10).all()
    r, c = _region("back", (0.05, 0.95), (0.05, 0.95))
    assert not cov[r, c].any()


def test_deterministic():
    cam = _camera()
    v, f, uv, fuv = _box()
    img, mask = _paint_front(cam)
    a = bake_texture(img, mask, v, f, uv, fuv, cam, size=128)
    b = bake_texture(img, mask, v, f, uv, fuv, cam, size=128)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_nothing_visible_gives_fill_colour():
    cam = _camera(t=(0.0, 1.0, -2.0))  # the box is behind the camera
    v, f, uv, fuv = _box()
    img = np.full((640, 640, 3), 50, np.uint8)
    img[200:400, 200:400] = (210, 160, 130)
    mask = np.zeros((640, 640), bool)
    mask[200:400, 200:400] = True
    tex, cov = bake_texture(img, mask, v, f, uv, fuv, cam, size=64)
    assert not cov.any()
    assert np.abs(tex.reshape(-1, 3).astype(int) - [210, 160, 130]).max() <= 2


def test_skin_color():
    img = np.zeros((100, 100, 3), np.uint8)
    img[:] = (0, 0, 255)  # background
    img[20:80, 20:80] = (30, 60, 160)  # blue shirt
    img[20:40, 20:80] = (205, 150, 125)  # skin
    mask = np.zeros((100, 100), bool)
    mask[20:80, 20:80] = True
    col = skin_color(img, mask)
    assert col.dtype == np.uint8 and col.shape == (3,)
    assert np.abs(col.astype(int) - [205, 150, 125]).max() <= 2
    # no skin-like pixel: the mask's median
    img2 = img.copy()
    img2[20:40, 20:80] = (30, 60, 160)
    assert np.abs(skin_color(img2, mask).astype(int) - [30, 60, 160]).max() <= 1
    # empty mask: a neutral default, still (3,) uint8
    c3 = skin_color(img, np.zeros((100, 100), bool))
    assert c3.shape == (3,) and c3.dtype == np.uint8


"""Bake the photo onto the body's UV map (``skin_texture.png``).

``bake_texture`` rasterises every triangle in UV space (texel centres, barycentric coordinates)
to know, per texel, which face it lies on and which 3D point of the *posed* surface it shows.
A depth buffer of the posed mesh seen from the photo's camera decides which of those points the
photo actually shows; those texels take the photo's colour (bilinear) and form ``coverage``.

The rest is filled plausibly, in this order:

1. unseen texels on the back (body-frame normal pointing -Z) copy the photo at their *front
   point*, the +Z-facing surface point with the same body-frame (x, y) -- the mirror through the
   body's local coronal plane -- when the photo shows that point (an orthographic depth map of
   the posed mesh along the body's Z axis finds it; the head is excluded by default so a face is
   not painted on the back of the head);
2. every other covered texel takes a smooth colour diffused *over the mesh* (so UV seams do not
   matter): per-vertex colours are sampled where vertices are seen (or mirrored), then the unseen
   vertices solve a screened Laplace equation that blends into the person's median skin colour
   far (≫ 15 cm) from anything seen; texels interpolate their face's vertex colours;
3. texels outside every UV triangle (gutters) are extended from their neighbours a few texels
   and the remainder pull-push filled, so bilinear/mipmapped sampling in the GLB has no dark
   seams.

Everything is vectorised numpy / OpenCV / scipy.sparse and deterministic. Nothing here depends on
the renderer stage: the small z-buffer below is self-contained.
"""
from __future__ import annotations

import numpy as np

from inference.types import Camera

__all__ = ["bake_texture", "skin_color", "uv_rasterize", "depth_buffer", "fill_face_ids"]

# visibility tolerances
DEPTH_TOL_M = 0.015  # texel depth may exceed the z-buffer by this much and still be "seen"
FACING_COS = -0.1  # seen only if normal . view_dir < FACING_COS (view_dir: camera -> point)
MIRROR_BACK_NZ = -0.2  # mirror only surfaces facing backwards in the body frame (normal z below)
MIRROR_MAX_THICK_M = 0.5  # the front point of a back point lies at most this far in front of it
MIRROR_DEPTH_TOL_M = 0.03  # ... and must be the visible surface in the photo (depth slack)
FRONT_MAP_RES_M = 0.004  # pixel size of the body-frame orthographic front-depth map
ZBUF_MAX_SIDE = 1024  # the z-buffer is rendered at most this large (longest side, pixels)
FILL_LENGTH_M = 0.15  # diffused colours decay to the median skin colour over about this distance
GUTTER_DILATE = 3  # texels of neighbour extension into the gutters (the rest: pull-push)


# ---------------------------------------------------------------------------------------------
# rasterisation (OpenCV polygon fill of face ids + vectorised per-pixel geometry)
# ---------------------------------------------------------------------------------------------
_SHIFT = 4  # sub-pixel bits for cv2.fillConvexPoly
_COORD_LIMIT = 1 << 20  # projected coordinates beyond this are not drawn (int32 safety)


def fill_face_ids(
    tri: np.ndarray, height: int, width: int, order: np.ndarray | None = None
) -> np.ndarray:
    """Draw triangles ``tri`` (F, 3, 2), given in pixel-centre coordinates (pixel (r, c) has
    its centre at x = c, y = r), into an int32 (height, width) id buffer, -1 where empty. Faces
    are drawn in ``order`` (default: index order), later ones on top. OpenCV's fill includes
    pixels whose centres lie up to about half a pixel outside a triangle, so thin triangles still
    get texels and neighbours share no gaps."""
    import cv2

    ids = np.full((height, width), -1, dtype=np.int32)
    tri = np.asarray(tri, dtype=np.float64)
    if tri.shape[0] == 0:
        return ids
    ok = np.isfinite(tri).all(axis=(1, 2)) & (np.abs(tri) < _COORD_LIMIT).all(axis=(1, 2))
    lo, hi = tri.min(axis=1), tri.max(axis=1)
    ok &= (hi[:, 0] >= -1) & (lo[:, 0] <= width) & (hi[:, 1] >= -1) & (lo[:, 1] <= height)
    pts = np.zeros(tri.shape, dtype=np.int32)
    pts[ok] = np.round(tri[ok] * (1 << _SHIFT)).astype(np.int32)
    if order is None:
        order = np.arange(tri.shape[0])
    order = np.asarray(order)[ok[np.asarray(order)]]
    fill = cv2.fillConvexPoly
    line = cv2.LINE_8
    for i in order.tolist():
        fill(ids, pts[i], i, line, _SHIFT)
    return ids


def _barycentric(tri: np.ndarray, fid: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Barycentric coordinates (N, 3) of points (x, y) in triangles ``tri[fid]``, clamped onto
    the triangle (texels drawn just outside a triangle map to its nearest-ish point)."""
    t = tri[fid]
    x0, y0 = t[:, 0, 0], t[:, 0, 1]
    e1x, e1y = t[:, 1, 0] - x0, t[:, 1, 1] - y0
    e2x, e2y = t[:, 2, 0] - x0, t[:, 2, 1] - y0
    d = e1x * e2y - e2x * e1y
    d = np.where(np.abs(d) > 1e-12, d, 1e-12)
    dx, dy = x - x0, y - y0
    b1 = (dx * e2y - e2x * dy) / d
    b2 = (e1x * dy - dx * e1y) / d
    b = np.stack([1.0 - b1 - b2, b1, b2], axis=1)
    b = np.clip(b, 0.0, 1.0)
    s = b.sum(axis=1, keepdims=True)
    return np.where(s > 1e-9, b / np.maximum(s, 1e-9), 1.0 / 3.0)


def _uv_to_pixels(uv: np.ndarray, size: int) -> np.ndarray:
    """UV (origin bottom-left) → texel-centre pixel coordinates (x right, y down)."""
    uv = np.asarray(uv, dtype=np.float64)
    return np.stack([uv[..., 0] * size - 0.5, (1.0 - uv[..., 1]) * size - 0.5], axis=-1)


_UV_CACHE: dict = {}


def uv_rasterize(
    uv: np.ndarray, face_uv: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per texel of a ``size``² map (row 0 = top = v≈1): face id (size, size) int32, -1 where no
    UV triangle covers the texel, and barycentrics (size, size, 3) float32 on that face.
    Results are cached per (uv, face_uv, size) and returned read-only."""
    import hashlib

    uv = np.ascontiguousarray(uv, dtype=np.float64)
    face_uv = np.ascontiguousarray(face_uv, dtype=np.int64)
    key = (
        hashlib.sha1(uv.tobytes()).hexdigest(), hashlib.sha1(face_uv.tobytes()).hexdigest(),
        uv.shape, face_uv.shape, int(size),
    )
    hit = _UV_CACHE.get(key)
    if hit is not None:
        return hit
    tri = _uv_to_pixels(uv, size)[face_uv]
    ids = fill_face_ids(tri, size, size)
    bary = np.zeros((size * size, 3), dtype=np.float32)
    cov = np.flatnonzero(ids.ravel() >= 0)
    if cov.size:
        bary[cov] = _barycentric(
            tri, ids.ravel()[cov], (cov % size).astype(np.float64), (cov // size).astype(np.float64)
        )
    out = (ids, bary.reshape(size, size, 3))
    for a in out:
        a.setflags(write=False)
    if len(_UV_CACHE) >= 4:
        _UV_CACHE.pop(next(iter(_UV_CACHE)))
    _UV_CACHE[key] = out
    return out


def depth_buffer(
    vertices_cam: np.ndarray, faces: np.ndarray, fx: float, fy: float, cx: float, cy: float,
    height: int, width: int, near: float = 1e-3, cull_back: bool = False,
) -> np.ndarray:
    """(height, width) float64 z-buffer (camera-frame z in metres, ``inf`` where empty) of the
    mesh given in OpenCV camera coordinates. Faces are painted far to near (painter's algorithm
    on their centroid depth) into an id buffer; each pixel's depth is then the exact ray/plane
    intersection with its face. ``cull_back`` skips faces wound clockwise on screen (valid for a
    closed mesh with counter-clockwise outward winding, where they are never the nearest)."""
    v = np.asarray(vertices_cam, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    z = v[:, 2]
    zs = np.where(z > near, z, np.nan)
    p = np.stack([fx * v[:, 0] / zs + cx, fy * v[:, 1] / zs + cy], axis=1)
    tri = p[faces]
    keep = (z[faces] > near).all(axis=1)
    if cull_back:
        # OpenCV image axes (y down): a front-facing CCW triangle has negative signed area
        e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        keep &= ~((e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) > 0)
    cand = np.flatnonzero(keep)
    order = cand[np.argsort(-z[faces[cand]].mean(axis=1), kind="stable")]
    ids = fill_face_ids(tri, height, width, order).ravel()
    zbuf = np.full(height * width, np.inf)
    pix = np.flatnonzero(ids >= 0)
    if pix.size:
        f = faces[ids[pix]]
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        n = np.cross(b - a, c - a)
        dx = ((pix % width) - cx) / fx
        dy = ((pix // width) - cy) / fy
        den = n[:, 0] * dx + n[:, 1] * dy + n[:, 2]
        num = (n * a).sum(axis=1)
        zf = z[f]
        with np.errstate(divide="ignore", invalid="ignore"):
            zp = num / den
        zp = np.where(np.isfinite(zp), zp, zf.mean(axis=1))
        zbuf[pix] = np.clip(zp, zf.min(axis=1), zf.max(axis=1))
    return zbuf.reshape(height, width)


# ---------------------------------------------------------------------------------------------
# colour helpers
# ---------------------------------------------------------------------------------------------
def skin_color(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Robust median colour (3,) uint8 RGB of the person's skin: the median of the pixels inside
    ``mask`` whose YCrCb lies in the usual skin range; the median of the whole mask when too few
    of those; a neutral skin tone when the mask is empty."""
    import cv2

    image = np.asarray(image)
    mask = np.asarray(mask, dtype=bool)
    if image.ndim != 3 or image.shape[-1] < 3 or mask.shape != image.shape[:2]:
        raise ValueError("skin_color: image must be (H, W, 3) and mask (H, W)")
    px = image[..., :3][mask]
    if px.shape[0] == 0:
        return np.array([200, 160, 140], dtype=np.uint8)
    px = np.ascontiguousarray(px, dtype=np.uint8)
    ycc = cv2.cvtColor(px[None], cv2.COLOR_RGB2YCrCb)[0].astype(np.int32)
    y, cr, cb = ycc[:, 0], ycc[:, 1], ycc[:, 2]
    skin = (cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127) & (y >= 40) & (y <= 250)
    if skin.sum() >= max(30, int(0.02 * px.shape[0])):
        px = px[skin]
    return np.round(np.median(px.astype(np.float64), axis=0)).clip(0, 255).astype(np.uint8)


def _sample_bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(H, W, C) float32 image sampled bilinearly at pixel-centre coordinates (x, y) → (N, C)
    float32 (border replicated). Uses ``cv2.remap`` on the points laid out as a small image."""
    import cv2

    n = int(x.shape[0])
    C = img.shape[2] if img.ndim == 3 else 1
    if n == 0:
        return np.zeros((0, C), np.float32)
    cols = 1024
    m = -(-n // cols) * cols
    mx = np.zeros(m, np.float32)
    my = np.zeros(m, np.float32)
    mx[:n] = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    my[:n] = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    out = cv2.remap(img, mx.reshape(-1, cols), my.reshape(-1, cols), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(m, C)[:n]


def _dilate_fill(tex: np.ndarray, valid: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Extend ``tex`` (H, W, 3) float32 from ``valid`` texels into invalid ones up to about
    ``radius`` texels away (Gaussian-weighted mean of the valid texels nearby; normalised
    convolution). Returns the texture and the grown validity."""
    import cv2

    k = 2 * int(radius) + 1
    sigma = max(0.5, radius / 2.0)
    w = valid.astype(np.float32)
    n = cv2.GaussianBlur(w, (k, k), sigma, borderType=cv2.BORDER_CONSTANT)
    s = cv2.GaussianBlur(tex * w[..., None], (k, k), sigma, borderType=cv2.BORDER_CONSTANT)
    grow = (~valid) & (n > 1e-4)
    out = tex.copy()
    np.divide(s, np.maximum(n, 1e-4)[..., None], out=out, where=grow[..., None])
    return out, valid | grow


def _pull_push(tex: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill every invalid texel of ``tex`` (H, W, 3) float32 from a pyramid of area-weighted
    averages of the valid ones (coarser levels upsampled bilinearly)."""
    import cv2

    if valid.all() or not valid.any():
        return tex
    w = valid.astype(np.float32)
    levels = [(tex * w[..., None], w)]
    while max(levels[-1][1].shape) > 1:
        c, w = levels[-1]
        h2, w2 = max(1, (w.shape[0] + 1) // 2), max(1, (w.shape[1] + 1) // 2)
        levels.append((
            cv2.resize(c, (w2, h2), interpolation=cv2.INTER_AREA).reshape(h2, w2, 3),
            cv2.resize(w, (w2, h2), interpolation=cv2.INTER_AREA).reshape(h2, w2),
        ))
    c, w = levels[-1]
    col = c / np.maximum(w, 1e-12)[..., None]
    for c, w in reversed(levels[1:-1]):
        up = cv2.resize(col, (w.shape[1], w.shape[0]), interpolation=cv2.INTER_LINEAR)
        up = up.reshape(w.shape + (3,))
        np.divide(c, np.maximum(w, 1e-12)[..., None], out=up, where=(w > 1e-6)[..., None])
        col = up
    up = cv2.resize(col, (tex.shape[1], tex.shape[0]), interpolation=cv2.INTER_LINEAR)
    out = tex.copy()
    np.copyto(out, up.reshape(tex.shape), where=~valid[..., None])
    return out


# ---------------------------------------------------------------------------------------------
# mesh-space diffusion of vertex colours
# ---------------------------------------------------------------------------------------------
def _mesh_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique undirected edges (E, 2) and how many faces use each."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    n = int(faces.max()) + 1 if faces.size else 1
    key, counts = np.unique(e[:, 0] * n + e[:, 1], return_counts=True)
    return np.stack([key // n, key % n], axis=1), counts


def _diffuse_vertex_colors(
    vertices: np.ndarray, edges: np.ndarray, known: np.ndarray, colors: np.ndarray,
    fill: np.ndarray, length: float = FILL_LENGTH_M,
) -> np.ndarray:
    """Solve ``sum_j w_ij (c_i - c_j) + (k / length²)(c_i - fill) = 0`` on the unknown vertices
    (w_ij = 1 / |e_ij|², known vertices fixed): a smooth harmonic fill that fades into ``fill``
    far (≫ ``length``) from anything known. Returns (V, 3) float colours."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    V = vertices.shape[0]
    out = np.where(known[:, None], colors, fill[None, :]).astype(np.float64)
    unknown = np.flatnonzero(~known)
    if unknown.size == 0:
        return out
    e = edges[edges[:, 0] != edges[:, 1]]
    L2 = ((vertices[e[:, 0]] - vertices[e[:, 1]]) ** 2).sum(1)
    w = 1.0 / np.maximum(L2, (1e-4) ** 2)
    rows = np.concatenate([e[:, 0], e[:, 1]])
    cols = np.concatenate([e[:, 1], e[:, 0]])
    W = sp.csr_matrix((np.concatenate([w, w]), (rows, cols)), shape=(V, V))
    deg = np.asarray(W.sum(axis=1)).ravel()
    screen = 1.5 / length**2  # ≈ (valence / 4) / length² on a regular triangle mesh
    Wu = W[unknown]
    Luu = (sp.diags(deg[unknown] + screen) - Wu[:, unknown]).tocsc()
    kidx = np.flatnonzero(known)
    rhs = Wu[:, kidx] @ out[kidx] + screen * fill[None, :].astype(np.float64)
    out[unknown] = np.asarray(spsolve(Luu, rhs)).reshape(unknown.size, 3)
    return out


# ---------------------------------------------------------------------------------------------
# the bake
# ---------------------------------------------------------------------------------------------
def _scaled_camera(camera: Camera, H: int, W: int) -> tuple[float, float, float, float]:
    """Intrinsics for an image of (H, W) when the camera was defined for another size."""
    sx = W / float(camera.width) if camera.width else 1.0
    sy = H / float(camera.height) if camera.height else 1.0
    # pixel centres: x_new + 0.5 = (x_old + 0.5) * s
    return (
        camera.fx * sx, camera.fy * sy,
        (camera.cx + 0.5) * sx - 0.5, (camera.cy + 0.5) * sy - 0.5,
    )


def _rigid(p: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``p @ R.T + t`` for (N, 3) points, written out: a BLAS matmul with an inner dimension of
    3 is slow (and much slower still on NaN rows or with busy BLAS threads)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.empty_like(p)
    for i in range(3):
        out[:, i] = p[:, 0] * R[i, 0] + p[:, 1] * R[i, 1] + p[:, 2] * R[i, 2] + t[i]
    return out


def _interp(vals: np.ndarray, faces: np.ndarray, f: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Barycentric interpolation of per-vertex ``vals`` (V, C) at faces ``f`` (N,), weights
    ``b`` (N, 3)."""
    corners = vals[faces]  # (F, 3, C)
    return np.einsum("nk,nkc->nc", b.astype(vals.dtype, copy=False), corners[f])


class _View:
    """The photo's camera with a z-buffer of the posed mesh and the (eroded) silhouette."""

    def __init__(self, mask, vc, faces_ccw, closed, fx, fy, cx, cy):
        import cv2

        H, W = mask.shape
        self.H, self.W = H, W
        self.fx, self.fy, self.cx, self.cy = fx, fy, cx, cy
        zs = min(1.0, ZBUF_MAX_SIDE / float(max(H, W)))
        self.zh, self.zw = max(1, int(round(H * zs))), max(1, int(round(W * zs)))
        self.sx, self.sy = self.zw / W, self.zh / H
        self.zfx = fx * self.sx
        self.zbuf = depth_buffer(
            vc, faces_ccw, fx * self.sx, fy * self.sy,
            (cx + 0.5) * self.sx - 0.5, (cy + 0.5) * self.sy - 0.5, self.zh, self.zw,
            cull_back=closed,
        )
        # a slightly eroded silhouette keeps background pixels off the body's rim
        er = max(1, int(round(0.002 * max(H, W))))
        m = cv2.erode(mask.astype(np.uint8), np.ones((2 * er + 1, 2 * er + 1), np.uint8)) > 0
        self.mask = m if m.sum() >= 0.25 * mask.sum() else mask

    def project(self, pc: np.ndarray):
        z = pc[:, 2]
        zsafe = np.where(z > 1e-6, z, np.nan)
        return self.fx * pc[:, 0] / zsafe + self.cx, self.fy * pc[:, 1] / zsafe + self.cy, z

    def in_mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        xi = np.nan_to_num(np.round(x), nan=-1.0, posinf=-1.0, neginf=-1.0).astype(np.int64)
        yi = np.nan_to_num(np.round(y), nan=-1.0, posinf=-1.0, neginf=-1.0).astype(np.int64)
        ok = (xi >= 0) & (xi < self.W) & (yi >= 0) & (yi < self.H)
        res = np.zeros(x.shape, bool)
        res[ok] = self.mask[yi[ok], xi[ok]]
        return res

    def zbuf_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """z-buffer (nearest pixel) at full-image pixel coordinates; NaN outside the image."""
        xz = np.nan_to_num(np.round((x + 0.5) * self.sx - 0.5), nan=-1.0, posinf=-1.0, neginf=-1.0)
        yz = np.nan_to_num(np.round((y + 0.5) * self.sy - 0.5), nan=-1.0, posinf=-1.0, neginf=-1.0)
        xi, yi = xz.astype(np.int64), yz.astype(np.int64)
        ok = (xi >= 0) & (xi < self.zw) & (yi >= 0) & (yi < self.zh)
        res = np.full(x.shape, np.nan)
        res[ok] = self.zbuf[yi[ok], xi[ok]]
        return res

    def seen(self, pc: np.ndarray, cosv: np.ndarray):
        """Visibility of camera-frame points whose surface has cos(normal, view direction)
        ``cosv`` → (seen, x, y) with (x, y) the photo pixel."""
        x, y, z = self.project(pc)
        # depth slack grows on slanted surfaces (one z-buffer pixel spans more depth there)
        foot = z / max(self.zfx, 1e-9)
        tan = np.sqrt(np.clip(1.0 - cosv * cosv, 0.0, 1.0)) / np.maximum(np.abs(cosv), 1e-3)
        tol = DEPTH_TOL_M + 1.5 * foot * np.minimum(tan, 10.0)
        ok = (z > 1e-6) & (cosv < FACING_COS)
        ok &= self.in_mask(x, y)
        zb = self.zbuf_at(x, y)
        ok &= ~(zb + tol < z)  # not behind the nearest surface (NaN/inf: nothing in front)
        return ok, x, y

    def front_seen(self, pf: np.ndarray, cosv: np.ndarray, R: np.ndarray, t: np.ndarray):
        """Body-frame front points (NaN rows: none) on surfaces with cos(normal, view) ``cosv``
        → (ok, x, y): photo pixels of those the photo shows (camera-facing, inside the
        silhouette, the nearest surface)."""
        n = pf.shape[0]
        ok = np.zeros(n, bool)
        x, y = np.full(n, np.nan), np.full(n, np.nan)
        idx = np.flatnonzero(np.isfinite(pf).all(axis=1) & (cosv < FACING_COS))
        if idx.size == 0:
            return ok, x, y
        xi, yi, z = self.project(_rigid(pf[idx], R, t))
        zb = self.zbuf_at(xi, yi)
        with np.errstate(invalid="ignore"):
            good = (z > 1e-6) & ~(zb + MIRROR_DEPTH_TOL_M < z)
        good &= self.in_mask(xi, yi)
        ok[idx] = good
        x[idx], y[idx] = xi, yi
        return ok, x, y


class _FrontMap:
    """Orthographic depth maps of the posed mesh's +Z-facing surfaces seen along the body's Z
    axis. ``front(p)`` gives, for body-frame points on the back, the front surface point with the
    same (x, y) -- the point a back point mirrors to through the body's *local* coronal plane
    (the global mid plane, e.g. the mean vertex z, is biased forward by the feet and the face).

    Two layers are kept, the nearest and the farthest +Z-facing surface along the axis, and the
    point takes the first one in front of it: the back of the torso finds the chest even where a
    hand is held in front of the belly, and the back of that hand finds the hand's palm side."""

    def __init__(self, vertices: np.ndarray, faces_ccw: np.ndarray, res: float = FRONT_MAP_RES_M):
        v = vertices
        self.x0, self.y1 = float(v[:, 0].min()) - 2 * res, float(v[:, 1].max()) + 2 * res
        w = int(np.ceil((v[:, 0].max() - self.x0) / res)) + 3
        h = int(np.ceil((self.y1 - v[:, 1].min()) / res)) + 3
        scale = max(1.0, max(w, h) / 2048.0)  # keep the map bounded for huge meshes
        self.res = res = res * scale
        self.w, self.h = int(np.ceil(w / scale)), int(np.ceil(h / scale))
        px = np.stack([(v[:, 0] - self.x0) / res, (self.y1 - v[:, 1]) / res], axis=1)
        tri = px[faces_ccw]
        a, b, c = v[faces_ccw[:, 0]], v[faces_ccw[:, 1]], v[faces_ccw[:, 2]]
        n = np.cross(b - a, c - a)
        cand = np.flatnonzero(n[:, 2] > 0)  # +Z-facing (CCW outward winding)
        order = cand[np.argsort((a[:, 2] + b[:, 2] + c[:, 2])[cand], kind="stable")]
        zf = np.stack([a[:, 2], b[:, 2], c[:, 2]], axis=1)
        self.layers, self.layer_ids = [], []
        for draw in (order[::-1], order):  # nearest (min z) on top, then farthest (max z)
            ids = fill_face_ids(tri, self.h, self.w, draw).ravel()
            self.layer_ids.append(ids.reshape(self.h, self.w))
            z = np.full(self.h * self.w, np.nan)
            pix = np.flatnonzero(ids >= 0)
            if pix.size:
                f = ids[pix]
                xs = self.x0 + (pix % self.w) * res
                ys = self.y1 - (pix // self.w) * res
                nf, af = n[f], a[f]
                nz = np.where(np.abs(nf[:, 2]) > 1e-12, nf[:, 2], 1e-12)
                zp = af[:, 2] - (nf[:, 0] * (xs - af[:, 0]) + nf[:, 1] * (ys - af[:, 1])) / nz
                z[pix] = np.clip(zp, zf[f].min(1), zf[f].max(1))
            self.layers.append(z.reshape(self.h, self.w))

    def front(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) body-frame points → their (N, 3) front points and the (N,) faces those lie on
        (NaN / -1 where there is none at 1 mm … ``MIRROR_MAX_THICK_M`` in front of the point)."""
        xi = np.round((p[:, 0] - self.x0) / self.res).astype(np.int64)
        yi = np.round((self.y1 - p[:, 1]) / self.res).astype(np.int64)
        ok = (xi >= 0) & (xi < self.w) & (yi >= 0) & (yi < self.h)
        zf = np.full(p.shape[0], np.nan)
        face = np.full(p.shape[0], -1, dtype=np.int64)
        with np.errstate(invalid="ignore"):
            for layer, ids in zip(reversed(self.layers), reversed(self.layer_ids)):
                z = np.full(p.shape[0], np.nan)  # the nearer layer (last) wins where both do
                z[ok] = layer[yi[ok], xi[ok]]
                gap = z - p[:, 2]
                good = (gap > 1e-3) & (gap < MIRROR_MAX_THICK_M)
                zf[good] = z[good]
                face[good] = ids[yi[good], xi[good]]
        out = np.array(p, dtype=np.float64)
        out[:, 2] = zf
        return out, face


def bake_texture(
    image: np.ndarray,
    mask: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    face_uv: np.ndarray,
    camera: Camera,
    size: int = 1024,
    *,
    mirror_back: bool = True,
    mirror_head: bool = False,
    fill_color: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Project ``image`` onto the UV map of the posed mesh.

    ``image`` (H, W, 3) uint8 RGB; ``mask`` (H, W) bool silhouette of the person; ``vertices``
    (V, 3) body frame, posed as in the photo; ``faces`` (F, 3), counter-clockwise seen from
    outside (a closed mesh wound the other way is detected and handled); ``uv`` (T, 2) origin
    bottom-left; ``face_uv`` (F, 3); ``camera`` maps body → OpenCV camera frame (its intrinsics
    are rescaled if the image is not ``camera.width`` × ``camera.height``).

    Returns ``texture`` (size, size, 3) uint8 (row 0 is the top, i.e. v = 1, ready for a PNG) and
    ``coverage`` (size, size) bool: texels whose colour comes straight from the photo.

    ``mirror_back``: fill unseen texels on the back from the photo at their mirror through the
    body's local coronal plane (the +Z-facing surface point with the same body-frame x, y; see
    the module doc); ``mirror_head``: also on the head (off by default: a
    mirrored face on the back of the head looks wrong; the top 13 % of the body's height gets the
    diffused fill instead). ``fill_color``: the colour far from anything seen (default:
    ``skin_color`` of the seen texels).
    """
    import cv2

    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    H, W = image.shape[:2]
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (H, W):
        mask = cv2.resize(mask.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST) > 0
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    face_uv = np.asarray(face_uv, dtype=np.int64)
    size = int(size)
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape != face_uv.shape:
        raise ValueError("faces and face_uv must both be (F, 3)")

    fx, fy, cx, cy = _scaled_camera(camera, H, W)
    R = np.asarray(camera.R, dtype=np.float64)
    t = np.asarray(camera.t, dtype=np.float64).reshape(3)
    vc = _rigid(vertices, R, t)  # camera frame

    # ---- winding, normals ----------------------------------------------------------------------
    edges, counts = _mesh_edges(faces)
    closed = bool(faces.size) and bool((counts == 2).all())
    faces_ccw = faces
    if closed:
        vv = vertices - vertices.mean(0)
        vol = np.einsum("ij,ij->", vv[faces[:, 0]], np.cross(vv[faces[:, 1]], vv[faces[:, 2]]))
        if vol < 0:
            faces_ccw = faces[:, [0, 2, 1]]
    a, b, c = vc[faces_ccw[:, 0]], vc[faces_ccw[:, 1]], vc[faces_ccw[:, 2]]
    fn_raw = np.cross(b - a, c - a)  # |.| = 2 * area
    fn = fn_raw / np.maximum(np.linalg.norm(fn_raw, axis=1, keepdims=True), 1e-20)
    cen = (a + b + c) / 3.0
    cos_f = (fn * cen).sum(1) / np.maximum(np.linalg.norm(cen, axis=1), 1e-12)  # normal . view
    nz_body = fn[:, 0] * R[0, 2] + fn[:, 1] * R[1, 2] + fn[:, 2] * R[2, 2]  # (R^T n)_z
    V = vc.shape[0]
    vn = np.stack([  # area-weighted vertex normals
        np.bincount(faces.ravel(), weights=np.repeat(fn_raw[:, k], 3), minlength=V)
        for k in range(3)
    ], axis=1)
    vn /= np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-20)

    view = _View(mask, vc, faces_ccw, closed, fx, fy, cx, cy)
    img_f = image.astype(np.float32)
    front_map = _FrontMap(vertices, faces_ccw) if mirror_back else None
    head_y = float(vertices[:, 1].max() - 0.13 * (vertices[:, 1].max() - vertices[:, 1].min()))

    # ---- texels: face, surface point, visibility -----------------------------------------------
    ids, bary = uv_rasterize(uv, face_uv, size)
    ids = ids.ravel()
    cov_idx = np.flatnonzero(ids >= 0)
    f_t = ids[cov_idx]
    b_t = bary.reshape(-1, 3)[cov_idx]  # float32
    cos_t = cos_f[f_t]
    vc32 = vc.astype(np.float32)
    tex = np.zeros((size * size, 3), np.float32)
    coverage = np.zeros(size * size, bool)
    known_t = np.zeros(cov_idx.size, bool)

    fi = np.flatnonzero(cos_t < FACING_COS)  # only texels on camera-facing faces can be seen
    if fi.size:
        ok, x, y = view.seen(_interp(vc32, faces, f_t[fi], b_t[fi]), cos_t[fi])
        fi = fi[ok]
        tex[cov_idx[fi]] = _sample_bilinear(img_f, x[ok], y[ok])
        coverage[cov_idx[fi]] = True
        known_t[fi] = True

    if mirror_back:
        bi = np.flatnonzero(~known_t & (nz_body[f_t] < MIRROR_BACK_NZ))
        if bi.size:
            pb = _interp(vertices.astype(np.float32), faces, f_t[bi], b_t[bi])  # body frame
            pf, ff = front_map.front(pb)
            ok, xm, ym = view.front_seen(pf, np.where(ff >= 0, cos_f[ff], 1.0), R, t)
            if not mirror_head:
                ok &= pb[:, 1] < head_y
            tex[cov_idx[bi[ok]]] = _sample_bilinear(img_f, xm[ok], ym[ok])
            known_t[bi[ok]] = True

    # ---- the rest: colours diffused over the mesh ----------------------------------------------
    if fill_color is not None:
        fill = np.asarray(fill_color, dtype=np.uint8).reshape(3)
    elif coverage.any():
        seen_cols = np.clip(np.round(tex[coverage]), 0, 255).astype(np.uint8)
        fill = skin_color(seen_cols[None], np.ones((1, seen_cols.shape[0]), bool))
    else:
        fill = skin_color(image, mask)
    fill = fill.astype(np.float64)

    todo = np.flatnonzero(~known_t)
    if todo.size:
        # vertex colours from a smaller (area-averaged) photo: robust to single pixels
        ds = min(1.0, 384.0 / max(H, W))
        small = cv2.resize(img_f, (max(1, round(W * ds)), max(1, round(H * ds))),
                           interpolation=cv2.INTER_AREA)
        sxs, sys_ = small.shape[1] / W, small.shape[0] / H

        def sample_small(x, y):
            return _sample_bilinear(small, (x + 0.5) * sxs - 0.5, (y + 0.5) * sys_ - 0.5)

        vcos = (vn * vc).sum(1) / np.maximum(np.linalg.norm(vc, axis=1), 1e-12)
        vseen, vx, vy = view.seen(vc, vcos)
        vcol = np.zeros((vc.shape[0], 3), np.float64)
        vcol[vseen] = sample_small(vx[vseen], vy[vseen])
        vknown = vseen.copy()
        if mirror_back:
            vnz = vn[:, 0] * R[0, 2] + vn[:, 1] * R[1, 2] + vn[:, 2] * R[2, 2]
            cand = np.flatnonzero((~vseen) & (vnz < MIRROR_BACK_NZ))
            pf, ff = front_map.front(vertices[cand])
            ok, xm, ym = view.front_seen(pf, np.where(ff >= 0, cos_f[ff], 1.0), R, t)
            if not mirror_head:
                ok &= vertices[cand, 1] < head_y
            vcol[cand[ok]] = sample_small(xm[ok], ym[ok])
            vknown[cand[ok]] = True
        vfill = _diffuse_vertex_colors(vertices, edges, vknown, vcol, fill)
        tex[cov_idx[todo]] = _interp(vfill.astype(np.float32), faces, f_t[todo], b_t[todo])

    # ---- gutters -------------------------------------------------------------------------------
    tex = tex.reshape(size, size, 3)
    valid = (ids >= 0).reshape(size, size)
    if not valid.any():
        tex[:] = fill.astype(np.float32)
    else:
        tex, valid = _dilate_fill(tex, valid, GUTTER_DILATE)
        tex = _pull_push(tex, valid)
    np.clip(tex, 0.0, 255.0, out=tex)
    texture = cv2.convertScaleAbs(tex)  # round to nearest, uint8
    return texture, coverage.reshape(size, size)


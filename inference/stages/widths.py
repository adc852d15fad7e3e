"""The body's width profile: what a front photo says about muscle against fat.

With the height exact and the mass pulled onto the typed weight, what is left for the photo to
tell is how that mass is distributed: a muscular body of 80 kg is broad at the chest and narrow at
the waist, a soft one the other way round. A front silhouette shows exactly this: the trunk's
width at each height. This module measures it on both sides, in horizontal bands of image rows
laid along the torso (from below the hips to just under the shoulders):

- on the model: the leftmost and rightmost projected trunk vertex in each band (trunk: every
  vertex that does not move with an arm);
- on the mask: the trunk's edges in the same rows, found by walking from the model's edge to the
  mask's boundary; a band counts only where the arm is visibly apart from the trunk on both sides
  (else an arm, or a segmentation that bridged the arm-torso gap, would pass for body width).

Bands use rows, so the photo must be roughly upright and frontal (what the pipeline asks for).

``limb_widths`` reads the silhouette across the limbs, the neck and the shoulders, where muscle and
proportions show through fewer clothes: features of the learned shape prior, not a fit term.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from inference.bodies.base import (
    LIMB, L_ANKLE, L_ELBOW, L_HIP, L_KNEE, L_SHOULDER, L_WRIST, NOSE, R_ANKLE, R_ELBOW, R_HIP, R_KNEE,
    R_SHOULDER, R_WRIST, BodyModel,
)
from inference.types import Subject

# bands between BAND_RANGE torso lengths above the hip line (negative: below), image rows
BAND_RANGE = (-0.45, 0.85)
N_BANDS = 26
MIN_GAP_PX = 3.0  # a band side counts when the arm is at least this far from the trunk
SEARCH = 0.25  # how far (torso lengths) beyond the model's edge the mask's edge is looked for

TRUNK, LEFT_ARM, RIGHT_ARM = 0, 1, 2
SUPERSAMPLE = 4  # ``rasterize``'s sub-pixels per pixel side
# ``whole_height``: a mask whose bottom lies less than this share of its height below the lower
# ankle lost the feet; one whose top lies less than HEAD_LOST above the higher eye, the head's top
FEET_LOST = 0.03
HEAD_LOST = 0.034


def part_labels(body: BodyModel, moved_m: float = 0.004, angle: float = 0.2) -> np.ndarray:
    """(V,) int per vertex of ``body``: LEFT_ARM / RIGHT_ARM where the vertex moves (over
    ``moved_m`` at unit scale) when that upper arm turns by ``angle`` about any axis, TRUNK
    elsewhere. Moving with the arm is what matters: the armpit and shoulder skin follow the arm,
    so they are not trunk width. By vertex index: the labels hold for every pose and shape."""
    with torch.no_grad():
        shape = body.initial_shape(Subject(170.0, "other"))
        limbs = body.standard_pose(shape, "apose").repeat(7, 1, 1)
        for k, name in enumerate(("left_upper_arm", "right_upper_arm")):
            for axis in range(3):
                limbs[1 + 3 * k + axis, LIMB[name], axis] += angle
        v = body.posed(shape.expand(7, -1), limbs).vertices
        moved = (v[1:] - v[:1]).norm(dim=-1)  # (6, V)
    left = (moved[:3].amax(0) > moved_m).cpu().numpy()
    right = (moved[3:].amax(0) > moved_m).cpu().numpy()
    labels = np.full(len(left), TRUNK)
    labels[left] = LEFT_ARM
    labels[right & ~left] = RIGHT_ARM
    return labels


def band_edges(kp_uv: np.ndarray) -> tuple[np.ndarray, float]:
    """(17, 2) projected model keypoints → (N_BANDS + 1,) increasing image rows bounding the
    bands, and the torso length in pixels."""
    hip_y = 0.5 * (kp_uv[L_HIP, 1] + kp_uv[R_HIP, 1])
    sh_y = 0.5 * (kp_uv[L_SHOULDER, 1] + kp_uv[R_SHOULDER, 1])
    torso = max(hip_y - sh_y, 1.0)
    fr = np.linspace(BAND_RANGE[1], BAND_RANGE[0], N_BANDS + 1)
    return hip_y - fr * torso, torso


def band_extents(uv: torch.Tensor, edges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, P, 2) projected points, (N_BANDS + 1,) rows → the smallest and largest x of the
    points in each band, (N, N_BANDS) each (+inf / -inf where a band holds none). Differentiable
    in x (the extreme point gets the gradient)."""
    n, p, _ = uv.shape
    nb = edges.shape[0] - 1
    band = torch.bucketize(uv[..., 1].detach().contiguous(), edges.contiguous()) - 1  # (N, P)
    inside = (band >= 0) & (band < nb)
    idx = (band.clamp(0, nb - 1) + nb * torch.arange(n, device=uv.device)[:, None])
    idx = torch.where(inside, idx, torch.full_like(idx, n * nb))  # a spill bucket, dropped
    x = uv[..., 0]
    lo = torch.full((n * nb + 1,), float("inf"), device=uv.device, dtype=uv.dtype)
    hi = torch.full((n * nb + 1,), float("-inf"), device=uv.device, dtype=uv.dtype)
    lo = lo.scatter_reduce(0, idx.reshape(-1), x.reshape(-1), "amin", include_self=True)
    hi = hi.scatter_reduce(0, idx.reshape(-1), x.reshape(-1), "amax", include_self=True)
    return lo[:-1].reshape(n, nb), hi[:-1].reshape(n, nb)


@dataclass
class WidthTarget:
    """The mask's trunk widths in the bands of one photo, where they can be trusted."""

    edges: np.ndarray  # (N_BANDS + 1,) image rows
    width_px: np.ndarray  # (N_BANDS,) mask trunk width, pixels (nan where not trusted)
    valid: np.ndarray  # (N_BANDS,) bool
    height_px: float  # the silhouette's vertical extent: the scale the widths are read against
    limb_px: np.ndarray | None = None  # (N_LIMB_FEATURES,) ``limb_widths``, when read

    @property
    def count(self) -> int:
        return int(self.valid.sum())


def mask_widths(mask: np.ndarray, uv: np.ndarray, labels: np.ndarray, kp_uv: np.ndarray) -> WidthTarget:
    """The trunk's width in each band of ``mask`` (H, W) bool, guided by the fitted model: its
    projected vertices ``uv`` (V, 2), their ``part_labels`` and its projected keypoints (17, 2).

    In each row of a band, the left edge is found by walking from the model's trunk edge outwards
    while the mask is set (inwards while it is not); the walk may not reach half way to the
    model's arm on that side (the arm-trunk gap), nor run further than SEARCH torso lengths. A
    band is trusted when every row's walk on both sides ends inside those limits."""
    h, w = mask.shape
    edges, torso = band_edges(kp_uv)
    uv_t = torch.as_tensor(uv[None], dtype=torch.float64)
    e_t = torch.as_tensor(edges, dtype=torch.float64)
    t_lo, t_hi = (a[0].numpy() for a in band_extents(uv_t[:, labels == TRUNK], e_t))
    arms = [tuple(a[0].numpy() for a in band_extents(uv_t[:, labels == lab], e_t))
            for lab in (LEFT_ARM, RIGHT_ARM)]
    search = SEARCH * torso
    width = np.full(N_BANDS, np.nan)
    valid = np.zeros(N_BANDS, bool)
    for b in range(N_BANDS):
        if not np.isfinite(t_lo[b]) or not np.isfinite(t_hi[b]):
            continue
        centre = 0.5 * (t_lo[b] + t_hi[b])
        # the walk's outer limits: half way to an arm on that side, else SEARCH beyond the edge
        left_lim, right_lim = t_lo[b] - search, t_hi[b] + search
        ok = True
        for a_lo, a_hi in arms:
            if not np.isfinite(a_lo[b]):
                continue
            if a_hi[b] <= centre:  # arm on the image's left
                if t_lo[b] - a_hi[b] < MIN_GAP_PX:
                    ok = False
                left_lim = max(left_lim, 0.5 * (a_hi[b] + t_lo[b]))
            else:
                if a_lo[b] - t_hi[b] < MIN_GAP_PX:
                    ok = False
                right_lim = min(right_lim, 0.5 * (a_lo[b] + t_hi[b]))
        rows = np.arange(int(np.ceil(edges[b])), int(np.ceil(edges[b + 1])))
        rows = rows[(rows >= 0) & (rows < h)]
        if not ok or len(rows) == 0:
            continue
        lefts, rights = [], []
        for r in rows:
            line = mask[r]
            lx = _walk(line, t_lo[b], -1, left_lim, centre)
            rx = _walk(line, t_hi[b], +1, right_lim, centre)
            if lx is None or rx is None:
                ok = False
                break
            lefts.append(lx)
            rights.append(rx)
        if ok:
            width[b] = max(rights) - min(lefts) + 1.0  # pixel centres → edges
            valid[b] = True
    ys = np.flatnonzero(mask.any(1))
    height = float(ys.max() - ys.min() + 1) if len(ys) else float("nan")
    return WidthTarget(edges=edges, width_px=width, valid=valid, height_px=height)


def whole_height(target: WidthTarget, mask: np.ndarray, raster: np.ndarray, keypoints: np.ndarray,
                 min_conf: float) -> None:
    """Where the segmentation lost the feet (dark shoes on a dark floor) or the top of the head
    (hair like the wall), ``target.height_px`` (the scale every width is read against) runs to
    the end of the body as fitted so far (its rasterised silhouette ``raster``) there instead of
    the mask's. A mask a few percent short read every width that much wider: on the dev sets 19
    of 264 masks ended 1-9 % short of the true silhouette, and a hip came out 6 cm too large.
    The detector says which end was lost (``keypoints`` (17, 3), pixels and confidence; those
    under ``min_conf`` say nothing): the mask's bottom within ``FEET_LOST`` of its height below
    the lower ankle, or its top within ``HEAD_LOST`` above the higher eye. On the dev sets and
    the studio tuning set a whole mask's were at least 0.036 away; one that lost 4 % or more of
    the feet at most 0.021, one that lost 2 % or more of the head's top at most 0.032. The body
    alone does not say it: placed with a height typed 2 cm off, it stood 2 % out of a whole
    studio mask."""
    ym, yo = np.flatnonzero(mask.any(1)), np.flatnonzero(raster.any(1))
    if not len(ym) or not len(yo):
        return
    top, bottom = int(ym.min()), int(ym.max())
    h = bottom - top + 1
    kp = np.asarray(keypoints)
    ankles = kp[[L_ANKLE, R_ANKLE]][kp[[L_ANKLE, R_ANKLE], 2] >= min_conf]
    eyes = kp[[1, 2]][kp[[1, 2], 2] >= min_conf]  # COCO's left and right eye
    if len(ankles) and bottom - ankles[:, 1].max() < FEET_LOST * h:
        bottom = max(bottom, int(yo.max()))
    if len(eyes) and eyes[:, 1].min() - top < HEAD_LOST * h:
        top = min(top, int(yo.min()))
    target.height_px = float(bottom - top + 1)


def rasterize(uv: np.ndarray, faces: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The silhouette (H, W) bool of a mesh projected to pixels ``uv`` (V, 2): every triangle
    filled (front and back: the silhouette is their union), sub-pixel accurate."""
    h, w = shape
    k = SUPERSAMPLE
    mask = np.zeros((h * k, w * k), np.uint8)
    # pixel centres at (i + 0.5) / k in the fine grid; 4 fractional bits
    tri = np.round(((uv[faces] + 0.5) * k - 0.5) * 16.0).astype(np.int32)
    for t in tri:
        cv2.fillConvexPoly(mask, t, 1, lineType=cv2.LINE_8, shift=4)
    # a pixel is set when at least half of its area is (what a renderer's coverage test does);
    # its k x k fine pixels counted by k row and k column additions in uint8 (k * k ≤ 255: exact),
    # ~20x faster than a sum over two strided axes
    fine = mask.reshape(h, k, w, k)
    rows = fine[:, 0].copy()
    for i in range(1, k):
        rows += fine[:, i]
    count = rows[..., 0].copy()
    for i in range(1, k):
        count += rows[..., i]
    return count * 2 >= k * k


def _walk(line: np.ndarray, start: float, outward: int, limit: float, centre: float) -> float | None:
    """The last set pixel of ``line`` going ``outward`` (-1 left, +1 right) from ``start``: the
    mask's edge near the model's edge; None when the walk reaches ``limit`` (merged with an
    arm or background) or ``centre`` (no trunk there)."""
    w = len(line)
    x = int(round(start))
    if not 0 <= x < w:
        return None
    if line[x]:  # walk outwards while set
        lim = int(np.floor(limit)) if outward < 0 else int(np.ceil(limit))
        lim = min(max(lim, 0), w - 1)
        seg = line[lim:x + 1][::-1] if outward < 0 else line[x:lim + 1]
        off = np.flatnonzero(~seg)
        if len(off) == 0:
            return None
        return float(x + outward * (off[0] - 1))
    # walk inwards until set
    c = int(round(centre))
    seg = line[x:c + 1] if outward < 0 else line[c:x + 1][::-1]
    on = np.flatnonzero(seg)
    if len(on) == 0:
        return None
    return float(x - outward * on[0])


# The learned prior's further features (``shape_prior.photo_features``): the silhouette's width
# across the limbs, the neck and the shoulders. At a fixed height and mass Anny's muscle shows in
# the limbs and the neck (a man of 72 kg: upper-arm girth 28 -> 32 cm from muscle 0.1 to 0.9, neck
# 37.7 -> 39.0) where the trunk's widths mostly show clothes, and its proportions in the
# shoulders' breadth (~8 cm). Each site: (name, (from, to) keypoints of each side, the share of
# the way along); the width is read across that segment.
LIMB_SITES = (
    ("upper_arm", ((L_SHOULDER, L_ELBOW), (R_SHOULDER, R_ELBOW)), 0.55),
    ("upper_arm_low", ((L_SHOULDER, L_ELBOW), (R_SHOULDER, R_ELBOW)), 0.8),
    ("forearm", ((L_ELBOW, L_WRIST), (R_ELBOW, R_WRIST)), 0.35),
    ("thigh_high", ((L_HIP, L_KNEE), (R_HIP, R_KNEE)), 0.25),
    ("thigh", ((L_HIP, L_KNEE), (R_HIP, R_KNEE)), 0.45),
    ("thigh_low", ((L_HIP, L_KNEE), (R_HIP, R_KNEE)), 0.7),
    ("calf", ((L_KNEE, L_ANKLE), (R_KNEE, R_ANKLE)), 0.35),
)
NECK_AT = 0.55  # the neck's row: this share of the way from the shoulders' middle up to the nose
SHOULDER_ROWS = (0.0, 0.08)  # rows across the shoulders: torso lengths above the joints' line
LIMB_SEARCH = 0.3  # a walk longer than this many torso lengths ran into the trunk or another limb
SHOULDER_SEARCH = 0.6  # the same across the shoulders (half their breadth and more)
N_LIMB_FEATURES = len(LIMB_SITES) + 1 + len(SHOULDER_ROWS)


def limb_widths(mask: np.ndarray, kp_uv: np.ndarray, torso_px: float) -> np.ndarray:
    """The silhouette's width (pixels) in ``mask`` (H, W) bool across each limb of ``LIMB_SITES``
    (the mean of the two sides that read), across the neck and across the shoulders (rows), at
    the places the projected model keypoints ``kp_uv`` (17, 2) give: → (N_LIMB_FEATURES,), nan
    where nothing reads (the site is not in the mask, or the walk ran further than
    ``LIMB_SEARCH`` torso lengths: a limb against the trunk or another limb)."""
    out = []
    for _, sides, t in LIMB_SITES:
        got = []
        for a, b in sides:
            d = kp_uv[b] - kp_uv[a]
            n = np.linalg.norm(d)
            if n < 1.0:
                continue
            w = _across(mask, kp_uv[a] + t * d, np.array([-d[1], d[0]]) / n, LIMB_SEARCH * torso_px)
            if w is not None:
                got.append(w)
        out.append(float(np.mean(got)) if got else float("nan"))
    sh = 0.5 * (kp_uv[L_SHOULDER] + kp_uv[R_SHOULDER])
    at = sh + NECK_AT * (kp_uv[NOSE] - sh)
    w = _across(mask, at, np.array([1.0, 0.0]), LIMB_SEARCH * torso_px)
    out.append(float("nan") if w is None else w)
    for up in SHOULDER_ROWS:  # across the deltoids: the arms are still joined to the trunk there
        w = _across(mask, sh - np.array([0.0, up * torso_px]), np.array([1.0, 0.0]), SHOULDER_SEARCH * torso_px)
        out.append(float("nan") if w is None else w)
    return np.asarray(out)


def _across(mask: np.ndarray, p: np.ndarray, n: np.ndarray, limit: float) -> float | None:
    """The run of set pixels of ``mask`` through ``p`` along the unit direction ``n`` and back
    (half-pixel steps): its length in pixels, or None when ``p`` is not set or a side runs past
    ``limit`` (beyond the image counts as not set)."""
    h, w = mask.shape
    steps = np.arange(0.0, limit + 0.5, 0.5)
    ends = []
    for sign in (1.0, -1.0):
        q = np.round(p[None] + sign * steps[:, None] * n[None]).astype(int)
        inside = (q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0) & (q[:, 1] < h)
        on = np.zeros(len(q), bool)
        on[inside] = mask[q[inside, 1], q[inside, 0]]
        if not on[0]:
            return None
        off = np.flatnonzero(~on)
        if len(off) == 0:
            return None
        ends.append(steps[off[0]] - 0.25)  # the edge half way between the last set step and the first unset
    return float(ends[0] + ends[1])

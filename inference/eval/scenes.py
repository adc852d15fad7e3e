"""Synthetic photos of bodies for tests and ``avatar eval``: a shaded, dressed body in front of
a wall-and-floor, a plain, a noisy, a cluttered or a patterned background.

Eval tooling, not a stage: nothing here runs in a job.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from inference.stages.render import RGB, Renderer, _np, _rgb01
from inference.types import Camera

BACKGROUNDS = ("gradient", "noise", "plain", "cluttered", "patterned")
SKINS = ((0.87, 0.70, 0.58), (0.76, 0.57, 0.45), (0.55, 0.38, 0.28), (0.36, 0.24, 0.17))
CLOTHES = ((0.15, 0.25, 0.55), (0.55, 0.12, 0.12), (0.2, 0.2, 0.22), (0.35, 0.45, 0.3),
           (0.6, 0.55, 0.45), (0.12, 0.12, 0.14))


def outfit(masks: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """``outfit_masks`` → (V,) labels (0 skin, 1 top, 2 bottom, 3 shoes) and their colours for
    :func:`synthetic_photo`: a top and trousers of two different ``CLOTHES``, black shoes."""
    labels = np.zeros(len(masks["top"]), np.int64)
    labels[masks["top"]] = 1
    labels[masks["bottom"]] = 2
    labels[masks["shoes"]] = 3
    top, bottom = rng.choice(len(CLOTHES), 2, replace=False)
    return labels, [CLOTHES[top], CLOTHES[bottom], (0.08, 0.08, 0.08)]


def synthetic_photo(
    renderer: Renderer,
    vertices: np.ndarray,
    faces: np.ndarray,
    camera: Camera,
    *,
    skin: RGB = (0.87, 0.70, 0.60),
    clothing: RGB | Sequence[RGB] | None = None,
    clothing_mask: np.ndarray | None = None,
    hair: RGB = (0.18, 0.12, 0.08),
    hair_mask: np.ndarray | None = None,
    background: str | RGB = "gradient",
    noise_sigma: float = 2.0,
    rng: np.random.Generator | int | None = None,
    key_light: float = 2.8,
    ambient: float = 0.25,
    key_direction: Sequence[float] = (0.35, 0.5, 1.0),
) -> np.ndarray:
    """A plausible photo of the body for tests and evaluation: (h, w, 3) uint8 RGB.

    Skin-coloured, shaded body; ``clothing`` colour on vertices where ``clothing_mask`` (V,)
    is True — or, with a list of colours, an int label mask (0 = skin, k = ``clothing[k-1]``);
    ``hair`` colour where ``hair_mask`` is True. Background: "gradient" (wall + floor with a
    soft contact shadow and a little texture), "noise" (smooth random colour field), "plain",
    "cluttered" (a room with furniture-like shapes), "patterned" (wallpaper) or an rgb colour.
    ``key_light``, ``ambient``, ``key_direction``: the lighting (see ``Renderer.render_mesh``). Slight blur (anti-aliasing) and Gaussian noise of ``noise_sigma`` grey levels.
    ``rng`` None means a fixed seed (deterministic).
    """
    import cv2

    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(0 if rng is None else rng)
    v = _np(vertices).reshape(-1, 3)
    n = len(v)
    cols = np.tile(_rgb01(skin), (n, 1))
    if clothing is not None and clothing_mask is not None:
        cm = np.asarray(clothing_mask).reshape(n)
        palette = np.asarray(clothing, dtype=np.float64)
        if palette.ndim == 1:
            cols[cm.astype(bool)] = _rgb01(palette)
        else:
            labels = cm.astype(np.int64)
            for k, c in enumerate(palette, start=1):
                cols[labels == k] = _rgb01(c)
    if hair_mask is not None:
        cols[np.asarray(hair_mask, dtype=bool).reshape(n)] = _rgb01(hair)

    w, h = int(camera.width), int(camera.height)
    bg = photo_background(background, v, camera, gen)
    rgb, _, mask = renderer.render_mesh(v, faces, camera, vertex_colors=cols, background=None,
                                        roughness=0.65, key_light=key_light, fill_light=0.8,
                                        ambient=ambient, key_direction=key_direction)
    m = mask.astype(np.float32)
    # soft 1-px edge so the silhouette is anti-aliased
    m = cv2.GaussianBlur(m, (0, 0), 0.6)[..., None]
    img = bg * (1 - m) + rgb.astype(np.float32) * m
    img = cv2.GaussianBlur(img, (0, 0), 0.5)
    if noise_sigma > 0:
        img = img + gen.normal(0.0, noise_sigma, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8).reshape(h, w, 3)

def photo_background(background, v: np.ndarray, camera: Camera, gen: np.random.Generator) -> np.ndarray:
    """(h, w, 3) float32 background for :func:`synthetic_photo`."""
    import cv2

    w, h = int(camera.width), int(camera.height)
    if not isinstance(background, str):
        return np.broadcast_to(_rgb01(background) * 255.0, (h, w, 3)).astype(np.float32).copy()
    yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    if background == "noise":
        low = gen.uniform(40, 220, size=(6, 5, 3)).astype(np.float32)
        img = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
        fine = cv2.GaussianBlur(gen.normal(0, 12, size=(h, w, 3)).astype(np.float32), (0, 0), 2.0)
        return np.clip(img + fine, 0, 255)
    if background == "plain":
        return np.broadcast_to(gen.uniform(60, 235, size=3).astype(np.float32), (h, w, 3)).copy()
    if background == "cluttered":
        return _cluttered(h, w, gen)
    if background == "patterned":
        return _patterned(h, w, gen)
    if background != "gradient":
        raise ValueError(f"background must be one of {BACKGROUNDS} or an rgb colour, not {background!r}")
    R = np.asarray(camera.R, dtype=np.float64)
    t = np.asarray(camera.t, dtype=np.float64)
    wall_top = np.array(gen.uniform([200, 190, 175], [235, 228, 215]), dtype=np.float32)
    wall_bot = wall_top * np.float32(gen.uniform(0.78, 0.9))
    img = wall_top * (1 - yy) + wall_bot * yy + np.zeros((h, w, 3), np.float32)
    # faint wall texture
    tex = cv2.GaussianBlur(gen.normal(0, 6, size=(h, w)).astype(np.float32), (0, 0), 3.0)
    img += tex[..., None]
    # floor: the body stands on y = min y; the wall is 1.5 m behind it
    centre = (v.min(0) + v.max(0)) / 2
    floor_y = v[:, 1].min()
    cam_c = -R.T @ t
    back = centre - cam_c
    back[1] = 0
    back /= max(np.linalg.norm(back), 1e-9)
    junction = centre + back * 1.5
    junction[1] = floor_y
    pj = junction @ R.T + t
    if pj[2] > 1e-3:
        row = camera.fy * pj[1] / pj[2] + camera.cy
        floor_col = np.array(gen.uniform([120, 100, 80], [175, 150, 125]), dtype=np.float32)
        rows = np.arange(h, dtype=np.float32)
        on_floor = np.clip(rows - row, 0, None)
        fmask = (rows >= row)[:, None, None]
        shade = (0.85 + 0.25 * on_floor / max(h - row, 1.0))[:, None, None]
        floor = floor_col * shade + np.zeros((h, w, 3), np.float32)
        floor += cv2.GaussianBlur(gen.normal(0, 8, size=(h, w)).astype(np.float32), (0, 0), 1.5)[..., None]
        img = np.where(fmask, floor, img)
        # skirting board line at the junction
        r0 = int(np.clip(np.floor(row), 0, h))
        img[max(r0 - 3, 0):r0] *= 0.8
        # contact shadow: a blurred ellipse on the floor around the feet
        feet = v[v[:, 1] < floor_y + 0.08]
        fc = feet.mean(0)
        ang = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        rx = max(np.ptp(feet[:, 0]) / 2 + 0.15, 0.2)
        rz = max(np.ptp(feet[:, 2]) / 2 + 0.12, 0.18)
        ring = np.stack([fc[0] + rx * np.cos(ang), np.full_like(ang, floor_y), fc[2] + rz * np.sin(ang)], 1)
        pr = ring @ R.T + t
        if np.all(pr[:, 2] > 1e-3):
            uvr = camera.project(ring)
            sh = np.zeros((h, w), np.float32)
            cv2.fillPoly(sh, [np.round(uvr).astype(np.int32)], 1.0)
            sh = cv2.GaussianBlur(sh, (0, 0), max(3.0, 0.01 * h))
            img *= (1 - 0.35 * sh)[..., None]
    # vignette
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    yv = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    img *= (1 - 0.12 * (xx ** 2 + yv ** 2))[..., None]
    return np.clip(img, 0, 255)


def outfit_masks(vertices: np.ndarray, keypoints: np.ndarray, long_sleeves: bool = False) -> dict[str, np.ndarray]:
    """Rough per-vertex regions from the rest-pose mesh and its COCO keypoints (body frame):
    ``hair`` (top and back of the head), ``top`` (torso + short sleeves), ``bottom`` (hips and
    legs), ``shoes`` (feet); with ``long_sleeves`` the top covers the whole arms. Heuristic: each
    vertex goes to its nearest bone segment. Masks are by vertex index, so they can be reused for
    any pose of the same shape."""
    v = _np(vertices).reshape(-1, 3)
    k = _np(keypoints).reshape(17, -1)[:, :3]
    sh_mid, hip_mid = (k[5] + k[6]) / 2, (k[11] + k[12]) / 2
    ear_mid = (k[3] + k[4]) / 2
    bones = {  # name: (start, end)
        "spine": (hip_mid, sh_mid), "l_flank": (k[11], k[5]), "r_flank": (k[12], k[6]),
        "shoulders": (k[5], k[6]), "pelvis": (k[11], k[12]),
        "neck": (sh_mid, ear_mid), "head": (ear_mid, ear_mid + (ear_mid - sh_mid) * 0.15),
        "l_upper": (k[5], k[7]), "r_upper": (k[6], k[8]), "l_fore": (k[7], k[9]), "r_fore": (k[8], k[10]),
        "l_hand": (k[9], k[9] + (k[9] - k[7]) * 0.45), "r_hand": (k[10], k[10] + (k[10] - k[8]) * 0.45),
        "l_thigh": (k[11], k[13]), "r_thigh": (k[12], k[14]), "l_shin": (k[13], k[15]), "r_shin": (k[14], k[16]),
    }
    names = list(bones)
    dist = np.empty((len(v), len(names)))
    tpar = np.empty_like(dist)
    for j, name in enumerate(names):
        a, b = bones[name]
        ab = b - a
        tt = np.clip((v - a) @ ab / max(ab @ ab, 1e-12), 0, 1)
        dist[:, j] = np.linalg.norm(v - (a + tt[:, None] * ab), axis=1)
        tpar[:, j] = tt
    near = dist.argmin(1)
    which = np.array(names)[near]
    t_near = tpar[np.arange(len(v)), near]
    torso = np.isin(which, ["spine", "l_flank", "r_flank", "shoulders", "pelvis"])
    y = v[:, 1]
    ankle_y = min(k[15, 1], k[16, 1])
    waist = hip_mid[1] + 0.25 * (sh_mid[1] - hip_mid[1])
    neck_low = (which == "neck") & (t_near < 0.25)
    sleeves = np.isin(which, ["l_upper", "r_upper"]) & (t_near < 0.55)
    if long_sleeves:  # down to the wrists
        sleeves = np.isin(which, ["l_upper", "r_upper", "l_fore", "r_fore"])
    top = (torso & (y >= waist)) | sleeves | neck_low
    legs = np.isin(which, ["l_thigh", "r_thigh", "l_shin", "r_shin"])
    shoes = (legs | torso) & (y < ankle_y + 0.035)
    bottom = ((torso & (y < waist)) | legs) & ~shoes
    head = np.isin(which, ["head", "neck"]) & (y > ear_mid[1] - 0.06)
    eye_y = (k[1, 1] + k[2, 1]) / 2
    face_front = v[:, 2] > ear_mid[2] + 0.02
    hair = head & ((y > eye_y + 0.035) | ((~face_front) & (y > ear_mid[1] - 0.05)))
    return {"hair": hair, "top": top & ~hair, "bottom": bottom, "shoes": shoes}


def _cluttered(h: int, w: int, gen: np.random.Generator) -> np.ndarray:
    """A room: a wall and floor with furniture-like boxes, shelves and round things in many colours,
    some of them in skin and clothing tones, standing behind and beside the person."""
    import cv2

    img = np.empty((h, w, 3), np.float32)
    horizon = int(h * gen.uniform(0.55, 0.8))
    img[:horizon] = gen.uniform(120, 230, size=3)
    img[horizon:] = gen.uniform(60, 170, size=3)
    for _ in range(int(gen.integers(8, 20))):
        colour = gen.uniform(20, 240, size=3)
        x0, x1 = sorted(gen.uniform(-0.1, 1.1, size=2) * w)
        y1 = horizon + gen.uniform(-0.05, 0.25) * h
        y0 = y1 - gen.uniform(0.05, 0.6) * h
        if gen.random() < 0.7:
            cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), colour.tolist(), -1)
        else:
            cv2.ellipse(img, (int((x0 + x1) / 2), int((y0 + y1) / 2)),
                        (max(int((x1 - x0) / 2), 2), max(int((y1 - y0) / 2), 2)), 0, 0, 360, colour.tolist(), -1)
    img += cv2.GaussianBlur(gen.normal(0, 8, size=(h, w)).astype(np.float32), (0, 0), 1.5)[..., None]
    return np.clip(cv2.GaussianBlur(img, (0, 0), 0.002 * max(h, w) + 0.5), 0, 255)


def _patterned(h: int, w: int, gen: np.random.Generator) -> np.ndarray:
    """Wallpaper: stripes, checks or a plaid at a size from fine to coarse."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = gen.uniform(0.01, 0.08) * max(h, w)
    a, b = gen.uniform(60, 230, size=(2, 3)).astype(np.float32)
    kind = gen.choice(["stripes", "checks", "plaid"])
    if kind == "stripes":
        t = (np.sin(2 * np.pi * (xx * np.cos(0.3) + yy * np.sin(0.3)) / period) > 0).astype(np.float32)
    elif kind == "checks":
        t = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
    else:
        t = 0.5 * ((np.sin(2 * np.pi * xx / period) > 0.6) + (np.sin(2 * np.pi * yy / period) > 0.6)).astype(np.float32)
    return a * (1 - t[..., None]) + b * t[..., None]

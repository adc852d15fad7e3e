"""Stage 4, fit: a body model fitted to the keypoints and the silhouette of one photo.

What is optimised (per photo): the free shape parameters, ten limb rotations, the global
orientation and the translation of the body in the camera. What is *not* free:
- height: the body is scaled so its standing A-pose height (the mesh that is measured and
  exported) equals the user's height exactly; where the shape itself sets the stature
  (``BodyModel.natural_height``: Anny's height phenotype) the scale is also held near 1, so a
  person of 164 cm gets the proportions the model gives people of 164 cm;
- mass: with a weight given, the standing A-pose volume × ``DENSITY`` is pulled onto it;
- gender: chosen by the user.
Stages: A, the body turned and placed onto the torso keypoints; B, everything (Adam) on
confidence-weighted robust keypoint reprojection (the model's keypoints moved to where the pose
detector puts them: ``BodyModel.detector_offsets``), silhouette agreement (projected vertices
inside the mask, and every mask contour point near the projected body), shape and pose priors
(the pose toward the A-pose the photo is asked for, most on what a front view hardly shows:
bending toward the camera, twisting, turning away) with joint limits; C, the shape alone, pose
and camera kept, on the trunk's width profile against the mask's (``widths``; the model's widths
offset by what its own rasterised silhouette reads, so both sides are measured alike) with the
mass held to the weight: a coarse search over muscle (fat solved for the mass), then
Levenberg-Marquardt. C is what makes the photo tell muscle from fat: B's silhouette terms move
the shape far less than the mass term and the priors do. Then the pose and camera are fitted
again for C's shape (B without the shape) and C runs once more (``rounds``): the pose found
with the wrong shape biases the widths C reads.
Intrinsics come from EXIF (35 mm-equivalent focal) or a 50 mm default.
Batch-first: B photos are fitted together (one body forward per step for all of them).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from inference.bodies.base import LIMB, LIMBS, BodyModel, on_device, rotvec_to_matrix
from inference.bodies.sparse import remembered, to_csr
from inference.stages import widths as W
from inference.stages.detect import crossed_sides
from inference.stages.shape_prior import PRIOR_FILE, ShapePrior, photo_features
from inference.types import Camera, Subject, focal_px_from_35mm

DENSITY = 985.0  # kg/m³, whole human body (with lungs); literature 985-1010
DEFAULT_FOCAL_35MM = 50.0
KEYPOINT_MIN_CONF = 0.3
N_CLOTH = 2  # stage C's clothes offsets: at the hips, under the arms
CLOTH_STARTS = ((0.0, 0.0), (1.5, 1.5), (2.5, 1.0))  # cm; where stage C's coarse search tries them
FLIP_ROWS = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))
FLIP = torch.tensor(FLIP_ROWS)  # body → camera, facing it

# soft joint limits on the limb axis-angles, in body axes (radians): (min, max) per xyz
LIMB_LIMITS = {
    "spine": ((-0.5, 0.5), (-0.5, 0.5), (-0.4, 0.4)),
    "neck": ((-0.6, 0.6), (-0.8, 0.8), (-0.5, 0.5)),
    "left_forearm": ((-2.6, 0.3), (-2.6, 0.3), (-0.3, 0.3)),
    "right_forearm": ((-2.6, 0.3), (-0.3, 2.6), (-0.3, 0.3)),
    "left_thigh": ((-2.0, 0.6), (-0.6, 0.6), (-0.3, 0.8)),
    "right_thigh": ((-2.0, 0.6), (-0.6, 0.6), (-0.8, 0.3)),
    "left_shin": ((-0.05, 2.4), (-0.2, 0.2), (-0.2, 0.2)),
    "right_shin": ((-0.05, 2.4), (-0.2, 0.2), (-0.2, 0.2)),
}


@dataclass
class FitConfig:
    # stage B's Adam steps, and those of each later round's pose-and-camera refit: 70 and 30
    # (were 120 and 40, then 100 and 30: each of these steps moves the shape too and poses the
    # standing body whole, ~12-17 ms on the dev CPU; 70 moved the evals at the noise level,
    # BENCHMARKS.md, "Fewer fit steps" and "Stage B: 70 steps")
    iterations: int = 70
    baseline_iterations: int = 50  # the same without a photo (``use_photo`` off: shape and mass only)
    # stage B with the shape free steps on the body's shape-only part (Anny's rest model), its
    # keypoint basis and the standing body's scale and mass linearised in the shape (finite
    # differences), refreshed every this many steps; 0 (the default): the exact body every step.
    # 10 makes a fit ~1.3x faster on CPU but moved the evals (dev waist/hip 0.76/1.19 ->
    # 0.86/1.38, test 1.01/1.18 -> 1.09/1.31 with the exact inputs): BENCHMARKS.md
    shape_refresh: int = 0
    lr: float = 0.03
    w_keypoints: float = 0.3
    w_inside: float = 0.5
    w_cover: float = 0.5
    w_mass: float = 3.0
    w_shape: float = 0.1
    # pose prior: limbs pulled toward the standard A-pose, per body axis (x: bending toward or
    # away from the camera, y: twisting, z: in the picture's plane, which the photo shows)
    w_pose: float = 0.5
    pose_axis_weights: tuple = (1.0, 1.0, 0.05)
    w_yaw: float = 5.0  # the body turned away from facing the camera
    rounds: int = 2  # stage C, then (pose and camera again, stage C) rounds - 1 more times
    refit_iterations: int = 30
    w_limits: float = 1.0
    use_photo: bool = True  # False: the photo-free baseline (height, weight, gender only)
    # stage C: the shape alone, fitted to the trunk's width profile (Levenberg-Marquardt)
    shape_solve: bool = True
    shape_iterations: int = 12
    coarse_grid: int = 7  # muscle values tried before stage C (see Fitter._coarse_start)
    # stage C's spreads: per width band (cm; bands further off than ``width_huber`` sigmas count
    # linearly, not squared: an arm or a shadow that the segmenter joined to the trunk must not
    # decide the shape), of the mass against the typed weight (relative: people misreport their
    # weight by a few kg, so the photo may pull against it) and where the clothes' offset centres
    # (below). These hold where the learned prior predicts the shape; the ``plain_*`` ones where
    # it does not (``learned_prior`` off, another body model, a silhouette with too few bands),
    # which then has only the population's middle to lean on and trusts the widths and the weight
    # more. Tuned on the dev split (README, accuracy): with the learned prior a band is trusted
    # less (its reading is in the prior's features already) and the typed weight too (a weight
    # 5 kg off moved the girths by as much again as the photo corrected). The mass's spread was
    # 5 % until session 13; 6.5 % (~4.5 kg at 70 kg) lets the photo take back ~40 % of a weight
    # typed 5 kg off instead of ~31 %, for ~0.05-0.1 cm more on the girths' means with the exact
    # weight (dev and a second dev set; 8 % added little more off and cost more exact)
    sigma_width_cm: float = 2.5
    width_huber: float = 3.0
    sigma_mass: float = 0.065
    cloth_mean_cm: float = 1.0
    plain_sigma_width_cm: float = 0.5
    plain_sigma_mass: float = 0.03
    plain_cloth_mean_cm: float = 0.0
    # the mass's spread where the weight was taken on a scale (``Subject.weight_source``), with or
    # without the learned prior: the clothes on the scale and the body's density (``DENSITY``,
    # which differs by a few per cent between people) leave ~2 %. Tuned on the studio tuning set
    # (seed 1): chest/waist/hip 0.76/0.70/0.66 with 6.5 %, 0.53/0.42/0.39 with 2 %, 0.46/0.42/0.31
    # with 1 % (renders of the very density the fit assumes: 1 % would flatter them)
    scale_sigma_mass: float = 0.02
    # clothes: the trunk's silhouette is the clothes' outline and the body lies inside it. Stage
    # C solves, beside the shape, how far the clothes stand off the body on each side (cm) at the
    # hips and under the arms (linear between), each in [0, cloth_max_cm] and pulled toward
    # ``cloth_mean_cm`` by sigma_cloth_cm: a silhouette wider than the typed weight allows is
    # read as cloth
    cloth_gap: bool = True
    cloth_max_cm: float = 4.0
    sigma_cloth_cm: float = 1.5
    # a photo of someone said to wear everyday clothes ("regular") whose silhouette says the
    # clothes follow the body (the learned prior's predicted offset at the hips,
    # ``ShapePrior.predict_cloth``, below this many cm) is fitted as "fitted" (below); 0: never
    auto_fitted_below_cm: float = 1.2
    # a subject in fitted clothes (``Subject.clothing``): the outline is the body's, so stage C
    # expects no offset, the learned prior, trained on clothed photos, reads each band as that
    # much wider (both sides together), as it would be in everyday clothes, and its spread is
    # widened by ``fitted_prior_scale`` (the outline says more without clothes over it). Tuned
    # on a studio-preset set of its own (seed 1), reported on the studio split; the scale 2 until
    # session 23's prior, trained with the inputs off on a quarter of each gender's renders (the
    # studio tuning set's chest/waist/hip 1.00/0.87/0.76 at 2, 0.89/0.73/0.69 at 3, 0.80/0.71/0.57
    # at 4, 1.12/0.72/0.59 at 6)
    fitted_cloth_mean_cm: float = 0.0
    fitted_prior_extra_cm: float = 2.0
    fitted_prior_scale: float = 4.0
    sigma_natural_height: float = 0.01  # relative; for body models with ``natural_height``
    w_shape_solve_prior: float = 10.0
    widths_relative: bool = True
    whole_height: bool = True  # ``widths.whole_height``: a mask that lost the feet or the head's top
    # the learned prior (``shape_prior``): stage C pulls the shape toward what the photo's
    # features predict, by the prediction's cross-validated spread times ``prior_scale``,
    # instead of toward the population's middle (off, or where the body model has none: the
    # latter)
    learned_prior: bool = True
    prior_scale: float = 1.0
    prior_file: str = ""  # another trained prior (``avatar eval train-prior --out``); "": the packaged one
    record_prior_features: bool = False  # keep the features in the diagnostics (training)
    # torch's CPU threads during a fit on the CPU; 0: one where the process may use 2 cores or
    # fewer, else torch's own count. The fit's operations are small (a 14k-vertex body): on
    # 2 cores two threads made a warm fit ~1.15-1.4x slower than one, their barriers waiting on
    # the pipeline's other threads (BENCHMARKS.md, "One thread and sparse products for the fit")
    cpu_threads: int = 0


@dataclass
class FitTarget:
    """Everything one photo says about its subject."""

    subject: Subject
    image_size: tuple[int, int]  # (width, height)
    keypoints: np.ndarray | None = None  # (17, 3) pixels + confidence
    mask: np.ndarray | None = None  # (H, W) bool
    focal_35mm: float | None = None


@dataclass
class FitResult:
    shape: torch.Tensor  # (1, S)
    limbs: torch.Tensor  # (1, L, 3)
    scale: float
    camera: Camera
    vertices: np.ndarray  # posed as in the photo, body frame, scaled (V, 3)
    keypoints_2d: np.ndarray  # (17, 2) model keypoints projected into the photo
    mass_kg: float
    volume_l: float
    # the fitted body in the standard poses: {"apose"|"tpose": (vertices (V, 3), keypoints (17, 3))}
    standard: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)


_THREADS_LOCK = threading.Lock()
_THREADS_HELD: list = [0, 0]  # [fits inside cpu_threads, torch's thread count before the first]


@contextlib.contextmanager
def cpu_threads(n: int = 0):
    """torch's intra-op CPU threads set to ``n`` (0: see ``FitConfig.cpu_threads``) while the
    block runs, then back; fits running together in threads share one setting."""
    if n <= 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        n = 1 if cores <= 2 else torch.get_num_threads()
    with _THREADS_LOCK:
        if _THREADS_HELD[0] == 0:
            _THREADS_HELD[1] = torch.get_num_threads()
            torch.set_num_threads(n)
        _THREADS_HELD[0] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_HELD[0] -= 1
            if _THREADS_HELD[0] == 0:
                torch.set_num_threads(_THREADS_HELD[1])


def intrinsics(width: int, height: int, focal_35mm: float | None) -> tuple[float, float, float]:
    """(f_px, cx, cy) from the EXIF 35 mm-equivalent focal, or a 50 mm default."""
    return focal_px_from_35mm(focal_35mm or DEFAULT_FOCAL_35MM, width, height), width / 2.0, height / 2.0


def mesh_volume(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, V, 3), (F, 3) → (B,) enclosed volume (divergence theorem; closed surface)."""
    if torch.is_grad_enabled() and vertices.requires_grad:
        return _MeshVolume.apply(vertices, faces)
    return _signed_volume(vertices, faces)[0].abs()


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cross products of (B, 3, F) coordinate rows (~7x faster than ``torch.cross`` on (B, F, 3))."""
    ax, ay, az = a.unbind(1)
    bx, by, bz = b.unbind(1)
    return torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], 1)


def _signed_volume(vertices: torch.Tensor, faces: torch.Tensor):
    """→ (signed volume (B,), the faces' corners (3 of (B, 3, F): coordinate rows), v0 × v1)."""
    B, F = vertices.shape[0], faces.shape[0]
    rows = vertices.transpose(1, 2).reshape(B * 3, -1)  # (B 3, V): gathers ~20x faster than (B, 3, V)
    corners = rows.index_select(1, faces.T.reshape(-1)).view(B, 3, 3, F)
    v0, v1, v2 = corners.unbind(2)
    c = _cross(v0, v1)
    # summed in float64: the same float32 volume whatever the batch (the float32 sum's order
    # follows how the batch splits across threads; stage C's deduplicated batches rely on it)
    return (c * v2).sum(1).sum(-1, dtype=torch.float64).to(vertices.dtype) / 6.0, (v0, v1, v2), c


class _MeshVolume(torch.autograd.Function):
    """``mesh_volume`` with its gradient written out: each corner's is the cross product of the
    other two (/6), summed into the vertices by one sparse product. Autograd's own (a backward
    through ``torch.cross`` and three indexings) took ~3x as long on CPU."""

    @staticmethod
    def forward(ctx, vertices, faces):
        vol, (v0, v1, v2), c = _signed_volume(vertices, faces)
        ctx.save_for_backward(v0, v1, v2, c, faces, torch.sign(vol))
        ctx.n_vertices = vertices.shape[1]
        return vol.abs()

    @staticmethod
    def backward(ctx, grad):
        v0, v1, v2, c, faces, sign = ctx.saved_tensors
        B, _, F = v0.shape
        g = (grad * sign / 6.0)[:, None, None]
        per_corner = torch.cat([_cross(v1, v2), _cross(v2, v0), c], 2) * g  # (B, 3, 3 F)
        sums = _corner_sum(faces, ctx.n_vertices, grad.dtype)
        # one sparse matrix-vector product per coordinate row (rows are contiguous: a product
        # with the (3 F, B 3) transpose copies first and takes ~3x as long)
        out = torch.stack([sums @ row for row in per_corner.reshape(B * 3, 3 * F)])  # (B 3, V)
        return out.view(B, 3, -1).transpose(1, 2), None


def _corner_sum(faces: torch.Tensor, n_vertices: int, dtype: torch.dtype) -> torch.Tensor:
    """(V, 3 F) sparse CSR matrix summing each face corner (first corners, second corners,
    third corners) into its vertex (a sparse product: ~50x faster on CPU than ``index_add_``);
    made once per faces tensor."""
    def build():
        idx = faces.T.reshape(-1)
        coo = torch.sparse_coo_tensor(torch.stack([idx, torch.arange(len(idx), device=idx.device)]),
                                      torch.ones(len(idx), dtype=dtype, device=idx.device),
                                      (n_vertices, len(idx)), check_invariants=True)
        return to_csr(coo.coalesce())

    return remembered(faces, f"corner sums of {n_vertices}", dtype, build)


class _LinearBody:
    """The body's shape-only part (``BodyModel.rest_model``), its keypoint basis
    (``keypoint_basis``) and the standing A-pose's (scale, mass), linear in the free shape
    parameters around ``s0`` (B, S): forward differences (one batched forward, no gradient), so
    a step of stage B needs no rest model and no standing body of its own. Anny's rest model is
    piecewise smooth in its phenotypes (it interpolates between anchor bodies); the fitter
    refreshes this every ``FitConfig.shape_refresh`` steps (off by default: it moved the evals)."""

    def __init__(self, fitter: "Fitter", s0: torch.Tensor, free_idx: torch.Tensor, stand: torch.Tensor,
                 heights: torch.Tensor, h: float = 1e-3):
        body = fitter.body
        B, S = s0.shape
        n = len(free_idx)
        room = body.clamp_shape(s0 + h) - s0
        steps = torch.where(room[:, free_idx] > 0.5 * h, h, -h).to(s0.dtype)  # backward at an upper bound
        X = s0[:, None].repeat(1, n + 1, 1)
        X[:, 1 + torch.arange(n, device=s0.device), free_idx] += steps
        X = X.reshape(B * (n + 1), S)
        with torch.no_grad():
            rest = body.rest_model(X)
            st = body.posed_from_rest(rest, stand.repeat_interleave(n + 1, 0))
            scale, mass = fitter._scale_and_mass(st.vertices, heights.repeat_interleave(n + 1))

        def split(e):
            e = e.reshape(B, n + 1, *e.shape[1:])
            return e[:, 0], (e[:, 1:] - e[:, :1]) / steps.view(B, n, *([1] * (e.dim() - 2)))

        with torch.no_grad():
            basis = body.keypoint_basis(rest[4])
        self.s0, self.free_idx = s0, free_idx
        self.rest = [split(e) for e in rest]
        self.basis, self.scale, self.mass = split(basis), split(scale), split(mass)

    def at(self, shape: torch.Tensor):
        """(B, S), with its gradient → (rest model tuple, keypoint basis, scale (B,), mass (B,))."""
        ds = (shape - self.s0)[:, self.free_idx]

        def value(part):
            e0, d = part
            return e0 + torch.einsum("bf,bf...->b...", ds, d)

        return (tuple(value(p) for p in self.rest), value(self.basis), value(self.scale),
                value(self.mass))


class _PhotoTerms:
    """Precomputed image-side data for the silhouette losses of one photo."""

    def __init__(self, target: FitTarget, device, dtype, n_contour: int = 400):
        h, w = target.mask.shape
        self.size = (w, h)
        m = target.mask.astype(np.uint8)
        outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 5).astype(np.float32)
        self.outside = torch.as_tensor(outside, device=device, dtype=dtype)[None, None]
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        pts = np.concatenate([c[:, 0, :] for c in contours], 0).astype(np.float32) if contours else np.zeros((1, 2), np.float32)
        idx = np.linspace(0, len(pts) - 1, min(n_contour, len(pts))).astype(int)
        self.contour = torch.as_tensor(pts[idx], device=device, dtype=dtype)
        ys, xs = np.nonzero(m)
        self.bbox = (xs.min(), ys.min(), xs.max(), ys.max()) if len(xs) else (0, 0, w, h)

    def sample_outside(self, uv: torch.Tensor) -> torch.Tensor:
        """(N, 2) pixels → (N,) distance to the silhouette (0 inside)."""
        w, h = self.size
        grid = torch.stack([uv[:, 0] / (w - 1) * 2 - 1, uv[:, 1] / (h - 1) * 2 - 1], -1)
        d = F.grid_sample(self.outside, grid[None, None], align_corners=True, padding_mode="border")[0, 0, 0]
        # beyond the border keep growing with the distance
        over = (uv[:, 0] - uv[:, 0].clamp(0, w - 1)).abs() + (uv[:, 1] - uv[:, 1].clamp(0, h - 1)).abs()
        return d + over


TRUST_OUTSIDE = 0.02  # a keypoint this far outside the silhouette (share of its height) loses most trust


def keypoint_trust(conf: torch.Tensor, uv: torch.Tensor, term: "_PhotoTerms", pix_h: float) -> torch.Tensor:
    """(17,) detector confidences → the same, less where the detection contradicts the silhouette:
    a keypoint off the silhouette (the detector put an ankle in the gap between the legs) fades
    with its distance; a left/right pair the wrong way round in a frontal photo
    (``crossed_sides``) is dropped, and the silhouette alone places that limb."""
    d = term.sample_outside(uv) / (TRUST_OUTSIDE * pix_h)
    out = conf * torch.exp(-(d**2))
    kp = torch.cat([uv, conf[:, None]], 1).detach().cpu().numpy()
    out[crossed_sides(kp, TRUST_OUTSIDE * pix_h, min_conf=1e-6)] = 0.0
    return out


class Fitter:
    def __init__(self, body: BodyModel, config: FitConfig | None = None):
        self.body = body
        self.config = config or FitConfig()
        self.faces = torch.as_tensor(body.faces, device=body.device)
        # a fixed subset of vertices for the silhouette terms (speed)
        n = int(body.faces.max()) + 1
        self.sil_idx = torch.arange(0, n, 3, device=body.device)
        lo = torch.full((len(LIMBS), 3), -math.pi, dtype=body.dtype)
        hi = torch.full((len(LIMBS), 3), math.pi, dtype=body.dtype)
        for name, lims in LIMB_LIMITS.items():
            for ax, (a, b) in enumerate(lims):
                lo[LIMB[name], ax], hi[LIMB[name], ax] = a, b
        self.limb_lo, self.limb_hi = lo.to(body.device), hi.to(body.device)
        # trunk / arm labels by vertex index (they hold for every shape and pose)
        labels = W.part_labels(body)
        self.part_labels = labels
        self.trunk_idx = torch.as_tensor(np.flatnonzero(labels == W.TRUNK), device=body.device)
        prior_file = Path(self.config.prior_file) if self.config.prior_file else PRIOR_FILE
        if self.config.prior_file and not prior_file.is_file():
            raise FileNotFoundError(f"prior_file {prior_file}: no such file")
        self.prior = ShapePrior.load(prior_file) if body.name == "anny" and self.config.learned_prior else None
        if self.prior is None and body.name == "anny" and self.config.learned_prior:
            logging.getLogger(__name__).warning(
                "the learned shape prior (%s) is missing: the fit falls back to the population's "
                "middle (`avatar eval train-prior` rebuilds it)", prior_file)
        self.prior_idx = None
        if self.prior is not None:
            self.prior_idx = torch.as_tensor([body.shape_names.index(n) for n in self.prior.outputs],
                                             device=body.device)

    # ------------------------------------------------------------------------------------
    def fit(self, targets: list[FitTarget]) -> list[FitResult]:
        if self.body.device.type != "cpu":
            return self._fit(targets)
        with cpu_threads(self.config.cpu_threads):
            return self._fit(targets)

    def _fit(self, targets: list[FitTarget]) -> list[FitResult]:
        body, cfg = self.body, self.config
        dev, dt = body.device, body.dtype
        parts = FitParts(dev)  # where the fit's time goes, in each result's diagnostics
        B = len(targets)
        subjects = [t.subject for t in targets]
        shape = torch.cat([body.initial_shape(s) for s in subjects], 0)
        free = torch.stack([body.free_shape_mask(s) for s in subjects], 0)
        fixed_shape = shape.clone()
        heights = torch.tensor([s.height_cm / 100.0 for s in subjects], device=dev, dtype=dt)
        weights = torch.tensor([s.weight_kg or float("nan") for s in subjects], device=dev, dtype=dt)
        has_w = ~torch.isnan(weights)
        weights = torch.nan_to_num(weights, nan=1.0)
        use_photo = cfg.use_photo and all(t.keypoints is not None and t.mask is not None for t in targets)

        limbs = body.standard_pose(shape, "apose").clone()
        apose = limbs.clone()
        pose_w = torch.tensor(cfg.pose_axis_weights, device=dev, dtype=dt)
        rot = torch.zeros(B, 3, device=dev, dtype=dt)
        trans = torch.zeros(B, 3, device=dev, dtype=dt)
        K = []
        for t in targets:
            f, cx, cy = intrinsics(*t.image_size, t.focal_35mm)
            K.append((f, cx, cy))
        Kt = torch.tensor(K, device=dev, dtype=dt)
        terms: list[_PhotoTerms] = []
        if use_photo:
            terms = [_PhotoTerms(t, dev, dt) for t in targets]
            kp2d = torch.as_tensor(np.stack([t.keypoints for t in targets]), device=dev, dtype=dt)
            conf = kp2d[..., 2] * (kp2d[..., 2] >= KEYPOINT_MIN_CONF)
            # person's pixel height from the silhouette → initial distance along the optical axis
            for i, term in enumerate(terms):
                x1, y1, x2, y2 = term.bbox
                f, cx, cy = K[i]
                z = f * float(heights[i]) / max(y2 - y1, 1.0)
                u, v = (x1 + x2) / 2.0, (y1 + y2) / 2.0
                trans[i] = torch.tensor([(u - cx) * z / f, (v - cy) * z / f, z])
            pix_h = torch.tensor([max(t.bbox[3] - t.bbox[1], 1.0) for t in terms], device=dev, dtype=dt)
            conf = torch.stack([keypoint_trust(conf[i], kp2d[i, :, :2], term, float(pix_h[i]))
                                for i, term in enumerate(terms)])

        flip = FLIP.to(dev, dt)
        free_idx = torch.nonzero(free.any(0)).flatten()

        def standing(shape_):  # → (scale, mass) of the standing A-pose body
            return self._scale_and_mass(body.posed(shape_, apose).vertices, heights)

        def forward(shape_, limbs_, rot_, trans_, photo=True, scale_mass=None, rest=None, basis=None,
                    points=False):
            sil = None
            if scale_mass is None and points and photo and body.splits_rest:
                # stage B: the standing A-pose whole (its height and volume), of the photo pose
                # only what the terms read (the silhouette's vertices, the keypoints)
                rest = body.rest_model(shape_)
                sil, kp, stand_v = body.posed_points_standing(rest, limbs_, apose, self.sil_idx,
                                                              body.keypoint_basis(rest[4]))
                scale_mass = self._scale_and_mass(stand_v, heights)
            elif scale_mass is None:  # the photo pose and the standing A-pose in one body forward
                st, st_stand = body.posed_many(shape_, (limbs_, apose))
                scale_mass = self._scale_and_mass(st_stand.vertices, heights)
            elif rest is not None and basis is not None:  # stage B: what its terms read, alone
                if not photo:
                    return {"scale": scale_mass[0], "mass": scale_mass[1]}
                sil, kp = body.posed_points(rest, limbs_, self.sil_idx, basis)
            else:
                st = body.posed(shape_, limbs_)
            posed = st.vertices if sil is None else None
            scale, mass = scale_mass
            out = {"scale": scale, "mass": mass}
            if photo:
                # centre the body on its pelvis so the translation is the pelvis position
                kp = st.keypoints if sil is None else kp
                pelvis = 0.5 * (kp[:, 11] + kp[:, 12])
                R = rotvec_to_matrix(rot_) @ flip
                def to_cam(x):
                    return ((x - pelvis[:, None]) * scale[:, None, None]) @ R.transpose(1, 2) + trans_[:, None]
                out["kp_cam"] = to_cam(body.detector_keypoints(kp))  # as the detector would see them
                out["v_cam"] = to_cam(posed[:, self.sil_idx] if sil is None else sil)
                out["R"], out["pelvis"] = R, pelvis
                out["posed"] = posed
            return out

        def project(x):  # (B, N, 3) camera → pixels
            z = x[..., 2:3].clamp(min=1e-3)
            return x[..., :2] / z * Kt[:, None, :1] + Kt[:, None, 1:]

        def robust(r2, sigma2):  # Geman-McClure
            return r2 / (r2 + sigma2)

        parts.mark("setup")
        # -- stage A: rigid alignment of the body to the torso keypoints (no shape/pose change)
        if use_photo:
            with torch.no_grad():
                base = forward(shape, limbs, rot, trans)
            # the keypoints in the body frame (pelvis-centred, scaled): the initial rigid
            # transform undone, so the new one is applied by hand (no body forward per step)
            local = (base["kp_cam"] - trans[:, None]) @ base["R"]
            rot.requires_grad_(True)
            trans.requires_grad_(True)
            optA = torch.optim.Adam([rot, trans], lr=0.02)
            torso = [5, 6, 11, 12]
            for _ in range(60):
                R = rotvec_to_matrix(rot) @ flip
                x = local @ R.transpose(1, 2) + trans[:, None]
                r = (project(x)[:, torso] - kp2d[:, torso, :2]) / pix_h[:, None, None]
                loss = (conf[:, torso, None] * r**2).sum()
                optA.zero_grad()
                loss.backward()
                optA.step()
            rot, trans = rot.detach(), trans.detach()

        def stage_b(shape0, limbs, rot, trans, iters: int, shape_free: bool):
            """Adam on the pose, the camera and (with ``shape_free``) the shape."""
            shape_var = shape0.clone().requires_grad_(shape_free)
            limbs = limbs.clone().requires_grad_(True)
            params = [limbs] + ([shape_var] if shape_free else [])
            if use_photo:
                rot, trans = rot.clone().requires_grad_(True), trans.clone().requires_grad_(True)
                params += [rot, trans]
            opt = torch.optim.Adam(params, lr=cfg.lr)
            fixed = rest_f = basis_f = None
            if not shape_free:  # the standing body's scale and mass do not change: once
                with torch.no_grad():
                    fixed = standing(shape_var * free + fixed_shape * (1 - free))
                    if body.splits_rest:  # nor the shape-only part and the keypoints' basis
                        rest_f = body.rest_model(shape_var * free + fixed_shape * (1 - free))
                        basis_f = body.keypoint_basis(rest_f[4])
            linear = shape_free and cfg.shape_refresh > 0 and body.splits_rest
            lin = None
            for it in range(iters):
                sh = shape_var * free + fixed_shape * (1 - free)
                if linear:
                    if it % cfg.shape_refresh == 0:
                        lin = _LinearBody(self, sh.detach(), free_idx, apose, heights)
                    rest_l, basis_l, scale_l, mass_l = lin.at(sh)
                    out = forward(sh, limbs, rot, trans, photo=use_photo, scale_mass=(scale_l, mass_l),
                                  rest=rest_l, basis=basis_l)
                else:
                    out = forward(sh, limbs, rot, trans, photo=use_photo, scale_mass=fixed, rest=rest_f,
                                  basis=basis_f, points=True)
                loss = torch.zeros((), device=dev, dtype=dt)
                if shape_free:
                    mass_err = ((out["mass"] - weights) / weights) ** 2 * has_w
                    loss = loss + cfg.w_mass * 100.0 * mass_err.sum()
                    prior = torch.cat([body.shape_prior(sh[i:i + 1], s) for i, s in enumerate(subjects)])
                    loss = loss + cfg.w_shape * prior.sum()
                    if body.natural_height:
                        loss = loss + cfg.w_mass * 100.0 * ((1.0 / out["scale"] - 1.0) ** 2).sum()
                if use_photo:
                    uv_kp = project(out["kp_cam"])
                    r2 = (((uv_kp - kp2d[..., :2]) / pix_h[:, None, None]) ** 2).sum(-1)
                    loss = loss + cfg.w_keypoints * 100.0 * (conf * robust(r2, 0.05**2) * 0.05**2).sum()
                    uv_v = project(out["v_cam"])
                    for i, term in enumerate(terms):
                        d_out = term.sample_outside(uv_v[i]) / pix_h[i]
                        loss = loss + cfg.w_inside * 100.0 * (d_out**2).mean()
                        # each contour point's nearest vertex, then its distance: the minimum
                        # over all distances (and its gradient) without a backward through the
                        # (contour × vertices) distance matrix
                        with torch.no_grad():
                            nearest = nearest_points(term.contour, uv_v[i])
                        d_cover = (term.contour - uv_v[i][nearest]).norm(dim=-1) / pix_h[i]
                        loss = loss + cfg.w_cover * 100.0 * (d_cover**2).mean()
                    excess = (limbs - self.limb_hi).clamp(min=0) + (self.limb_lo - limbs).clamp(min=0)
                    loss = loss + cfg.w_limits * 100.0 * (excess**2).sum()
                    # the photo is asked for in the A-pose: leaning, bending toward the camera
                    # and twisting are what a front view hardly shows, so they cost most
                    loss = loss + cfg.w_pose * (((limbs - apose) ** 2) * pose_w).sum()
                    loss = loss + cfg.w_yaw * (rot[:, 1] ** 2).sum()  # facing the camera
                opt.zero_grad()
                loss.backward()
                opt.step()
                if shape_free:
                    with torch.no_grad():
                        shape_var.copy_(body.clamp_shape(shape_var))
                history.append(loss.detach())  # read once at the end: no host sync per step
            with torch.no_grad():
                sh = body.clamp_shape(shape_var * free + fixed_shape * (1 - free))
            return sh, limbs.detach(), rot.detach(), trans.detach()

        # -- stage B: everything
        history: list[torch.Tensor] = []
        iters = cfg.iterations if use_photo else cfg.baseline_iterations
        parts.mark("stage_a")
        sh, limbs, rot, trans = stage_b(shape, limbs, rot, trans, iters, True)
        parts.mark("stage_b")
        solve_info: list[dict] = [{} for _ in targets]
        learned: list = [None] * B
        # the width bands read after stage B: the learned prior's features, and stage C's first
        # round, which starts from the same shape, pose and camera
        reads: list = [None] * B
        if use_photo and (self.prior is not None or cfg.record_prior_features):
            for i, t in enumerate(targets):
                reads[i] = self._read_widths(sh[i], t, limbs[i], apose[i], rot[i], trans[i], Kt[i],
                                             float(heights[i]))
                feats = self._prior_features(sh[i], free[i], subjects[i], t, reads[i])
                if cfg.record_prior_features:
                    solve_info[i]["prior_features"] = None if feats is None else feats.tolist()
                if feats is not None and self.prior is not None:
                    with_w = subjects[i].weight_kg is not None
                    cloth = self.prior.predict_cloth(feats, with_weight=with_w)
                    if cloth is not None:
                        solve_info[i]["cloth_predicted_cm"] = [round(float(c), 2) for c in cloth[0]]
                        if subjects[i].clothing == "regular" and cloth[0][0] < cfg.auto_fitted_below_cm:
                            # the silhouette says the clothes follow the body: read it as such
                            subjects[i] = replace(subjects[i], clothing="fitted")
                            feats = self._prior_features(sh[i], free[i], subjects[i], t, reads[i])
                    solve_info[i]["clothing_read"] = subjects[i].clothing
                    mu, sigma = self.prior.predict(feats, with_weight=with_w)
                    scale = cfg.prior_scale * (cfg.fitted_prior_scale if subjects[i].clothing == "fitted" else 1.0)
                    learned[i] = (torch.as_tensor(mu, device=dev, dtype=dt),
                                  torch.as_tensor(sigma * scale, device=dev, dtype=dt))
                    solve_info[i]["prior_mean"] = [round(float(m), 3) for m in mu]
        parts.mark("widths_and_prior")
        if use_photo and cfg.shape_solve:
            for round_ in range(cfg.rounds):
                if round_:  # the pose and camera again, for the shape stage C found
                    _, limbs, rot, trans = stage_b(sh, limbs, rot, trans, cfg.refit_iterations, False)
                # -- stage C: the shape alone, pose and camera kept, on the trunk's width profile;
                # every photo's solver runs in step with the others, and one body forward serves
                # what all of them ask for at each step (a GPU pays per launch, not per row)
                photos: dict[int, _StageCPhoto] = {}
                solvers = [self._solve_shape(
                    i, photos, sh[i], free[i], subjects[i], t, limbs[i], apose[i], rot[i], trans[i], Kt[i],
                    float(heights[i]), float(weights[i]) if bool(has_w[i]) else None, learned[i],
                    reads[i] if round_ == 0 else None) for i, t in enumerate(targets)]
                with torch.no_grad():
                    solved = drive(solvers, lambda asked: self._answer(asked, photos))
                for i, (x, info) in enumerate(solved):
                    sh[i] = x
                    solve_info[i].update(info)

        parts.mark("stage_c")
        with torch.no_grad():
            out = forward(sh, limbs, rot, trans, photo=use_photo)
            # the height is defined on the standing A-pose mesh (what is measured and exported);
            # the fit's A-pose was the starting shape's (arms at slightly other angles): make
            # the height exact on the final shape's
            standard = {k: body.posed(sh, body.standard_pose(sh, k)) for k in ("apose", "tpose")}
            exact = heights / body.rest_height(standard["apose"].vertices)
            out["mass"] = out["mass"] * (exact / out["scale"]) ** 3
            out["scale"] = exact  # the photo-posed body is rescaled about its pelvis (below)
            results = []
            for i, t in enumerate(targets):
                scale = float(out["scale"][i])
                std = {k: (st.vertices[i].cpu().numpy() * scale, st.keypoints[i].cpu().numpy() * scale)
                       for k, st in standard.items()}
                f, cx, cy = K[i]
                w_img, h_img = t.image_size
                if use_photo:
                    R = out["R"][i]
                    pelvis_s = out["pelvis"][i] * out["scale"][i]
                    tvec = trans[i] - R @ pelvis_s
                    posed = (out["posed"][i] * out["scale"][i]).cpu().numpy()
                    cam = Camera(f, f, cx, cy, w_img, h_img, R.cpu().numpy().astype(np.float64),
                                 tvec.cpu().numpy().astype(np.float64))
                    kp_proj = project(out["kp_cam"])[i].cpu().numpy()
                    diag = self._diagnostics(kp_proj, t, terms[i], cam, posed)
                else:
                    posed = (body.posed(sh[i:i + 1], limbs[i:i + 1]).vertices[0] * scale).cpu().numpy()
                    cam = _front_camera(posed, w_img, h_img, f)
                    kp_proj = np.zeros((17, 2))
                    diag = {}
                diag["loss_first"], diag["loss_last"] = float(history[0]), float(history[-1])
                diag["iterations"] = iters
                diag.update(solve_info[i])
                mass = float(out["mass"][i])
                results.append(FitResult(
                    shape=sh[i:i + 1].detach().clone(), limbs=limbs[i:i + 1].detach().clone(),
                    scale=scale, camera=cam, vertices=posed, keypoints_2d=kp_proj,
                    mass_kg=mass, volume_l=mass / DENSITY * 1000.0, standard=std, diagnostics=diag,
                ))
        parts.mark("final")
        for r in results:
            r.diagnostics["fit_parts_ms"] = parts.ms()
        return results

    def _posed_camera(self, shape: torch.Tensor, limbs: torch.Tensor, stand: torch.Tensor,
                      rot: torch.Tensor, trans: torch.Tensor, height_m: float):
        """Candidate shapes (N, S) in one photo's fitted pose (limbs (L, 3), rot (3,), trans
        (3,)); ``stand`` (L, 3): the standing A-pose's limbs (height and mass): → (state,
        scale (N,), mass (N,), to_cam) with ``to_cam`` mapping (N, P, 3) body points to the
        camera frame as the fit does (pelvis-centred, scaled to the height)."""
        n = shape.shape[0]
        return self._posed_camera_rows(shape, limbs[None].expand(n, -1, -1), stand[None].expand(n, -1, -1),
                                       rot[None], trans, height_m)

    def _posed_camera_rows(self, shape: torch.Tensor, limbs: torch.Tensor, stand: torch.Tensor,
                           rot: torch.Tensor, trans: torch.Tensor, height_m):
        """``_posed_camera`` with a pose, camera and height per row (several photos' candidates
        in one forward): limbs and stand (N, L, 3), rot (N, 3) or (1, 3), trans (N, 1, 3) or
        (3,), height_m (N,) or one number."""
        st = self.body.posed(shape, limbs)
        scale, mass = self._scale_and_mass(self.body.posed(shape, stand).vertices, height_m)
        pelvis = 0.5 * (st.keypoints[:, 11] + st.keypoints[:, 12])
        R = rotvec_to_matrix(rot) @ on_device(FLIP_ROWS, shape.device, shape.dtype)

        def to_cam(x):
            return ((x - pelvis[:, None]) * scale[:, None, None]) @ R.transpose(1, 2) + trans

        return st, scale, mass, to_cam

    def _solve_shape(self, index: int, photos: dict, shape, free, subject: Subject, target: FitTarget,
                     limbs, stand, rot, trans, K, height_m: float, weight_kg: float | None, learned=None,
                     read=None):
        """Stage C: Levenberg-Marquardt on the free shape parameters of one photo (and, with
        ``cloth_gap``, the clothes' two offsets), pose and camera fixed, on
        ``_shape_residuals``. Few parameters and a stiff mass term: a (finite-difference)
        Gauss-Newton step follows the constant-mass valley where a first-order optimiser crawls.
        A generator (run by ``drive``): it yields what it needs evaluated, ``("res", P)``
        (residuals of candidates P) or ``("mass", X)``, for the photo it registers in
        ``photos[index]``, and returns (shape, info)."""
        photo, info = self._shape_residuals(shape, subject, target, limbs, stand, rot, trans, K,
                                            height_m, weight_kg, learned, read)
        if photo is None:
            return shape, info
        photos[index] = photo
        n_shape = shape.shape[0]
        extra = None
        if learned is not None:  # the prediction itself is a start too
            extra = shape[None].clone()
            extra[0, self.prior_idx] = learned[0]
            extra = self.body.clamp_shape(extra)
        start = yield from self._coarse_start(shape, free, height_m, weight_kg, extra)
        free_idx = torch.nonzero(free > 0).flatten()
        if self.config.cloth_gap:
            free_idx = torch.cat([free_idx, n_shape + torch.arange(N_CLOTH, device=free_idx.device)])
        x, cost0, cost = yield from _asking(
            levenberg_marquardt_steps(start, free_idx, self._clamp_params, self.config.shape_iterations),
            lambda P: ("res", P))
        info.update(width_cost_first=round(cost0, 3), width_cost_last=round(cost, 3))
        if self.config.cloth_gap:
            info["cloth_gap_cm"] = [round(float(g), 2) for g in x[n_shape:]]
        return x[:n_shape], info

    def _clamp_params(self, X: torch.Tensor) -> torch.Tensor:
        """(N, S + N_CLOTH) stage C parameters onto their valid ranges."""
        n_shape = X.shape[1] - N_CLOTH
        out = X.clone()
        out[:, :n_shape] = self.body.clamp_shape(X[:, :n_shape].clone())
        out[:, n_shape:] = X[:, n_shape:].clamp(0.0, self.config.cloth_max_cm)
        return out

    def _coarse_start(self, shape, free, height_m: float, weight_kg: float | None,
                      extra: torch.Tensor | None = None):
        """The best of a few candidates for stage C to start from: the shape so far and, where
        the body model names a ``mass_search`` pair (Anny: muscle, weight), a grid over the first
        with the second solved (bisection) for the typed mass. The mass surface is only piecewise
        smooth (Anny interpolates between extreme bodies), so a local solver started on one side
        of a kink does not see a better valley on the other. A generator, as ``_solve_shape``."""
        body = self.body
        gaps = torch.tensor(CLOTH_STARTS, device=shape.device, dtype=shape.dtype)
        if not self.config.cloth_gap:
            gaps = gaps[:1]

        def with_gaps(X):  # (N, S) → (N * G, S + N_CLOTH): every candidate with every gap start
            n, g = X.shape[0], gaps.shape[0]
            return torch.cat([X.repeat_interleave(g, 0), gaps.repeat(n, 1)], 1)

        def best(X):
            X = with_gaps(X)
            R = yield ("res", X)
            return X[int(torch.argmin((R ** 2).sum(1)))]

        first = shape[None] if extra is None else torch.cat([shape[None], extra])
        if body.mass_search is None or not all(bool(free[i] > 0) for i in body.mass_search):
            return (yield from best(first))
        a, b = body.mass_search
        grid = torch.linspace(0.0, 1.0, self.config.coarse_grid, device=shape.device, dtype=shape.dtype)
        X = shape[None].repeat(len(grid), 1)
        X[:, a] = grid
        if weight_kg is not None:
            X[:, b] = yield from _asking(
                solve_monotone_steps(weight_kg, len(grid), X.dtype, X.device),
                lambda ask: ("mass", body.clamp_shape(_with_column(X[ask[0]], b, ask[1]))))
        return (yield from best(torch.cat([first, body.clamp_shape(X)])))

    @torch.no_grad()
    def _answer(self, asked: dict[int, tuple], photos: dict) -> dict[int, torch.Tensor]:
        """What stage C's solvers asked for (``drive``), one body forward per kind for all photos:
        ``("res", P)`` → residuals (N, R); ``("mass", X)`` → kg (N,) of the standing bodies."""
        out: dict[int, torch.Tensor] = {}
        res = {j: a[1] for j, a in asked.items() if a[0] == "res"}
        mass = {j: a[1] for j, a in asked.items() if a[0] == "mass"}
        if res:
            out.update(self._residuals_of(res, photos))
        if mass:
            heights = self._rows([(photos[j].height_m, len(X)) for j, X in mass.items()])
            stand = torch.cat([photos[j].stand[None].expand(len(X), -1, -1) for j, X in mass.items()])
            kg = self._scale_and_mass(self.body.posed(torch.cat(list(mass.values())), stand).vertices, heights)[1]
            for j, part in zip(mass, kg.split([len(X) for X in mass.values()])):
                out[j] = part
        return out

    def _rows(self, values: list[tuple[float, int]]):
        """One number per row: a plain number where all rows share it (one photo: the same
        arithmetic as before stage C ran several photos together), else a tensor (N,)."""
        if len({v for v, _ in values}) == 1:
            return values[0][0]
        b = self.body
        return torch.cat([torch.full((n,), float(v), dtype=b.dtype, device=b.device) for v, n in values])

    def _residuals_of(self, asked: dict[int, torch.Tensor], photos: dict) -> dict[int, torch.Tensor]:
        """Residuals of each photo's candidates (``_StageCPhoto.residuals``) from one forward:
        candidates that differ only in the clothes' offsets (the coarse search's gap starts, the
        Jacobian's cloth columns) share a row."""
        parts = []
        for j, P in asked.items():
            shapes, inverse = distinct_rows(P[:, :photos[j].n_shape])
            parts.append((j, P, shapes, inverse))
        p0 = photos[parts[0][0]]
        if len(parts) == 1:  # one photo: its pose, camera and height as they are
            st, scale, mass, to_cam = self._posed_camera(parts[0][2], p0.limbs, p0.stand, p0.rot, p0.trans,
                                                         p0.height_m)
        else:
            X = torch.cat([q[2] for q in parts])

            def per_row(get):
                return torch.cat([get(photos[j]).expand(len(sh), *get(photos[j]).shape[1:])
                                  for j, _, sh, _ in parts])

            heights = self._rows([(photos[j].height_m, len(sh)) for j, _, sh, _ in parts])
            st, scale, mass, to_cam = self._posed_camera_rows(
                X, per_row(lambda p: p.limbs[None]), per_row(lambda p: p.stand[None]),
                per_row(lambda p: p.rot[None]), per_row(lambda p: p.trans[None, None]), heights)
        v_cam = to_cam(st.vertices)
        out, at = {}, 0
        for j, P, shapes, inverse in parts:
            k = len(shapes)
            p = photos[j]
            out[j] = p.residuals(P, p.project(v_cam[at:at + k])[inverse], scale[at:at + k][inverse],
                                 mass[at:at + k][inverse])
            at += k
        return out

    def _scale_and_mass(self, standing: torch.Tensor, height_m) -> tuple[torch.Tensor, torch.Tensor]:
        """Standing meshes (N, V, 3) → (scale (N,) that makes them ``height_m`` tall, mass (N,)
        kg of the scaled body at ``DENSITY``). The standing A-pose, not the model's rest mesh:
        the two differ (Anny's rest mesh is ~1 % shorter than its posed one; posing changes the
        volume by up to ~2 %), and the standing mesh is what is measured and exported."""
        scale = height_m / self.body.rest_height(standing)
        return scale, mesh_volume(standing, self.faces) * scale**3 * DENSITY

    @torch.no_grad()
    def _read_widths(self, shape, target: FitTarget, limbs, stand, rot, trans, K, height_m: float,
                     across_limbs: bool = True):
        """The trunk's width bands of the mask and of the body as fitted so far (its own
        rasterised silhouette: what a mask of this body would show against its vertices'
        extents, pixel edges, skin that follows the arms; stage C adds the difference to the
        model's widths so both sides are read alike; and, with ``across_limbs``, across the
        limbs, the neck and the shoulders for the learned prior) → (uv (V, 2) pixels, mask's,
        body's)."""
        st, _, _, to_cam = self._posed_camera(shape[None], limbs, stand, rot, trans, height_m)

        def project(x):
            return (x[..., :2] / x[..., 2:3].clamp(min=1e-3) * K[:1] + K[1:])[0].cpu().numpy()

        uv, kp_uv = project(to_cam(st.vertices)), project(to_cam(st.keypoints))
        raster = W.rasterize(uv, self.body.faces, target.mask.shape)
        wt = W.mask_widths(target.mask, uv, self.part_labels, kp_uv)
        own = W.mask_widths(raster, uv, self.part_labels, kp_uv)
        if self.config.whole_height:
            W.whole_height(wt, target.mask, raster, np.asarray(target.keypoints), KEYPOINT_MIN_CONF)
        if across_limbs:
            torso = W.band_edges(kp_uv)[1]
            wt.limb_px = W.limb_widths(target.mask, kp_uv, torso)
            own.limb_px = W.limb_widths(raster, kp_uv, torso)
        return uv, wt, own

    @torch.no_grad()
    def _shape_residuals(self, shape, subject: Subject, target: FitTarget, limbs, stand, rot, trans,
                         K, height_m: float, weight_kg: float | None, learned=None, read=None):
        """The residuals stage C minimises for one photo (its ``_StageCPhoto``'s, of candidate
        shapes (N, S) and their bodies → (N, R)): the trunk's width in each trusted band against
        the mask's (``widths``; read against the body's pixel height), the mass against the
        typed weight, the stature against the shape's own (``BodyModel.natural_height``) and the
        shape prior. The bands and the mask's widths are read once, with the body as fitted so
        far: → (the photo's ``_StageCPhoto``, info), None for the first when the mask has too
        few trusted bands. ``read``: ``_read_widths`` of this shape and pose, when already made."""
        cfg, body = self.config, self.body

        def project(x):
            return x[..., :2] / x[..., 2:3].clamp(min=1e-3) * K[:1] + K[1:]

        # a later round reads the trunk's bands again for its pose; the limbs only feed the prior
        uv, wt, own = read or self._read_widths(shape, target, limbs, stand, rot, trans, K, height_m,
                                                across_limbs=False)
        t_lo, t_hi = W.band_extents(torch.as_tensor(uv[None][:, self.trunk_idx.cpu().numpy()]),
                                    torch.as_tensor(wt.edges))
        use = wt.valid & own.valid
        info = {"width_bands": int(use.sum())}
        if use.sum() < 3:
            return None, info
        edges = torch.as_tensor(wt.edges, device=shape.device, dtype=shape.dtype)
        valid = torch.as_tensor(use, device=shape.device)
        want = torch.as_tensor(wt.width_px[use], device=shape.device, dtype=shape.dtype)
        bias = torch.as_tensor((own.width_px - (t_hi - t_lo)[0].numpy())[use], device=shape.device,
                               dtype=shape.dtype)
        model_h_px = float(np.ptp(uv[:, 1]))
        h_bias = own.height_px - model_h_px
        cm_per_px = 100.0 * height_m / max(model_h_px, 1.0)

        n_shape = shape.shape[0]
        # where each band lies between the hips (0) and under the arms (1): the clothes' offset
        # there is interpolated between the two solved for
        centre = 0.5 * (edges[:-1] + edges[1:])[valid]
        pos = ((edges[-1] - centre) / (edges[-1] - edges[0])).clamp(0.0, 1.0)

        if learned is not None:
            sigma_w, sigma_m, cloth_mean = cfg.sigma_width_cm, cfg.sigma_mass, cfg.cloth_mean_cm
        else:
            sigma_w, sigma_m, cloth_mean = cfg.plain_sigma_width_cm, cfg.plain_sigma_mass, cfg.plain_cloth_mean_cm
        if subject.clothing == "fitted":
            cloth_mean = cfg.fitted_cloth_mean_cm
        if subject.weight_source == "scale":
            sigma_m = cfg.scale_sigma_mass

        def residuals(P, uv, scale, mass):  # (N, S + N_CLOTH) and their bodies → (N, R)
            X, gap = P[:, :n_shape], P[:, n_shape:]
            lo, hi = W.band_extents(uv[:, self.trunk_idx], edges)
            width = (hi - lo)[:, valid] + bias
            if cfg.widths_relative:  # read against the body's height in pixels, not the camera distance
                model_h = uv[..., 1].amax(-1) - uv[..., 1].amin(-1) + h_bias
                width = width * (wt.height_px / model_h)[:, None]
            cloth = 2.0 * (gap[:, :1] * (1 - pos) + gap[:, 1:2] * pos) if cfg.cloth_gap else 0.0
            r = torch.nan_to_num(((width - want) * cm_per_px + cloth) / sigma_w, nan=0.0,
                                 posinf=0.0, neginf=0.0)
            res = [huber_residual(r, cfg.width_huber)]
            if cfg.cloth_gap:
                res.append((gap - cloth_mean) / cfg.sigma_cloth_cm)
            if weight_kg is not None:
                res.append(((mass - weight_kg) / weight_kg / sigma_m)[:, None])
            if body.natural_height:
                res.append(((1.0 / scale - 1.0) / cfg.sigma_natural_height)[:, None])
            if learned is not None:  # the learned prediction and its spread
                res.append((X[:, self.prior_idx] - learned[0]) / learned[1])
            else:
                prior = body.shape_prior(X, subject)
                res.append(torch.sqrt(cfg.w_shape_solve_prior * prior + 1e-12)[:, None])
            return torch.cat(res, 1)

        return _StageCPhoto(limbs, stand, rot, trans, height_m, n_shape, project, residuals), info

    @torch.no_grad()
    def _prior_features(self, shape, free, subject: Subject, target: FitTarget, read) -> np.ndarray | None:
        """The learned prior's features of one photo (``shape_prior.photo_features``) for the body
        as fitted so far; ``read``: its ``_read_widths``."""
        _, wt, own = read
        return photo_features(subject.height_cm, subject.weight_kg, subject.gender, wt, own,
                              np.asarray(target.keypoints), shape[free > 0].cpu().numpy(),
                              self.config.fitted_prior_extra_cm if subject.clothing == "fitted" else 0.0)

    @staticmethod
    def _diagnostics(kp_proj, target: FitTarget, term: _PhotoTerms, cam: Camera, posed) -> dict:
        kp = target.keypoints
        seen = kp[:, 2] >= KEYPOINT_MIN_CONF
        err = np.linalg.norm(kp_proj - kp[:, :2], axis=1)
        ph = max(term.bbox[3] - term.bbox[1], 1)
        uv = cam.project(posed)
        w, h = term.size
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        ui, vi = uv[inside, 0].astype(int), uv[inside, 1].astype(int)
        frac_in = float(target.mask[vi, ui].mean()) if inside.any() else 0.0
        return {
            "keypoint_error_px": float(err[seen].mean()) if seen.any() else None,
            "keypoint_error_rel": float(err[seen].mean() / ph) if seen.any() else None,
            # the median: a limb the body cannot take up (crossed arms) does not swamp it
            "keypoint_error_median_rel": float(np.median(err[seen]) / ph) if seen.any() else None,
            "vertices_in_silhouette": frac_in,
        }


class FitParts:
    """Wall time between the named marks of one fit call (ms): setup (starting shapes, poses,
    the photos' distance maps), stage_a, stage_b, widths_and_prior (the width reads and the
    learned prior), stage_c (with its later rounds' pose refits), final (the standard poses,
    cameras, diagnostics). On a GPU the device is synchronised at each mark (six syncs a fit),
    so queued work counts where it was asked for."""

    def __init__(self, device) -> None:
        self._device = torch.device(device)
        self._last = time.perf_counter()
        self._ms: dict[str, float] = {}

    def mark(self, name: str) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        now = time.perf_counter()
        self._ms[name] = round((now - self._last) * 1000.0, 1)
        self._last = now

    def ms(self) -> dict[str, float]:
        return dict(self._ms)


def nearest_points(points: torch.Tensor, cloud: torch.Tensor) -> torch.Tensor:
    """(P, 2), (N, 2) → (P,) the index of each point's nearest in ``cloud``. On CPU a k-d tree
    (exact, in float64: ~5x faster than the distance matrix for stage B's 400 contour points
    against ~4,600 vertices; a tie within float32 rounding may pick the other vertex); on a GPU,
    or with a coordinate that is not finite, the distance matrix's first minimum."""
    if cloud.device.type == "cpu":
        data = cloud.detach().numpy()
        if np.isfinite(data).all():
            from scipy.spatial import cKDTree

            tree = cKDTree(data, balanced_tree=False, compact_nodes=False)
            return torch.from_numpy(tree.query(points.detach().numpy(), k=1)[1]).to(torch.long)
    # min(1).indices: argmin's first-minimum index (ties, NaN alike), ~3x faster on CPU than
    # argmin over this (P, N) matrix
    return torch.cdist(points, cloud).min(1).indices


def distinct_rows(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, S) → (the distinct rows (M, S), inverse (N,): ``rows[inverse]`` is ``X``), M ≥ 2 where
    N ≥ 2: the body models' forwards (Anny; SMPL, checked on the synthetic model) give a row the
    same bits at any batch of 2 or more on CPU (checked up to 24; on some CPUs only the same
    values within float rounding), not at batch 1 (other kernels), so a deduplicated batch
    changes no result beyond that."""
    if len(X) < 2:
        return X, torch.arange(len(X), device=X.device)
    rows, inverse = torch.unique(X, dim=0, return_inverse=True)
    if len(rows) == len(X):
        return X, torch.arange(len(X), device=X.device)
    return (rows.expand(2, -1) if len(rows) == 1 else rows), inverse


def _with_column(X: torch.Tensor, col: int, values: torch.Tensor) -> torch.Tensor:
    out = X.clone()
    out[:, col] = values
    return out


@dataclass
class _StageCPhoto:
    """One photo's part of stage C: its pose, camera and height, its projection and its
    residuals of candidates given their bodies (``Fitter._shape_residuals``)."""
    limbs: torch.Tensor
    stand: torch.Tensor
    rot: torch.Tensor
    trans: torch.Tensor
    height_m: float
    n_shape: int
    project: Callable[[torch.Tensor], torch.Tensor]  # (N, P, 3) camera-frame points → (N, P, 2) pixels
    # (P (N, S + N_CLOTH), uv (N, V, 2), scale (N,), mass (N,)) → (N, R)
    residuals: Callable[..., torch.Tensor]


def drive(solvers: list, answer) -> list:
    """Run generator solvers in step: each yields what it needs evaluated and is sent the answer;
    ``answer({index: request})`` answers every solver waiting at once (one batched call where
    one solver's request would be one call each) → {index: answer}. → each solver's result."""
    out: list = [None] * len(solvers)
    waiting: dict = {}
    for j, g in enumerate(solvers):
        try:
            waiting[j] = next(g)
        except StopIteration as stop:
            out[j] = stop.value
    while waiting:
        answers = answer(waiting)
        for j in list(waiting):
            try:
                waiting[j] = solvers[j].send(answers[j])
            except StopIteration as stop:
                out[j] = stop.value
                del waiting[j]
    return out


def _asking(solver, ask):
    """``yield from`` a solver, each of its requests turned into ``ask(request)``."""
    try:
        request = next(solver)
        while True:
            request = solver.send((yield ask(request)))
    except StopIteration as stop:
        return stop.value


def _run(solver, answer):
    """A generator solver run alone, each request answered by ``answer(request)``."""
    try:
        request = next(solver)
        while True:
            request = solver.send(answer(request))
    except StopIteration as stop:
        return stop.value


def solve_monotone(f, target: float, n: int, dtype, device, tol: float = 0.05,
                   iterations: int = 6) -> torch.Tensor:
    """``solve_monotone_steps`` with ``f(rows, v)`` answering each request."""
    return _run(solve_monotone_steps(target, n, dtype, device, tol, iterations), lambda ask: f(*ask))


def solve_monotone_steps(target: float, n: int, dtype, device, tol: float = 0.05,
                         iterations: int = 6):
    """``n`` roots in [0, 1] of ``f_i(v) = target`` for increasing ``f_i``, ``f(rows, v)``
    giving ``f_i(v_i)`` for the (k,) ``rows`` at (k,) values (batched), by false position with
    the Illinois rule; where ``target`` lies outside [f(0), f(1)], the nearer end. The first call
    (at 3n) takes 0, 0.5 and 1, so the search goes on in one half; then it stops once every
    |f(v) - target| < ``tol`` or after ``iterations`` more calls (only the rows still open).
    Stage C's mass search: Anny's mass is smooth in the weight phenotype on each side of its
    middle anchor (0.5), so this takes 2-4 calls where a bisection to the same precision took 8.
    A generator: it yields each call's (rows, values) and is sent f's answer."""
    zero = torch.zeros(n, dtype=dtype, device=device)
    every = torch.arange(n, device=device)
    f0, f_mid, f1 = ((yield every.repeat(3), torch.cat([zero, zero + 0.5, zero + 1.0])) - target).view(3, n)
    low_half = f_mid > 0
    lo, hi = torch.where(low_half, zero, zero + 0.5), torch.where(low_half, zero + 0.5, zero + 1.0)
    f_lo, f_hi = torch.where(low_half, f0, f_mid), torch.where(low_half, f_mid, f1)
    v = torch.where(f0 >= 0, zero, zero + 1.0)  # out of range: the nearer end
    v = torch.where(f_mid == 0, zero + 0.5, v)
    open_ = (f_lo < 0) & (f_hi > 0)
    side = torch.zeros(n, dtype=torch.long, device=device)  # which end moved last: -1 lo, +1 hi
    for _ in range(iterations):
        if not bool(open_.any()):
            break
        guess = lo - f_lo * (hi - lo) / (f_hi - f_lo)
        v = torch.where(open_, guess, v)
        rows = torch.nonzero(open_).flatten()
        fv = torch.zeros_like(v)
        fv[rows] = (yield rows, v[rows]) - target
        done = fv.abs() < tol
        up = fv > 0  # v is above the root: it becomes the upper end
        # Illinois: an end kept twice in a row has its value halved, so the bracket shrinks
        f_lo = torch.where(open_ & up & (side == 1), 0.5 * f_lo, f_lo)
        f_hi = torch.where(open_ & ~up & (side == -1), 0.5 * f_hi, f_hi)
        hi, f_hi = torch.where(open_ & up, v, hi), torch.where(open_ & up, fv, f_hi)
        lo, f_lo = torch.where(open_ & ~up, v, lo), torch.where(open_ & ~up, fv, f_lo)
        side = torch.where(open_, torch.where(up, 1, -1), side)
        open_ = open_ & ~done
    return v


def huber_residual(r: torch.Tensor, k: float) -> torch.Tensor:
    """Residuals whose squares are the Huber loss of ``r`` (quadratic within ``k``, linear beyond),
    so a least-squares solver minimises the robust loss."""
    a = r.abs()
    return torch.where(a <= k, r, torch.sign(r) * torch.sqrt((2.0 * k * a - k * k).clamp(min=0.0)))


def levenberg_marquardt(residuals, x0: torch.Tensor, free_idx: torch.Tensor, clamp,
                        iterations: int, h: float = 0.01) -> tuple[torch.Tensor, float, float]:
    """Minimise ``sum(residuals(X)**2)`` over the entries ``free_idx`` of the (S,) vector ``x0``;
    ``residuals``: (N, S) → (N, R), batched (the finite-difference Jacobian and the trial steps
    are one call each); ``clamp``: (N, S) → (N, S) onto the valid range. → (x, first cost, last)."""
    return _run(levenberg_marquardt_steps(x0, free_idx, clamp, iterations, h), residuals)


def levenberg_marquardt_steps(x0: torch.Tensor, free_idx: torch.Tensor, clamp, iterations: int,
                              h: float = 0.01):
    """``levenberg_marquardt`` as a generator: it yields each batch of candidates (N, S) and is
    sent their residuals (N, R)."""
    x = x0.clone()
    cost0 = cost = float(((yield x[None])[0] ** 2).sum())
    lam = 1e-2
    for _ in range(iterations):
        X = x[None].repeat(len(free_idx) + 1, 1)
        room = clamp(x[None] + h)[0] - x  # forward differences, backward at an upper bound
        steps = torch.where(room[free_idx] > 0.5 * h, h, -h).to(x.dtype)
        X[1 + torch.arange(len(free_idx)), free_idx] += steps
        R = yield X
        J = (R[1:] - R[:1]) / steps[:, None]  # (F, R)
        A, g = J @ J.T, J @ R[0]
        eye = torch.eye(len(A), device=A.device, dtype=A.dtype)
        trials = []
        for lm in (lam / 4, lam, lam * 4):
            delta = -torch.linalg.solve(A + lm * torch.diag(torch.diagonal(A)) + 1e-9 * eye, g)
            xt = x.clone()
            xt[free_idx] += delta
            trials.append((lm, clamp(xt[None])[0]))
        costs = ((yield torch.stack([t for _, t in trials])) ** 2).sum(1)
        best = int(torch.argmin(costs))
        if float(costs[best]) < cost:
            done = cost - float(costs[best]) < 1e-3 * cost
            lam, x, cost = trials[best][0], trials[best][1], float(costs[best])
            if done:
                break
        else:
            lam *= 16
    return x, cost0, cost


def _front_camera(vertices: np.ndarray, width: int, height: int, f: float) -> Camera:
    """A camera facing the body, framing it (used when there is no photo)."""
    lo, hi = vertices.min(0), vertices.max(0)
    centre = (lo + hi) / 2
    dist = f * (hi[1] - lo[1]) * 1.15 / height
    R = FLIP.numpy().astype(np.float64)
    t = np.array([0.0, 0.0, dist]) - R @ centre
    return Camera(f, f, width / 2, height / 2, width, height, R, t)

"""Stage 4, fit: a body model fitted to the keypoints and the silhouette of one photo.

What is optimised (per photo): the free shape parameters, ten limb rotations, the global
orientation and the translation of the body in the camera. What is *not* free:
- height: the body is scaled so its rest-pose height equals the user's height exactly;
- mass: with a weight given, rest volume × ``DENSITY`` is pulled onto it;
- gender: chosen by the user.
Losses: confidence-weighted robust keypoint reprojection; silhouette agreement (projected
vertices inside the mask, and every mask contour point near the projected body); shape and pose
priors with joint limits. Intrinsics come from EXIF (35 mm-equivalent focal) or a 50 mm default.
Batch-first: B photos are fitted together (one body forward per step for all of them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from inference.bodies.base import LIMB, LIMBS, BodyModel, rotvec_to_matrix
from inference.types import Camera, Subject, focal_px_from_35mm

DENSITY = 985.0  # kg/m³, whole human body (with lungs); literature 985-1010
DEFAULT_FOCAL_35MM = 50.0
KEYPOINT_MIN_CONF = 0.3
FLIP = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])  # body → camera, facing it

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
    iterations: int = 120
    lr: float = 0.03
    w_keypoints: float = 0.3
    w_inside: float = 0.5
    w_cover: float = 0.5
    w_mass: float = 3.0
    w_shape: float = 0.1
    w_pose: float = 0.002
    w_limits: float = 1.0
    use_photo: bool = True  # False: the photo-free baseline (height, weight, gender only)


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


def intrinsics(width: int, height: int, focal_35mm: float | None) -> tuple[float, float, float]:
    """(f_px, cx, cy) from the EXIF 35 mm-equivalent focal, or a 50 mm default."""
    return focal_px_from_35mm(focal_35mm or DEFAULT_FOCAL_35MM, width, height), width / 2.0, height / 2.0


def mesh_volume(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, V, 3), (F, 3) → (B,) enclosed volume (divergence theorem; closed surface)."""
    v0, v1, v2 = vertices[:, faces[:, 0]], vertices[:, faces[:, 1]], vertices[:, faces[:, 2]]
    return (torch.cross(v0, v1, dim=-1) * v2).sum(-1).sum(-1).abs() / 6.0


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

    # ------------------------------------------------------------------------------------
    def fit(self, targets: list[FitTarget]) -> list[FitResult]:
        body, cfg = self.body, self.config
        dev, dt = body.device, body.dtype
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

        flip = FLIP.to(dev, dt)

        def forward(shape_, limbs_, rot_, trans_, photo=True):
            st = body.posed(shape_, limbs_)
            rest, posed = body.rest_vertices(st, shape_), st.vertices
            scale = heights / body.rest_height(rest)
            out = {"scale": scale, "rest": rest}
            vol = mesh_volume(rest, self.faces) * scale**3
            out["mass"] = vol * DENSITY
            if photo:
                # centre the body on its pelvis so the translation is the pelvis position
                kp = st.keypoints
                pelvis = 0.5 * (kp[:, 11] + kp[:, 12])
                R = rotvec_to_matrix(rot_) @ flip
                def to_cam(x):
                    return ((x - pelvis[:, None]) * scale[:, None, None]) @ R.transpose(1, 2) + trans_[:, None]
                out["kp_cam"] = to_cam(kp)
                out["v_cam"] = to_cam(posed[:, self.sil_idx])
                out["R"], out["pelvis"] = R, pelvis
                out["posed"] = posed
            return out

        def project(x):  # (B, N, 3) camera → pixels
            z = x[..., 2:3].clamp(min=1e-3)
            return x[..., :2] / z * Kt[:, None, :1] + Kt[:, None, 1:]

        def robust(r2, sigma2):  # Geman-McClure
            return r2 / (r2 + sigma2)

        # -- stage A: rigid alignment of the body to the torso keypoints (no shape/pose change)
        if use_photo:
            with torch.no_grad():
                base = forward(shape, limbs, rot, trans)
            rot.requires_grad_(True)
            trans.requires_grad_(True)
            optA = torch.optim.Adam([rot, trans], lr=0.02)
            torso = [5, 6, 11, 12]
            kpm = base["kp_cam"]  # fixed pose; apply the rigid change by hand
            for _ in range(60):
                R = rotvec_to_matrix(rot) @ flip
                R0 = base["R"]
                local = (kpm - trans.detach()[:, None]) @ R0  # undo the initial rigid transform
                x = local @ R.transpose(1, 2) + trans[:, None]
                r = (project(x)[:, torso] - kp2d[:, torso, :2]) / pix_h[:, None, None]
                loss = (conf[:, torso, None] * r**2).sum()
                optA.zero_grad()
                loss.backward()
                optA.step()
            rot, trans = rot.detach(), trans.detach()

        # -- stage B: everything
        shape_var = shape.clone().requires_grad_(True)
        limbs.requires_grad_(True)
        params = [shape_var, limbs]
        if use_photo:
            rot.requires_grad_(True)
            trans.requires_grad_(True)
            params += [rot, trans]
        opt = torch.optim.Adam(params, lr=cfg.lr)
        iters = cfg.iterations if use_photo else max(40, cfg.iterations // 2)
        history = []
        for it in range(iters):
            sh = shape_var * free + fixed_shape * (1 - free)
            out = forward(sh, limbs, rot, trans, photo=use_photo)
            loss = torch.zeros((), device=dev, dtype=dt)
            mass_err = ((out["mass"] - weights) / weights) ** 2 * has_w
            loss = loss + cfg.w_mass * 100.0 * mass_err.sum()
            prior = torch.cat([body.shape_prior(sh[i:i + 1], s) for i, s in enumerate(subjects)])
            loss = loss + cfg.w_shape * prior.sum()
            if use_photo:
                uv_kp = project(out["kp_cam"])
                r2 = (((uv_kp - kp2d[..., :2]) / pix_h[:, None, None]) ** 2).sum(-1)
                loss = loss + cfg.w_keypoints * 100.0 * (conf * robust(r2, 0.05**2) * 0.05**2).sum()
                uv_v = project(out["v_cam"])
                for i, term in enumerate(terms):
                    d_out = term.sample_outside(uv_v[i]) / pix_h[i]
                    loss = loss + cfg.w_inside * 100.0 * (d_out**2).mean()
                    d_cover = torch.cdist(term.contour, uv_v[i]).amin(1) / pix_h[i]
                    loss = loss + cfg.w_cover * 100.0 * (d_cover**2).mean()
                excess = (limbs - self.limb_hi).clamp(min=0) + (self.limb_lo - limbs).clamp(min=0)
                loss = loss + cfg.w_limits * 100.0 * (excess**2).sum()
                loss = loss + cfg.w_pose * (limbs**2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                shape_var.copy_(body.clamp_shape(shape_var))
            history.append(float(loss.detach()))

        with torch.no_grad():
            sh = body.clamp_shape(shape_var * free + fixed_shape * (1 - free))
            out = forward(sh, limbs, rot, trans, photo=use_photo)
            # the height is defined on the standing A-pose mesh (what is measured and exported);
            # it differs from the rest mesh's by millimetres: make it exact there
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
                diag["loss_first"], diag["loss_last"] = history[0], history[-1]
                diag["iterations"] = iters
                mass = float(out["mass"][i])
                results.append(FitResult(
                    shape=sh[i:i + 1].detach().clone(), limbs=limbs[i:i + 1].detach().clone(),
                    scale=scale, camera=cam, vertices=posed, keypoints_2d=kp_proj,
                    mass_kg=mass, volume_l=mass / DENSITY * 1000.0, standard=std, diagnostics=diag,
                ))
        return results

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
            "vertices_in_silhouette": frac_in,
        }


def _front_camera(vertices: np.ndarray, width: int, height: int, f: float) -> Camera:
    """A camera facing the body, framing it (used when there is no photo)."""
    lo, hi = vertices.min(0), vertices.max(0)
    centre = (lo + hi) / 2
    dist = f * (hi[1] - lo[1]) * 1.15 / height
    R = FLIP.numpy().astype(np.float64)
    t = np.array([0.0, 0.0, dist]) - R @ centre
    return Camera(f, f, width / 2, height / 2, width, height, R, t)

"""Anny (NAVER, Apache-2.0 code, CC0 data) behind the ``BodyModel`` interface.

Shape = Anny's six default phenotypes in [0, 1]: gender (0 male, 1 female), age, muscle, weight,
height, proportions. Gender comes from the user; age is kept in Anny's adult range.
Anny's own frame is Z-up and faces -Y; we rotate it into the canonical frame.
"""
from __future__ import annotations

import importlib.metadata
import os
import time

import numpy as np
import torch

from inference.bodies.base import LIMBS, BodyModel, BodyState
from inference.types import Subject

PHENOTYPES = ("gender", "age", "muscle", "weight", "height", "proportions")
GENDER_VALUE = {"male": 0.0, "female": 1.0, "other": 0.5}
# Anny's age axis: 0.77 ≈ 18 years, 0.83 ≈ 64 years (its shape_calibration mapping).
ADULT_AGE = (0.77, 0.86)
DEFAULT_AGE = 0.80
LIMB_BONES = {
    "spine": "spine03", "neck": "neck01",
    "left_upper_arm": "upperarm01.L", "right_upper_arm": "upperarm01.R",
    "left_forearm": "lowerarm01.L", "right_forearm": "lowerarm01.R",
    "left_thigh": "upperleg01.L", "right_thigh": "upperleg01.R",
    "left_shin": "lowerleg01.L", "right_shin": "lowerleg01.R",
}
# canonical = ANNY_TO_CANON @ anny  (x, z, -y)
ANNY_TO_CANON = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def build_anny(device: torch.device | str = "cpu"):
    """Construct Anny (the first call per machine builds its cache: ~1-3 min, ~0.8 GB)."""
    import anny  # imported lazily: it pulls warp and roma

    model = anny.Anny(skinning_method="lbs").to(device=device, dtype=torch.float32)
    regressor = anny.KeypointsRegressor.coco(model)
    return model, regressor


class AnnyBody(BodyModel):
    name = "anny"
    shape_names = PHENOTYPES
    # muscle against fat at a given mass: the question the photo answers
    mass_search = (PHENOTYPES.index("muscle"), PHENOTYPES.index("weight"))
    natural_height = True  # the height phenotype says the stature
    # yolo11n-pose against Anny's COCO regressor, (outward, up) in torso lengths, medians over the
    # wide calibration set (people in loose clothes, arms 20-60°, stances, many cameras; apart
    # from the dev and test sets): `avatar eval make-set /tmp/calib --split calib && avatar eval
    # keypoint-offsets /tmp/calib`. The detector's hips sit ~8 % of the torso higher and its
    # ankles ~5 % lower than Anny's (on the narrow studio set: 5 % and 8 %, ankles 5 % wider)
    detector_offsets = (
        (0.0, 0.010), (-0.005, 0.010), (-0.005, 0.010), (-0.004, 0.008), (-0.004, 0.008),
        (-0.023, 0.015), (-0.023, 0.015), (-0.021, 0.025), (-0.021, 0.025),
        (0.0, 0.015), (0.0, 0.015), (0.012, 0.076), (0.012, 0.076),
        (0.005, 0.018), (0.005, 0.018), (0.015, -0.049), (0.015, -0.049),
    )

    def __init__(self, gender: str = "other", device: torch.device | str = "cpu"):
        t0 = time.perf_counter()
        self.device = torch.device(device)
        self.dtype = torch.float32
        self.gender = gender
        self.model, self.regressor = build_anny(self.device)
        self.version = importlib.metadata.version("anny")
        self.load_seconds = time.perf_counter() - t0
        self.faces = self.model.faces.detach().cpu().numpy().astype(np.int64)
        self.uv = self.model.texture_coordinates.detach().cpu().numpy().astype(np.float32)
        self.face_uv = self.model.face_texture_coordinate_indices.detach().cpu().numpy().astype(np.int64)
        self._m = ANNY_TO_CANON.to(self.device, self.dtype)
        self._bone_index = torch.tensor(
            [self.model.bone_labels.index(LIMB_BONES[n]) for n in LIMBS], device=self.device
        )
        self._n_bones = len(self.model.bone_labels)
        w = self.regressor.regression_weights[:17].to(self.dtype)
        self._kp_weights = w  # (17, V)

    # ---- shape ----------------------------------------------------------------------------
    def initial_shape(self, subject: Subject) -> torch.Tensor:
        shape = torch.tensor(
            [[GENDER_VALUE[subject.gender], DEFAULT_AGE, 0.5, 0.5, 0.5, 0.5]],
            device=self.device, dtype=self.dtype,
        )
        # pick the height phenotype whose natural height is the subject's (bisection, monotone)
        lo, hi = 0.0, 1.0
        target = subject.height_cm / 100.0
        with torch.no_grad():
            for _ in range(18):
                mid = 0.5 * (lo + hi)
                shape[0, 4] = mid
                h = float(self.rest_height(self.rest(shape).vertices)[0])
                lo, hi = (mid, hi) if h < target else (lo, mid)
        shape[0, 4] = 0.5 * (lo + hi)
        return shape

    def clamp_shape(self, shape: torch.Tensor) -> torch.Tensor:
        out = shape.clamp(0.0, 1.0)
        out[:, 1] = out[:, 1].clamp(*ADULT_AGE)
        return out

    def free_shape_mask(self, subject: Subject) -> torch.Tensor:
        mask = torch.ones(len(PHENOTYPES), device=self.device, dtype=self.dtype)
        mask[0] = 0.0  # gender is given
        return mask

    def shape_prior(self, shape: torch.Tensor, subject: Subject) -> torch.Tensor:
        mid = torch.tensor([GENDER_VALUE[subject.gender], DEFAULT_AGE, 0.5, 0.5, 0.5, 0.5],
                           device=shape.device, dtype=shape.dtype)
        w = torch.tensor([0.0, 4.0, 0.3, 0.3, 0.0, 1.0], device=shape.device, dtype=shape.dtype)
        return ((shape - mid) ** 2 * w).sum(-1)

    # ---- geometry -------------------------------------------------------------------------
    def _to_canon(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self._m.T

    def posed(self, shape: torch.Tensor, limbs: torch.Tensor | None = None) -> BodyState:
        batch = shape.shape[0]
        pose = None
        if limbs is not None:
            from inference.bodies.base import rotvec_to_matrix

            rv_anny = limbs @ self._m  # canonical axis-angle → Anny axes (M^T v, row form)
            rot = rotvec_to_matrix(rv_anny)  # (B, L, 3, 3)
            eye = torch.eye(4, device=self.device, dtype=self.dtype)
            pose = eye.repeat(batch, self._n_bones, 1, 1)
            top = torch.cat([rot, torch.zeros(*rot.shape[:-1], 1, device=self.device, dtype=self.dtype)], -1)
            bottom = eye[3:].expand(batch, len(LIMBS), 1, 4)
            pose = pose.index_copy(1, self._bone_index, torch.cat([top, bottom], -2))
        out = self.model(pose_parameters=pose, phenotype_kwargs=shape)
        # Anny places the root bone at the origin when posing; the rest mesh keeps it where it
        # stands. Shift so the rest soles are on y = 0 in both.
        root = self._to_canon(out["rest_bone_poses"][:, 0, :3, 3])
        rest = self._to_canon(out["rest_vertices"])
        floor = rest[..., 1].amin(-1)  # (B,)
        zero = torch.zeros_like(floor)
        rest = rest - torch.stack([zero, floor, zero], -1)[:, None]
        verts = self._to_canon(out["vertices"])
        verts = verts - torch.stack([zero, floor - root[:, 1], zero], -1)[:, None]
        return BodyState(vertices=verts, keypoints=self.keypoints_from_vertices(verts),
                         rest_vertices=rest)

    def keypoints_from_vertices(self, vertices: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kv,bvd->bkd", self._kp_weights.to(vertices.dtype), vertices)

    def params(self, shape: torch.Tensor, limbs: torch.Tensor) -> dict[str, np.ndarray]:
        s = shape.detach().cpu().numpy()[0]
        out = {f"phenotype_{n}": np.float32(v) for n, v in zip(PHENOTYPES, s)}
        out["phenotypes"] = s.astype(np.float32)
        out["phenotype_names"] = np.array(PHENOTYPES)
        out["limb_rotvecs"] = limbs.detach().cpu().numpy()[0].astype(np.float32)
        out["limb_names"] = np.array(LIMBS)
        out["anny_bones"] = np.array([LIMB_BONES[n] for n in LIMBS])
        return out


def anny_cache_dir() -> str:
    from pathlib import Path

    return os.environ.get("ANNY_CACHE_DIR", str(Path.home() / ".cache" / "anny"))

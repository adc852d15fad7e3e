"""One interface for every body model (Anny, SMPL), so fitting, export and measurement are
written once.

All tensors are in the canonical body frame of ``inference.types`` (metres, +Y up, facing +Z,
left = +X) and *unscaled*: the fitter multiplies by ``scale = height / rest_height`` so the body
has the user's height exactly.

A pose is a set of ``LIMBS`` rotations, axis-angle in body-frame axes, each applied at the limb's
proximal joint relative to the model's rest pose; children follow their parents (ordinary
forward kinematics). Each model maps these limbs onto its own skeleton.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from inference.types import COCO_SIDE, Subject

_ON_DEVICE: dict = {}


def on_device(values: tuple, device, dtype: torch.dtype) -> torch.Tensor:
    """A constant tensor of Python numbers (nested tuples) on ``device``, made once per device and
    dtype. On a GPU, ``torch.tensor(numbers, device=...)`` copies from pageable host memory,
    which first waits for everything queued on the stream: inside the fit's loops that is a host
    sync per call. Shared: never modify the result."""
    key = (values, str(device), dtype)
    out = _ON_DEVICE.get(key)
    if out is None:
        out = _ON_DEVICE.setdefault(key, torch.tensor(values, dtype=dtype).to(device))
    return out

LIMBS = (
    "spine", "neck",
    "left_upper_arm", "right_upper_arm", "left_forearm", "right_forearm",
    "left_thigh", "right_thigh", "left_shin", "right_shin",
)
LIMB = {name: i for i, name in enumerate(LIMBS)}

# COCO indices
NOSE, L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 0, 5, 6, 7, 8, 9, 10
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 11, 12, 13, 14, 15, 16


@dataclass
class BodyState:
    vertices: torch.Tensor  # (B, V, 3)
    keypoints: torch.Tensor  # (B, 17, 3) COCO
    rest_vertices: torch.Tensor | None = None  # (B, V, 3) the same shape unposed, if at hand


class BodyModel(ABC):
    """A parametric body. ``shape`` is a (B, S) tensor whose meaning is model specific."""

    name: str
    version: str
    gender: str
    faces: np.ndarray  # (F, 3) int64 triangles
    uv: np.ndarray | None = None  # (T, 2) texture coordinates, origin bottom-left
    face_uv: np.ndarray | None = None  # (F, 3) indices into ``uv``
    shape_names: tuple[str, ...] = ()
    # (a, b): shape entries for the fitter's coarse search: a grid over entry a, entry b solved
    # so the mass matches (mass must grow with b); None: the model has no such pair
    mass_search: tuple[int, int] | None = None
    # True where the shape parameters set the stature (a body's unscaled height): the fitter
    # then prefers shapes whose own height is the subject's, so the scale stays near 1
    natural_height: bool = False
    # where the pose detector puts each COCO keypoint relative to this model's regressor:
    # (17, 2) (outward, up) in torso lengths, measured by ``avatar eval keypoint-offsets``;
    # None: not measured (the fitter then compares the two as they are)
    detector_offsets: tuple[tuple[float, float], ...] | None = None
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    @abstractmethod
    def initial_shape(self, subject: Subject) -> torch.Tensor:
        """(1, S) photo-free starting shape for this subject (the baseline's starting point)."""

    @abstractmethod
    def clamp_shape(self, shape: torch.Tensor) -> torch.Tensor:
        """Project a shape onto its valid range (called after each optimiser step)."""

    @abstractmethod
    def shape_prior(self, shape: torch.Tensor, subject: Subject) -> torch.Tensor:
        """(B,) penalty keeping the shape plausible for the subject."""

    @abstractmethod
    def free_shape_mask(self, subject: Subject) -> torch.Tensor:
        """(S,) 1 where the fitter may move the shape parameter, 0 where the subject fixes it."""

    @abstractmethod
    def posed(self, shape: torch.Tensor, limbs: torch.Tensor | None = None) -> BodyState:
        """Vertices and COCO keypoints for ``shape`` (B, S) and ``limbs`` (B, len(LIMBS), 3)."""

    def posed_many(self, shape: torch.Tensor, poses) -> list[BodyState]:
        """``posed`` of one shape (B, S) in several poses (each (B, L, 3) or None), as a list;
        a model may share the shape-only work between them (Anny does)."""
        return [self.posed(shape, limbs) for limbs in poses]

    # a model whose forward splits into a shape-only part (``rest_model``: a tuple of tensors)
    # and a posed part that takes it (``posed_from_rest``; ``posed_points``: some vertices and
    # the keypoints from a ``keypoint_basis``) says so here; the fitter's stage B then poses only
    # what its terms read (and can step the shape on that part linearised:
    # ``FitConfig.shape_refresh``)
    splits_rest = False

    def rest_model(self, shape: torch.Tensor) -> tuple:
        raise NotImplementedError

    def posed_from_rest(self, rest: tuple, limbs: torch.Tensor) -> BodyState:
        raise NotImplementedError

    def keypoint_basis(self, rest_vertices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def posed_points(self, rest: tuple, limbs: torch.Tensor, vertex_idx: torch.Tensor,
                     basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def posed_points_standing(self, rest: tuple, limbs: torch.Tensor, stand: torch.Tensor,
                              vertex_idx: torch.Tensor, basis: torch.Tensor):
        """``posed_points`` of ``limbs`` and the whole mesh posed with ``stand`` (B, V, 3), from
        one ``rest_model``: → (points, keypoints, standing vertices)."""
        points, keypoints = self.posed_points(rest, limbs, vertex_idx, basis)
        return points, keypoints, self.posed_from_rest(rest, stand).vertices

    @abstractmethod
    def keypoints_from_vertices(self, vertices: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) → (B, 17, 3): the model's (linear) COCO keypoint regressor."""

    @abstractmethod
    def params(self, shape: torch.Tensor, limbs: torch.Tensor) -> dict[str, np.ndarray]:
        """The model's own parameters for ``*_params.npz`` (batch 1)."""

    @property
    def params_filename(self) -> str:
        return f"{self.name}_params.npz"

    # ---- shared helpers -------------------------------------------------------------------
    def rest(self, shape: torch.Tensor) -> BodyState:
        return self.posed(shape, None)

    def rest_vertices(self, state: BodyState, shape: torch.Tensor) -> torch.Tensor:
        """The unposed mesh of ``shape``: free when ``posed`` already computed it."""
        return state.rest_vertices if state.rest_vertices is not None else self.rest(shape).vertices

    def rest_height(self, vertices: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) → (B,) vertical extent."""
        y = vertices[..., 1]
        return y.amax(dim=-1) - y.amin(dim=-1)

    def detector_keypoints(self, keypoints: torch.Tensor) -> torch.Tensor:
        """(B, 17, 3) model keypoints (body frame, upright) → where the pose detector would put
        them: shifted by ``detector_offsets`` (outward = away from the body's mid-line on that
        side, up = +Y), scaled by the body's own torso length."""
        if self.detector_offsets is None:
            return keypoints
        off = on_device(self.detector_offsets, keypoints.device, keypoints.dtype)
        torso = (0.5 * (keypoints[:, L_SHOULDER] + keypoints[:, R_SHOULDER])
                 - 0.5 * (keypoints[:, L_HIP] + keypoints[:, R_HIP])).norm(dim=-1)  # (B,)
        side = on_device(COCO_SIDE, keypoints.device, keypoints.dtype)
        shift = torch.zeros_like(keypoints)
        shift[..., 0] = off[:, 0] * side
        shift[..., 1] = off[:, 1]
        return keypoints + shift * torso[:, None, None]

    def zero_limbs(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, len(LIMBS), 3, device=self.device, dtype=self.dtype)

    def standard_pose(self, shape: torch.Tensor, kind: str) -> torch.Tensor:
        """Limb rotations that bring the rest pose to a ``"tpose"`` (arms horizontal) or an
        ``"apose"`` (arms 45° down), forearms straight, legs and spine as in the rest pose."""
        angle = {"tpose": 0.0, "apose": math.radians(45.0)}[kind]
        with torch.no_grad():
            kp = self.rest(shape).keypoints
            limbs = self.zero_limbs(shape.shape[0])
            for side, sign, (sh, el, wr) in (
                ("left", 1.0, (L_SHOULDER, L_ELBOW, L_WRIST)),
                ("right", -1.0, (R_SHOULDER, R_ELBOW, R_WRIST)),
            ):
                target = torch.tensor(
                    [sign * math.cos(angle), -math.sin(angle), 0.0], dtype=kp.dtype, device=kp.device
                ).expand(kp.shape[0], 3)
                r_upper = rotvec_between(kp[:, el] - kp[:, sh], target)
                limbs[:, LIMB[f"{side}_upper_arm"]] = r_upper
                fore = rotate(r_upper, kp[:, wr] - kp[:, el])
                limbs[:, LIMB[f"{side}_forearm"]] = rotvec_between(fore, target)
        return limbs


def rotvec_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, 3), (B, 3) → (B, 3) the shortest rotation taking direction ``a`` onto ``b``."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    axis = torch.cross(a, b, dim=-1)
    s = axis.norm(dim=-1, keepdim=True)
    c = (a * b).sum(-1, keepdim=True)
    return axis / s.clamp(min=1e-9) * torch.atan2(s, c)


def rotate(rotvec: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rodrigues: rotate (B, 3) vectors by (B, 3) axis-angles."""
    theta = rotvec.norm(dim=-1, keepdim=True)
    k = rotvec / theta.clamp(min=1e-9)
    return (
        v * torch.cos(theta)
        + torch.cross(k, v, dim=-1) * torch.sin(theta)
        + k * (k * v).sum(-1, keepdim=True) * (1 - torch.cos(theta))
    )


def rotvec_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle → (..., 3, 3), differentiable at zero."""
    theta2 = (rotvec * rotvec).sum(-1, keepdim=True)[..., None]
    theta = torch.sqrt(theta2 + 1e-12)
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*rotvec.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand_as(K)
    # sin(t)/t and (1-cos t)/t² with Taylor fallbacks near zero
    small = theta < 1e-4
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta2 + 1e-12))
    return eye + a * K + b * (K @ K)

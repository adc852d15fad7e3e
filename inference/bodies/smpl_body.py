"""SMPL (through ``smplx``) behind the ``BodyModel`` interface.

Shape = SMPL's 10 betas. SMPL's frame already is the canonical one (+Y up, facing +Z, left = +X)
and its rest joint frames are world-aligned, so a limb's body-frame axis-angle is directly the
local rotation of the SMPL joint it maps to. The mesh is only shifted so that the rest (zero pose)
soles are on y = 0. The ``spine`` limb bends at ``spine1`` (joint 3, the lower back just above
the pelvis), the joint whose height matches Anny's ``spine03`` best, so one limb vector leans the
whole upper body on both models.

The SMPL files are licensed and not bundled: ``avatar weights convert-smpl SRC_DIR`` turns the
official downloads into ``weights/smpl/SMPL_{MALE,FEMALE,NEUTRAL}.pkl`` (see ``smpl_convert``).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
import time
from pathlib import Path

import numpy as np
import torch

from inference.bodies.base import LIMBS, BodyModel, BodyState
from inference.errors import MissingWeightError
from inference.types import Subject

N_BETAS = 10
N_JOINTS = 24
BETA_RANGE = (-5.0, 5.0)
PRIOR_WEIGHT = 0.05
MODEL_FILES = {"male": "SMPL_MALE.pkl", "female": "SMPL_FEMALE.pkl", "other": "SMPL_NEUTRAL.pkl"}
SMPL_GENDER = {"male": "male", "female": "female", "other": "neutral"}
UV_TEMPLATE = "smpl_uv.obj"
CONVERT_HINT = (
    "SMPL is licensed and not bundled: download 'SMPL for Python' from "
    "https://smpl.is.tue.mpg.de, unzip it, and run `avatar weights convert-smpl SRC_DIR` to "
    "convert the official files into weights/smpl/"
)
# limb → SMPL joint index (in the 24-joint full pose; body_pose starts at joint 1)
LIMB_JOINTS = {
    "spine": 3, "neck": 12,
    "left_upper_arm": 16, "right_upper_arm": 17, "left_forearm": 18, "right_forearm": 19,
    "left_thigh": 1, "right_thigh": 2, "left_shin": 4, "right_shin": 5,
}
# COCO-17 keypoint → ("joint", SMPL joint) or ("vertex", smplx vertex_ids['smplh'] index)
COCO_SOURCES = (
    ("vertex", 332), ("vertex", 2800), ("vertex", 6260), ("vertex", 583), ("vertex", 4071),
    ("joint", 16), ("joint", 17), ("joint", 18), ("joint", 19), ("joint", 20), ("joint", 21),
    ("joint", 1), ("joint", 2), ("joint", 4), ("joint", 5), ("joint", 7), ("joint", 8),
)


def load_smpl(path: Path, gender: str, device: torch.device):
    """Build ``smplx.SMPL`` from one pickle; a missing/unusable file becomes MissingWeightError."""
    try:
        import smplx
    except ImportError as exc:  # optional: smplx's own licence is non-commercial
        raise MissingWeightError(
            "the SMPL body model needs the smplx package (non-commercial licence): "
            "pip install -c constraints.txt 'avatar-service[smpl]', or use --body-model anny"
        ) from exc

    if not path.is_file():
        raise MissingWeightError(f"SMPL model file {path} is missing. {CONVERT_HINT}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a 10-betas warning
            model = smplx.SMPL(
                model_path=str(path), gender=SMPL_GENDER[gender], num_betas=N_BETAS,
                create_betas=False, create_global_orient=False, create_body_pose=False,
                create_transl=False,
            )
    except ModuleNotFoundError as exc:  # an official pickle still needs chumpy
        raise MissingWeightError(
            f"SMPL model file {path} is an unconverted official file ({exc}). {CONVERT_HINT}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any unreadable pickle means a bad weight file
        raise MissingWeightError(f"SMPL model file {path} cannot be read ({exc}). {CONVERT_HINT}") from exc
    n_verts, n_joints = model.v_template.shape[0], model.J_regressor.shape[0]
    if model.num_betas != N_BETAS or n_verts != 6890 or n_joints != N_JOINTS:
        raise MissingWeightError(
            f"SMPL model file {path} is not a 6890-vertex, 24-joint, 10-beta SMPL model. {CONVERT_HINT}"
        )
    return model.to(device=device, dtype=torch.float32)


def coco_regressor(j_regressor: np.ndarray) -> np.ndarray:
    """(24, V) joint regressor → (17, V) COCO regressor (joint rows and one-hot face vertices)."""
    w = np.zeros((len(COCO_SOURCES), j_regressor.shape[1]), dtype=np.float64)
    for k, (kind, idx) in enumerate(COCO_SOURCES):
        if kind == "joint":
            w[k] = j_regressor[idx]
        else:
            w[k, idx] = 1.0
    return w


def read_uv_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``vt`` and ``f v/vt`` lines of an OBJ → (uv (T, 2), faces (F, 3), face_uv (F, 3)), 0-based."""
    uv: list[list[float]] = []
    faces: list[list[int]] = []
    face_uv: list[list[int]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "vt":
                uv.append([float(parts[1]), float(parts[2])])
            elif parts[0] == "f":
                corners = [c.split("/") for c in parts[1:]]
                if any(len(c) < 2 or not c[1] for c in corners):
                    raise ValueError(f"{path}: face without texture coordinates: {line.strip()}")
                v = [int(c[0]) - 1 for c in corners]
                t = [int(c[1]) - 1 for c in corners]
                for i in range(1, len(v) - 1):  # fan-triangulate polygons
                    faces.append([v[0], v[i], v[i + 1]])
                    face_uv.append([t[0], t[i], t[i + 1]])
    return (np.asarray(uv, dtype=np.float32).reshape(-1, 2), np.asarray(faces, dtype=np.int64).reshape(-1, 3),
            np.asarray(face_uv, dtype=np.int64).reshape(-1, 3))


def match_face_uv(faces: np.ndarray, obj_faces: np.ndarray, obj_face_uv: np.ndarray) -> np.ndarray | None:
    """``face_uv`` for ``faces`` from an OBJ's faces (same triangles, any order or rotation)."""
    table: dict[tuple[int, int, int], tuple[int, int, int]] = {}
    for tri, tuv in zip(obj_faces, obj_face_uv):
        r = int(np.argmin(tri))
        table[tuple(np.roll(tri, -r).tolist())] = tuple(np.roll(tuv, -r).tolist())
    out = np.empty_like(faces)
    for i, tri in enumerate(faces):
        r = int(np.argmin(tri))
        hit = table.get(tuple(np.roll(tri, -r).tolist()))
        if hit is None:
            return None
        out[i] = np.roll(np.asarray(hit), r)
    return out


def planar_atlas(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A simple two-view UV atlas for a mesh without UVs.

    Faces whose rest normal points forwards (n.z >= 0) get a front orthographic projection in
    the left half of the texture, the others a back projection (mirrored, as seen from behind)
    in the right half; u from x and v from y, one scale for both axes so the body is not
    stretched, normalised to the rest body's bounding box. uv has 2V entries: the front
    projection of every vertex, then the back one.
    """
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[faces]
    normal_z = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2]
    back = normal_z < 0
    lo, hi = v.min(0), v.max(0)
    centre, size = (lo + hi) / 2, np.maximum(hi - lo, 1e-9)
    s = 0.98 * min(0.5 / size[0], 1.0 / size[1])
    x, y = (v[:, 0] - centre[0]) * s, 0.5 + (v[:, 1] - centre[1]) * s
    uv = np.concatenate([np.stack([0.25 + x, y], 1), np.stack([0.75 - x, y], 1)]).astype(np.float32)
    face_uv = faces.astype(np.int64) + len(v) * back[:, None]
    return uv, face_uv


class SmplBody(BodyModel):
    name = "smpl"
    shape_names = tuple(f"beta{i}" for i in range(N_BETAS))

    def __init__(self, model_dir: Path, gender: str = "other", device: torch.device | str = "cpu"):
        from smplx.lbs import blend_shapes, lbs

        t0 = time.perf_counter()
        if gender not in MODEL_FILES:
            raise ValueError(f"gender must be one of {', '.join(MODEL_FILES)}, not {gender!r}")
        self.device = torch.device(device)
        self.dtype = torch.float32
        self.gender = gender
        self.model_dir = Path(model_dir)
        self.model_path = self.model_dir / MODEL_FILES[gender]
        self.model = load_smpl(self.model_path, gender, self.device)
        self._lbs, self._blend_shapes = lbs, blend_shapes
        self.version = f"smplx {importlib.metadata.version('smplx')}"
        self.faces = np.asarray(self.model.faces, dtype=np.int64)
        j_reg = self.model.J_regressor.detach().cpu().numpy().astype(np.float64)
        self._kp_weights = torch.tensor(coco_regressor(j_reg), device=self.device, dtype=self.dtype)
        self._limb_joints = torch.tensor([LIMB_JOINTS[n] for n in LIMBS], device=self.device)
        self.uv, self.face_uv = self._load_uv()
        self.load_seconds = time.perf_counter() - t0

    def _load_uv(self) -> tuple[np.ndarray, np.ndarray]:
        """UVs from ``smpl_uv.obj`` next to the model when present, else a planar atlas."""
        obj = self.model_dir / UV_TEMPLATE
        if obj.is_file():
            try:
                uv, obj_faces, obj_face_uv = read_uv_obj(obj)
            except (OSError, ValueError) as exc:
                raise MissingWeightError(f"{obj} cannot be read as an OBJ with UVs ({exc})") from exc
            if len(uv) and obj_faces.size and obj_faces.max() < len(self.model.v_template) \
                    and obj_face_uv.max() < len(uv):
                face_uv = match_face_uv(self.faces, obj_faces, obj_face_uv)
                if face_uv is None:  # same vertices, different triangulation: use the OBJ's
                    self.faces = obj_faces
                    face_uv = obj_face_uv
                return uv, face_uv
            raise MissingWeightError(f"{obj} does not match the SMPL mesh (6890 vertices with UVs)")
        return planar_atlas(self.model.v_template.detach().cpu().numpy(), self.faces)

    # ---- shape ----------------------------------------------------------------------------
    def initial_shape(self, subject: Subject) -> torch.Tensor:
        # the mean shape; the fitter scales it to the subject's height
        return torch.zeros(1, N_BETAS, device=self.device, dtype=self.dtype)

    def clamp_shape(self, shape: torch.Tensor) -> torch.Tensor:
        return shape.clamp(*BETA_RANGE)

    def free_shape_mask(self, subject: Subject) -> torch.Tensor:
        return torch.ones(N_BETAS, device=self.device, dtype=self.dtype)

    def shape_prior(self, shape: torch.Tensor, subject: Subject) -> torch.Tensor:
        # betas are unit-variance PCA coefficients: a Gaussian prior
        return PRIOR_WEIGHT * (shape ** 2).sum(-1)

    # ---- geometry -------------------------------------------------------------------------
    def full_pose(self, limbs: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B, 24, 3) SMPL axis-angles: limbs at their joints, zeros elsewhere (root included)."""
        pose = torch.zeros(batch, N_JOINTS, 3, device=self.device, dtype=self.dtype)
        if limbs is not None:
            pose = pose.index_copy(1, self._limb_joints, limbs.to(self.dtype))
        return pose

    def posed(self, shape: torch.Tensor, limbs: torch.Tensor | None = None) -> BodyState:
        m = self.model
        betas = shape.to(self.dtype)
        batch = betas.shape[0]
        pose = self.full_pose(limbs, batch).reshape(batch, -1)
        verts, _ = self._lbs(betas, pose, m.v_template, m.shapedirs, m.posedirs, m.J_regressor,
                             m.parents, m.lbs_weights, pose2rot=True)
        # the root stays where it is, so the rest mesh's lowest point is the floor for both
        rest = m.v_template + self._blend_shapes(betas, m.shapedirs)
        floor = rest[..., 1].amin(-1)
        verts = verts - torch.stack([torch.zeros_like(floor), floor, torch.zeros_like(floor)], -1)[:, None]
        return BodyState(vertices=verts, keypoints=self.keypoints_from_vertices(verts))

    def keypoints_from_vertices(self, vertices: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kv,bvd->bkd", self._kp_weights.to(vertices.dtype), vertices)

    def params(self, shape: torch.Tensor, limbs: torch.Tensor) -> dict[str, np.ndarray]:
        pose = self.full_pose(limbs[:1].detach(), 1)[0].cpu().numpy().astype(np.float32)
        return {
            "betas": shape.detach().cpu().numpy()[0].astype(np.float32),
            "body_pose": pose[1:].reshape(-1),
            "global_orient": np.zeros(3, dtype=np.float32),
            "gender": np.array(SMPL_GENDER[self.gender]),
            "limb_rotvecs": limbs.detach().cpu().numpy()[0].astype(np.float32),
            "limb_names": np.array(LIMBS),
            "smpl_joints": np.array([LIMB_JOINTS[n] for n in LIMBS]),
        }

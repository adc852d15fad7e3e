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

from inference.bodies.base import LIMBS, BodyModel, BodyState, on_device
from inference.bodies.sparse import SparseProduct, remembered, to_csr
from inference.types import Subject

PHENOTYPES = ("gender", "age", "muscle", "weight", "height", "proportions")
GENDER_VALUE = {"male": 0.0, "female": 1.0, "other": 0.5}
# Anny's age axis: 0.77 ≈ 18 years, 0.83 ≈ 64 years (its shape_calibration mapping).
ADULT_AGE = (0.77, 0.86)
DEFAULT_AGE = 0.80
HEIGHT_GRID = 17  # height phenotypes at which initial_shape evaluates the body (one batched forward)
HEIGHT_NEAR = 6e-5  # initial_shape's bisection runs the body only this close to the grid's estimate
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
        self._kp_rowsum = w.sum(1)
        self._weights_cache = None  # (vertex index tensor, its rows of the skinning weights)
        self._kp_bones = None  # keypoint_basis's (17 x bones, V) sparse matrix and its transpose (CSR), made when first asked
        self._eye4 = torch.eye(4, device=self.device, dtype=self.dtype)
        self._no_inputs = torch.zeros(1, 0, device=self.device, dtype=self.dtype)
        # the shape-only part of the last few forwards of shapes that need no gradient (see
        # ``_rest_model``): a tuple of (shape, rest) pairs, replaced as a whole (thread-safe reads)
        self._rest_cache: tuple = ()
        # the same for the pose matrices of limbs that need no gradient (the standing A-pose,
        # posed with every shape the fit tries): (limbs, batch, matrices) triples
        self._pose_cache: tuple = ()
        # initial_shape's grid of heights (G, V) per gender value: it depends on nothing else
        self._height_grids: dict[float, torch.Tensor] = {}

    # ---- shape ----------------------------------------------------------------------------
    def initial_shape(self, subject: Subject) -> torch.Tensor:
        shape = torch.tensor(
            [[GENDER_VALUE[subject.gender], DEFAULT_AGE, 0.5, 0.5, 0.5, 0.5]],
            device=self.device, dtype=self.dtype,
        )
        # pick the height phenotype whose natural height is the subject's: an 18-step bisection
        # (the height grows with the phenotype). Most of its steps are decided without a body
        # forward: one batched forward over a grid of heights, interpolated, places the answer
        # within ~1e-5 (the grid spacing squared; the height is smooth in the phenotype, not
        # linear), and a step whose midpoint lies further than NEAR from that estimate goes the
        # way the estimate says. Only the last few steps, near the answer, run the body (as
        # before, one shape at a time), so the result is the plain bisection's, bit for bit.
        grid = torch.linspace(0.0, 1.0, HEIGHT_GRID, dtype=torch.float64)
        # the grid's shapes differ only in the gender: computed once per gender value
        y = self._height_grids.get(float(shape[0, 0]))
        if y is None:
            shapes = shape.repeat(HEIGHT_GRID, 1)
            shapes[:, 4] = grid.to(self.dtype)
            with torch.no_grad():
                y = self.rest(shapes).vertices[..., 1].to(device="cpu", dtype=torch.float64)  # (G, V)
            self._height_grids = {**self._height_grids, float(shape[0, 0]): y}

        def estimated_height(h: float) -> float:
            k = min(max(int(torch.searchsorted(grid, torch.tensor(h, dtype=torch.float64))), 1),
                    HEIGHT_GRID - 1)
            t = (h - float(grid[k - 1])) / float(grid[k] - grid[k - 1])
            yh = y[k - 1] + t * (y[k] - y[k - 1])
            return float(yh.max() - yh.min())

        target = subject.height_cm / 100.0
        lo, hi = 0.0, 1.0
        for _ in range(40):  # the estimate's own bisection
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if estimated_height(mid) < target else (lo, mid)
        estimate = 0.5 * (lo + hi)
        lo, hi = 0.0, 1.0
        with torch.no_grad():
            for _ in range(18):
                mid = 0.5 * (lo + hi)
                if abs(mid - estimate) > HEIGHT_NEAR:
                    below = mid < estimate
                else:
                    shape[0, 4] = mid
                    below = float(self.rest_height(self.rest(shape).vertices)[0]) < target
                lo, hi = (mid, hi) if below else (lo, mid)
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
        mid = on_device((GENDER_VALUE[subject.gender], DEFAULT_AGE, 0.5, 0.5, 0.5, 0.5), shape.device, shape.dtype)
        w = on_device((0.0, 4.0, 0.3, 0.3, 0.0, 1.0), shape.device, shape.dtype)
        return ((shape - mid) ** 2 * w).sum(-1)

    # ---- geometry -------------------------------------------------------------------------
    def _to_canon(self, x: torch.Tensor) -> torch.Tensor:
        """Anny's frame → canonical, (x, y, z) → (x, z, -y): ``x @ ANNY_TO_CANON.T`` as copies
        and one negation (the same bits; forward and backward for the whole mesh ~0.14 ms
        instead of the (V, 3) × (3, 3) product's ~0.43 ms on one CPU thread)."""
        return _ToCanon.apply(x)

    def posed(self, shape: torch.Tensor, limbs: torch.Tensor | None = None) -> BodyState:
        return self.posed_many(shape, (limbs,))[0]

    splits_rest = True

    def rest_model(self, shape: torch.Tensor) -> tuple:
        """The shape-only part of the forward (``_rest_model``): (root, rest, floor, Anny's rest
        bone poses, Anny's rest vertices)."""
        return self._rest_model(shape)

    def posed_from_rest(self, rest: tuple, limbs: torch.Tensor) -> BodyState:
        """``posed`` from a ``rest_model`` tuple (which may be an approximation carrying the
        gradient to the shape)."""
        return self._posed_many(rest, limbs.shape[0], (limbs,))[0]

    def keypoint_basis(self, rest_vertices: torch.Tensor) -> torch.Tensor:
        """Anny's rest vertices (B, V, 3) → (B, 17, bones, 4): each keypoint's regressor
        weights times each vertex's skinning weight, summed over the vertices, in homogeneous rest
        coordinates. The keypoints of a pose are then Σ_bones transform · basis: linear blend
        skinning and the linear keypoint regressor folded into one (``posed_points``), without
        skinning the vertices the regressor reads."""
        if self._kp_bones is None:
            w = self.model.dense_vertex_bone_weights.to(self.dtype)  # (V, J)
            k_idx, v_idx = torch.nonzero(self._kp_weights, as_tuple=True)
            wv = w[v_idx]  # (nnz, J)
            e, j = torch.nonzero(wv, as_tuple=True)
            values = self._kp_weights[k_idx[e], v_idx[e]] * wv[e, j]
            rows = k_idx[e] * self._n_bones + j
            coo = torch.sparse_coo_tensor(
                torch.stack([rows, v_idx[e]]), values, (17 * self._n_bones, w.shape[0]),
                check_invariants=True).coalesce()
            self._kp_bones = (to_csr(coo), to_csr(coo.t().coalesce()))
        B, V, _ = rest_vertices.shape
        homog = torch.cat([rest_vertices, torch.ones(B, V, 1, dtype=rest_vertices.dtype,
                                                      device=rest_vertices.device)], -1)
        flat = homog.permute(1, 0, 2).reshape(V, B * 4)
        basis = SparseProduct.apply(flat, *self._kp_bones)  # (17 J, B 4)
        return basis.reshape(17, self._n_bones, B, 4).permute(2, 0, 1, 3)

    def posed_points(self, rest_model: tuple, limbs: torch.Tensor, vertex_idx: torch.Tensor,
                     basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The vertices ``vertex_idx`` and the COCO keypoints of a pose (as ``posed``: the
        same values within float rounding) from a ``rest_model`` tuple and its
        ``keypoint_basis``: only those vertices are skinned. → ((B, P, 3), (B, 17, 3))."""
        batch = limbs.shape[0]
        transforms, _ = self.model.get_bone_transforms(self._pose_matrices(limbs, batch), rest_model[3])
        return self._points(rest_model, transforms, vertex_idx, basis)[:2]

    def _points(self, rest_model: tuple, transforms: torch.Tensor, vertex_idx: torch.Tensor,
                basis: torch.Tensor, whole: torch.Tensor | None = None) -> tuple:
        """``posed_points`` from a pose's bone ``transforms``; with ``whole`` (other
        transforms) also the whole mesh posed by those."""
        root, _, floor, _, rest_vertices = rest_model
        batch = transforms.shape[0]
        skinned = dense_blend_skinning(rest_vertices[:, vertex_idx].expand(batch, -1, -1),
                                       self._vertex_weights(vertex_idx), transforms)
        kp = torch.einsum("bjrc,bkjc->bkr", transforms[..., :3, :], basis)
        zero = torch.zeros_like(floor)
        shift = torch.stack([zero, floor - root[:, 1], zero], -1)[:, None]
        out = (self._to_canon(skinned) - shift, self._to_canon(kp) - self._kp_rowsum[None, :, None] * shift)
        if whole is not None:
            out += (self._to_canon(self._skinned(rest_vertices.expand(batch, -1, -1), whole)) - shift,)
        return out

    def _vertex_weights(self, vertex_idx: torch.Tensor) -> torch.Tensor:
        """The skinning weights of ``vertex_idx``'s vertices (a gather of the dense (V, bones)
        table costs ~5 ms: once per index set, not per step)."""
        key = self._weights_cache
        if key is None or key[0] is not vertex_idx:
            key = (vertex_idx, self.model.dense_vertex_bone_weights[vertex_idx])
            self._weights_cache = key
        return key[1]

    def posed_points_standing(self, rest_model: tuple, limbs: torch.Tensor, stand: torch.Tensor,
                              vertex_idx: torch.Tensor, basis: torch.Tensor):
        """``posed_points`` and the standing mesh (``posed_from_rest(rest_model, stand)``'s
        vertices) with the kinematics of both poses in one batch (stage B's step: one pass
        through Anny's bone chain, not two; the same values)."""
        batch = limbs.shape[0]
        pose = torch.cat([self._pose_matrices(limbs, batch), self._pose_matrices(stand, batch)], 0)
        transforms, _ = self.model.get_bone_transforms(pose, rest_model[3].repeat(2, 1, 1, 1))
        return self._points(rest_model, transforms[:batch], vertex_idx, basis, whole=transforms[batch:])

    def posed_many(self, shape: torch.Tensor, poses) -> list[BodyState]:
        """Anny's forward (``anny.Anny.forward``: phenotypes → blendshapes → rest mesh and
        bones → kinematics → skinning), split so that the shape-only part (the rest model, most
        of the cost) runs once for all ``poses`` and is reused across calls for a shape that
        needs no gradient (``_rest_model``); the posed part runs once at batch len(poses) × B."""
        return self._posed_many(self._rest_model(shape), shape.shape[0], poses)

    def _posed_many(self, rest_model: tuple, batch: int, poses) -> list[BodyState]:
        root, rest, floor, rest_bone_poses, rest_vertices = rest_model
        deltas = [self._pose_matrices(limbs, batch) for limbs in poses]
        n = len(poses)
        if n == 1:
            pose = deltas[0]
        else:  # identity deltas (``limbs`` None) come as batch 1: expand them to the shape's
            pose = torch.cat([d.expand(batch, -1, -1, -1) for d in deltas], 0)
            rest_bone_poses = rest_bone_poses.repeat(n, 1, 1, 1)
            rest_vertices = rest_vertices.repeat(n, 1, 1)
        # the same calls as anny's RiggedModelWithLinearBlendShapes.forward
        bone_transforms, _ = self.model.get_bone_transforms(pose, rest_bone_poses)
        skinned = self._skinned(rest_vertices.expand(bone_transforms.shape[0], -1, -1), bone_transforms)
        # Anny places the root bone at the origin when posing; the rest mesh keeps it where it
        # stands. Shift so the rest soles are on y = 0 in both.
        zero = torch.zeros_like(floor)
        shift = torch.stack([zero, floor - root[:, 1], zero], -1)[:, None]
        verts = self._to_canon(skinned) - (shift.repeat(n, 1, 1) if n > 1 else shift)
        keypoints = self.keypoints_from_vertices(verts)
        return [BodyState(vertices=verts[i * batch:(i + 1) * batch],
                          keypoints=keypoints[i * batch:(i + 1) * batch], rest_vertices=rest)
                for i in range(n)] if n > 1 else [BodyState(verts, keypoints, rest)]

    def _skinned(self, rest_vertices: torch.Tensor, bone_transforms: torch.Tensor) -> torch.Tensor:
        """Anny's ``get_skinned_vertices``; its dense linear blend skinning as
        ``dense_blend_skinning`` (the same bits, ~1.3-2x faster)."""
        from anny.skinning.skinning import dense_linear_blend_skinning

        if getattr(self.model, "_skinning_method", None) is not dense_linear_blend_skinning:
            return self.model.get_skinned_vertices(rest_vertices, bone_transforms)
        return dense_blend_skinning(rest_vertices, self.model.dense_vertex_bone_weights, bone_transforms)

    def _pose_matrices(self, limbs: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B, L, 3) limb axis-angles → Anny's (B, bones, 4, 4) delta transforms (identity but
        at the limbs' bones); None → identity, batch 1 (as Anny's forward takes no pose)."""
        if limbs is None:
            return self._eye4[None, None].expand(1, self._n_bones, 4, 4)
        cacheable = not limbs.requires_grad
        if cacheable:
            for key, key_batch, value in self._pose_cache:
                if key_batch == batch and key.shape == limbs.shape and torch.equal(key, limbs):
                    return value
        value = self._pose_matrices_of(limbs, batch)
        if cacheable:
            self._pose_cache = ((limbs.clone(), batch, value),) + self._pose_cache[:1]
        return value

    def _pose_matrices_of(self, limbs: torch.Tensor, batch: int) -> torch.Tensor:
        from inference.bodies.base import rotvec_to_matrix

        rv_anny = limbs @ self._m  # canonical axis-angle → Anny axes (M^T v, row form)
        rot = rotvec_to_matrix(rv_anny)  # (B, L, 3, 3)
        eye = self._eye4
        pose = eye.repeat(batch, self._n_bones, 1, 1)
        top = torch.cat([rot, torch.zeros(*rot.shape[:-1], 1, device=self.device, dtype=self.dtype)], -1)
        bottom = eye[3:].expand(batch, len(LIMBS), 1, 4)
        return pose.index_copy(1, self._bone_index, torch.cat([top, bottom], -2))

    def _rest_model(self, shape: torch.Tensor):
        """The part of Anny's forward that depends on the shape alone: → (root (B, 3) canonical,
        rest mesh (B, V, 3) canonical with the soles on y = 0, floor (B,), Anny's rest bone
        poses (B, bones, 4, 4), Anny's rest vertices (B, V, 3)). Remembered for the last few
        shapes that need no gradient: the fit poses one shape many times (stage B with the
        shape fixed; stage C's photo pose and standing pose of the same candidates)."""
        cacheable = not shape.requires_grad
        if cacheable:
            for key, value in self._rest_cache:
                if key.shape == shape.shape and torch.equal(key, shape):
                    return value
        m = self.model
        # as anny.Anny.forward: no local changes, no facial actions (empty inputs)
        coeffs = m._get_phenotype_blendshape_coefficients(shape, self._no_inputs, self._no_inputs)
        rest_model = m.get_rest_model(coeffs)
        rest_bone_poses, rest_vertices = rest_model["rest_bone_poses"], rest_model["rest_vertices"]
        root = self._to_canon(rest_bone_poses[:, 0, :3, 3])
        rest = self._to_canon(rest_vertices)
        floor = rest[..., 1].amin(-1)  # (B,)
        zero = torch.zeros_like(floor)
        rest = rest - torch.stack([zero, floor, zero], -1)[:, None]
        value = (root, rest, floor, rest_bone_poses, rest_vertices)
        if cacheable:
            self._rest_cache = ((shape.clone(), value),) + self._rest_cache[:1]
        return value

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


def dense_blend_skinning(vertices: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning with dense weights: vertices (B, V, 3), weights (V, J), transforms
    (B, J, 4, 4) → (B, V, 3). Anny's ``dense_linear_blend_skinning`` computes the same sums,
    (B, V, 3, 3) products and then a sum over the last axis; here the three products are added
    one by one (without the (B, V, 3, 3) temporaries and their small-axis reductions), and on
    the CPU each vertex's transform is blended from its own few bones (at most 9 of Anny's 104:
    a sparse product, ~7x faster forward, ~15x backward): the same values within float rounding
    (the dense product adds the zero weights too)."""
    if weights.device.type == "cpu":
        blend = _sparse_blend(weights, transforms)
    else:
        blend = torch.einsum("nj,bjik->bnik", weights, transforms[..., :3, :])  # (B, V, 3, 4)
    if torch.is_grad_enabled() and (blend.requires_grad or vertices.requires_grad):
        return _ApplyBlend.apply(blend, vertices)
    return _apply_blend(blend, vertices)


def _sparse_blend(weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """``einsum("nj,bjik->bnik", weights, transforms[..., :3, :])`` as a sparse product."""
    def build():  # once per weights tensor: the model's, and each vertex subset's (``_vertex_weights``)
        w = weights.detach().to(transforms.dtype)
        return to_csr(w), to_csr(w.T.contiguous())

    matrix, transpose = remembered(weights, "skinning weights", transforms.dtype, build)
    B, J = transforms.shape[:2]
    flat = transforms[..., :3, :].reshape(B, J, 12).permute(1, 0, 2).reshape(J, B * 12)
    return SparseProduct.apply(flat, matrix, transpose).view(-1, B, 3, 4).permute(1, 0, 2, 3)


def _apply_blend(blend: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    x, y, z = vertices[..., None, 0], vertices[..., None, 1], vertices[..., None, 2]
    return blend[..., 0] * x + blend[..., 1] * y + blend[..., 2] * z + blend[..., 3]


class _ApplyBlend(torch.autograd.Function):
    """``_apply_blend`` with a backward in two products: autograd's own goes through four
    selections of ``blend``, each a zero-filled (B, V, 3, 4) gradient. The same values: the
    forward is ``_apply_blend``; the gradients are the same single products and three-term
    sums."""

    @staticmethod
    def forward(ctx, blend, vertices):
        ctx.save_for_backward(blend, vertices)
        return _apply_blend(blend, vertices)

    @staticmethod
    def backward(ctx, grad):
        blend, vertices = ctx.saved_tensors
        grad_blend = grad_vertices = None
        if ctx.needs_input_grad[0]:  # grad ⊗ (x, y, z, 1), written in place (no (B, V, 4) cat)
            grad_blend = grad.new_empty(*grad.shape, 4)
            torch.mul(grad[..., None], vertices[..., None, :], out=grad_blend[..., :3])
            grad_blend[..., 3] = grad
        if ctx.needs_input_grad[1]:  # Σ_r grad_r · blend[r, :3], added in the order .sum(-2) adds
            grad_vertices = (grad[..., 0, None] * blend[..., 0, :3] + grad[..., 1, None] * blend[..., 1, :3]
                             + grad[..., 2, None] * blend[..., 2, :3])
        return grad_blend, grad_vertices


class _ToCanon(torch.autograd.Function):
    """(..., 3) Anny-frame points → canonical ones, (x, y, z) → (x, z, -y); the gradient goes
    back the same way, (gx, gy, gz) → (gx, -gz, gy)."""

    @staticmethod
    def forward(ctx, x):
        out = torch.empty_like(x)
        out[..., 0] = x[..., 0]
        out[..., 1] = x[..., 2]
        torch.neg(x[..., 1], out=out[..., 2])
        return out

    @staticmethod
    def backward(ctx, grad):
        out = torch.empty_like(grad)
        out[..., 0] = grad[..., 0]
        torch.neg(grad[..., 2], out=out[..., 1])
        out[..., 2] = grad[..., 1]
        return out


def anny_cache_dir() -> str:
    from pathlib import Path

    return os.environ.get("ANNY_CACHE_DIR", str(Path.home() / ".cache" / "anny"))

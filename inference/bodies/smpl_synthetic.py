"""A synthetic SMPL-format model, so SMPL code paths can be tested without the licensed files.

The official SMPL files cannot be redistributed. This writes a pickle with the same keys, shapes
and topology size (6890 vertices, 24 joints, 10 betas, 207 pose blend shapes) that ``smplx``
loads unchanged. The body is a crude ~1.7 m person in a T-pose (canonical frame: +Y up, facing +Z,
left = +X) built from closed tubes (torso, neck, head, arms, legs, feet), each a grid of rings
with a pole at each end. Joints sit at anatomical places: every ``J_regressor`` row is the mean
of one ring whose centre is the joint, so joints follow the shape blend shapes like SMPL's do.
The face vertices smplx uses (nose 332, eyes 2800/6260, ears 583/4071) are moved to those indices
on the head. Skinning is rigid per bone with a short linear blend across each joint; the shape
space has a few meaningful directions (height, girth, leg length, shoulders, belly) and five
small smooth random fields; the pose blend shapes are zero.

Usage: ``python -m inference.bodies.smpl_synthetic OUT_DIR`` writes SMPL_MALE/FEMALE/NEUTRAL.pkl.
"""
from __future__ import annotations

import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

N_VERTS = 6890
N_JOINTS = 24
N_BETAS = 10
N_POSE_BASIS = 207
# SMPL kinematic tree (parent of each joint; the root's parent is stored as uint32 max)
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
# smplx vertex_ids['smplh'] face landmarks: name → vertex index
FACE_VERTEX_IDS = {"nose": 332, "reye": 6260, "leye": 2800, "rear": 4071, "lear": 583}

PELVIS_Y = 0.93  # the template is shifted so the pelvis is at the origin, as in SMPL
HIP_Y, KNEE_Y, ANKLE_Y = 0.90, 0.50, 0.08
SPINE_Y = (1.04, 1.16, 1.29)
NECK_Y, HEAD_JOINT_Y = 1.47, 1.55
ARM_Y = 1.40
COLLAR_X, SHOULDER_X, ELBOW_X, WRIST_X, HAND_X = 0.07, 0.19, 0.46, 0.71, 0.79
HIP_X = 0.09
FOOT_Y, FOOT_JOINT_Z = 0.035, 0.12
HEAD_CENTER = np.array([0.0, 1.615, 0.01])
HEAD_RADII = np.array([0.075, 0.105, 0.09])
BLEND = 0.025  # half-width (m) of the skinning blend across a joint


@dataclass
class Part:
    """One closed tube: rings of ``seg`` vertices around an axis, plus two poles."""

    name: str
    vertices: np.ndarray  # (n, 3)
    faces: np.ndarray  # (m, 3) local indices
    t: np.ndarray  # (n,) axial coordinate of each vertex (m along the axis)
    centre: np.ndarray  # (n, 3) ring centre of each vertex (the pole itself for poles)
    ring_of: dict[float, np.ndarray] = field(default_factory=dict)  # station t → local indices


def _stations(t0: float, t1: float, n: int, snap: tuple[float, ...]) -> np.ndarray:
    """``n`` evenly spaced stations with the one nearest each ``snap`` value moved onto it."""
    s = np.linspace(t0, t1, n)
    for v in snap:
        i = int(np.argmin(np.abs(s - v)))
        s[i] = v
    if np.any(np.diff(s) <= 0):
        raise ValueError("ring stations are not increasing; use more rings")
    return s


def _tube(name: str, origin: np.ndarray, axis: np.ndarray, e1: np.ndarray, e2: np.ndarray,
          stations: np.ndarray, r1: np.ndarray, r2: np.ndarray, seg: int, cap: float,
          snap: tuple[float, ...] = ()) -> Part:
    """Rings at ``origin + t*axis`` with elliptic radii ``r1`` (along e1) and ``r2`` (along e2)."""
    theta = np.linspace(0.0, 2 * np.pi, seg, endpoint=False)
    centres = origin + stations[:, None] * axis  # (R, 3)
    ring = (r1[:, None, None] * np.cos(theta)[None, :, None] * e1
            + r2[:, None, None] * np.sin(theta)[None, :, None] * e2)  # (R, S, 3)
    verts = (centres[:, None, :] + ring).reshape(-1, 3)
    n_r = len(stations)
    t_start, t_end = stations[0] - cap, stations[-1] + cap
    poles = np.stack([origin + t_start * axis, origin + t_end * axis])
    vertices = np.concatenate([verts, poles])
    t = np.concatenate([np.repeat(stations, seg), [t_start, t_end]])
    centre = np.concatenate([np.repeat(centres, seg, axis=0), poles])

    faces = []
    for i in range(n_r - 1):
        a = i * seg + np.arange(seg)
        b = i * seg + (np.arange(seg) + 1) % seg
        c, d = a + seg, b + seg
        faces += [np.stack([a, b, d], 1), np.stack([a, d, c], 1)]
    p0, p1 = n_r * seg, n_r * seg + 1
    first = np.arange(seg)
    last = (n_r - 1) * seg + np.arange(seg)
    faces.append(np.stack([np.full(seg, p0), (first + 1) % seg, first], 1))
    faces.append(np.stack([np.full(seg, p1), last, (n_r - 1) * seg + (np.arange(seg) + 1) % seg], 1))
    faces = np.concatenate(faces).astype(np.int64)
    # make normals point outwards (signed volume > 0)
    tri = vertices[faces]
    if np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() < 0:
        faces = faces[:, ::-1].copy()
    ring_of = {float(v): int(np.argmin(np.abs(stations - v))) * seg + np.arange(seg) for v in snap}
    return Part(name, vertices, faces, t, centre, ring_of)


def _profile(ts: np.ndarray, knots: list[tuple[float, float]]) -> np.ndarray:
    k = np.array(knots)
    return np.interp(ts, k[:, 0], k[:, 1])


X, Y, Z = np.eye(3)


@dataclass
class Proportions:
    """Per-gender tweaks of the template (metres / factors)."""

    scale: float = 1.0
    shoulder: float = 1.0  # width factor of the upper torso
    hip: float = 1.0  # width factor of the lower torso


GENDER_PROPORTIONS = {
    "male": Proportions(scale=1.03, shoulder=1.08, hip=0.96),
    "female": Proportions(scale=0.97, shoulder=0.93, hip=1.06),
    "neutral": Proportions(),
}


def _build_parts(rings: dict[str, int], segs: dict[str, int], prop: Proportions) -> list[Part]:
    parts: list[Part] = []
    # torso: t = y
    snap = (PELVIS_Y, *SPINE_Y)
    st = _stations(0.84, 1.46, rings["torso"], snap)
    half_w = _profile(st, [(0.84, 0.13 * prop.hip), (0.90, 0.17 * prop.hip), (1.05, 0.14),
                           (1.25, 0.16 * prop.shoulder), (1.38, 0.18 * prop.shoulder),
                           (1.46, 0.11)])
    half_d = _profile(st, [(0.84, 0.08), (0.92, 0.105), (1.05, 0.095), (1.25, 0.11),
                           (1.40, 0.085), (1.46, 0.06)])
    parts.append(_tube("torso", np.zeros(3), Y, Z, X, st, half_d, half_w, segs["torso"], 0.02, snap))
    # neck: t = y
    snap = (NECK_Y, HEAD_JOINT_Y)
    st = _stations(1.40, 1.58, rings["neck"], snap)
    r = np.full_like(st, 0.052)
    parts.append(_tube("neck", np.zeros(3), Y, Z, X, st, r, r, segs["neck"], 0.01, snap))
    # head: an ellipsoid as a tube of latitude rings, t = y
    n = rings["head"]
    phi = np.linspace(0, np.pi, n + 2)[1:-1][::-1]  # bottom → top
    st = HEAD_CENTER[1] - HEAD_RADII[1] * np.cos(phi)
    head = _tube("head", np.array([HEAD_CENTER[0], 0.0, HEAD_CENTER[2]]), Y, Z, X, st,
                 HEAD_RADII[2] * np.sin(phi), HEAD_RADII[0] * np.sin(phi), segs["head"], 0.0)
    # poles of an ellipsoid sit on the surface: t_start/t_end already equal the stations ± 0,
    # so move them to the true poles
    head.vertices[-2] = HEAD_CENTER - HEAD_RADII[1] * Y
    head.vertices[-1] = HEAD_CENTER + HEAD_RADII[1] * Y
    head.t[-2:] = head.vertices[-2:, 1]
    head.centre[-2:] = head.vertices[-2:]
    parts.append(head)
    # arms (T-pose): t = |x|
    for side, sign in (("left", 1.0), ("right", -1.0)):
        snap = (COLLAR_X, SHOULDER_X, ELBOW_X, WRIST_X, HAND_X)
        st = _stations(0.05, 0.87, rings["arm"], snap)
        sw = 1.0 + (prop.shoulder - 1.0) * 0.6
        r_v = _profile(st, [(0.05, 0.055), (SHOULDER_X, 0.055), (0.30, 0.047), (ELBOW_X, 0.038),
                            (0.60, 0.035), (WRIST_X, 0.025), (HAND_X, 0.017), (0.87, 0.01)])
        r_d = _profile(st, [(0.05, 0.055), (SHOULDER_X, 0.05), (0.30, 0.045), (ELBOW_X, 0.038),
                            (0.60, 0.037), (WRIST_X, 0.032), (HAND_X, 0.045), (0.87, 0.025)])
        origin = np.array([0.0, ARM_Y, 0.0])
        # broader shoulders stretch the arm outwards; ``t`` and ring keys stay unstretched
        part = _tube(f"{side}_arm", origin, sign * X, Y, Z, st * sw, r_v, r_d, segs["arm"], 0.01,
                     tuple(v * sw for v in snap))
        part.ring_of = dict(zip(snap, part.ring_of.values()))
        part.t = part.t / sw
        parts.append(part)
    # legs: t = -y (from the hip down)
    for side, sign in (("left", 1.0), ("right", -1.0)):
        snap = (-HIP_Y, -KNEE_Y, -ANKLE_Y)
        st = _stations(-0.97, -0.03, rings["leg"], snap)
        r = _profile(-st, [(0.03, 0.033), (ANKLE_Y, 0.036), (0.35, 0.055), (KNEE_Y, 0.05),
                           (0.65, 0.065), (HIP_Y, 0.08), (0.97, 0.07)])
        origin = np.array([sign * HIP_X * prop.hip, 0.0, 0.0])
        parts.append(_tube(f"{side}_leg", origin, -Y, X, Z, st, r, r, segs["leg"], 0.01, snap))
    # feet: t = z
    for side, sign in (("left", 1.0), ("right", -1.0)):
        snap = (FOOT_JOINT_Z,)
        st = _stations(-0.06, 0.18, rings["foot"], snap)
        k = _profile(st, [(-0.06, 0.55), (-0.035, 1.0), (0.13, 1.0), (0.18, 0.6)])
        origin = np.array([sign * HIP_X * prop.hip, FOOT_Y, 0.0])
        parts.append(_tube(f"{side}_foot", origin, Z, X, Y, st, 0.045 * k, 0.035 * k,
                           segs["foot"], 0.008, snap))
    return parts


def _resolution() -> tuple[dict[str, int], dict[str, int]]:
    """Ring counts that add up to exactly ``N_VERTS`` vertices (torso and head absorb the rest)."""
    segs = {"torso": 48, "neck": 20, "head": 0, "arm": 16, "leg": 18, "foot": 12}
    rings = {"torso": 0, "neck": 12, "head": 0, "arm": 50, "leg": 50, "foot": 12}
    fixed = (rings["neck"] * segs["neck"] + 2 * (rings["arm"] * segs["arm"] + rings["leg"] * segs["leg"]
             + rings["foot"] * segs["foot"]) + 2 * 9)
    for rt in range(36, 50):
        rem = N_VERTS - fixed - rt * segs["torso"]
        for sh in range(24, 41):
            if rem % sh == 0 and 20 <= rem // sh <= 45:
                rings["torso"], rings["head"], segs["head"] = rt, rem // sh, sh
                return rings, segs
    raise RuntimeError("no ring resolution gives exactly 6890 vertices")


def _skin_weights(part: Part, bones: list[tuple[float, int]]) -> np.ndarray:
    """Rigid per-bone weights along the part axis, linearly blended across each joint.

    ``bones``: (t where the bone starts, joint index), increasing t; the first starts at -inf.
    """
    w = np.zeros((len(part.t), N_JOINTS))
    w[:, bones[0][1]] = 1.0
    for t_j, j in bones[1:]:
        a = np.clip((part.t - (t_j - BLEND)) / (2 * BLEND), 0.0, 1.0)[:, None]
        w = w * (1 - a)
        w[:, j] += a[:, 0]
    return w


def build_synthetic(seed: int = 0, gender: str = "neutral") -> dict[str, np.ndarray]:
    """The SMPL-format arrays (see the module docstring)."""
    prop = GENDER_PROPORTIONS[gender]
    rings, segs = _resolution()
    parts = _build_parts(rings, segs, prop)
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts])
    by_name = {p.name: (p, int(o)) for p, o in zip(parts, offsets)}
    v = np.concatenate([p.vertices for p in parts])
    f = np.concatenate([p.faces + o for p, o in zip(parts, offsets)])
    centre = np.concatenate([p.centre for p in parts])
    assert len(v) == N_VERTS, len(v)

    # joints: each is the mean of one ring
    rows: dict[int, np.ndarray] = {}

    def ring(name: str, t: float) -> np.ndarray:
        p, o = by_name[name]
        return p.ring_of[float(t)] + o

    rows[0] = ring("torso", PELVIS_Y)
    rows[3], rows[6], rows[9] = (ring("torso", y) for y in SPINE_Y)
    rows[12], rows[15] = ring("neck", NECK_Y), ring("neck", HEAD_JOINT_Y)
    for side, off in (("left", 0), ("right", 1)):
        rows[1 + off] = ring(f"{side}_leg", -HIP_Y)
        rows[4 + off] = ring(f"{side}_leg", -KNEE_Y)
        rows[7 + off] = ring(f"{side}_leg", -ANKLE_Y)
        rows[10 + off] = ring(f"{side}_foot", FOOT_JOINT_Z)
        for j, x in zip((13, 16, 18, 20, 22), (COLLAR_X, SHOULDER_X, ELBOW_X, WRIST_X, HAND_X)):
            rows[j + off] = ring(f"{side}_arm", x)
    J_regressor = np.zeros((N_JOINTS, N_VERTS))
    for j, idx in rows.items():
        J_regressor[j, idx] = 1.0 / len(idx)

    # skinning
    weights = np.zeros((N_VERTS, N_JOINTS))
    bones = {
        "torso": [(-np.inf, 0), (SPINE_Y[0], 3), (SPINE_Y[1], 6), (SPINE_Y[2], 9)],
        "neck": [(-np.inf, 9), (1.44, 12), (HEAD_JOINT_Y + BLEND, 15)],
        "head": [(-np.inf, 15)],
    }
    for side, off in (("left", 0), ("right", 1)):
        bones[f"{side}_arm"] = [(-np.inf, 13 + off), (SHOULDER_X, 16 + off), (ELBOW_X, 18 + off),
                                (WRIST_X, 20 + off), (HAND_X, 22 + off)]
        bones[f"{side}_leg"] = [(-np.inf, 1 + off), (-KNEE_Y, 4 + off), (-ANKLE_Y, 7 + off)]
        bones[f"{side}_foot"] = [(-np.inf, 7 + off), (FOOT_JOINT_Z, 10 + off)]
    for name, (p, o) in by_name.items():
        weights[o:o + len(p.t)] = _skin_weights(p, bones[name])

    # face landmarks: the head vertices nearest to where a nose / eyes / ears are
    p, o = by_name["head"]
    hv = p.vertices
    front = HEAD_CENTER[2] + HEAD_RADII[2]
    targets = {
        "nose": [0.0, HEAD_CENTER[1] - 0.01, front],
        "leye": [0.032, HEAD_CENTER[1] + 0.025, front - 0.015],
        "reye": [-0.032, HEAD_CENTER[1] + 0.025, front - 0.015],
        "lear": [HEAD_RADII[0], HEAD_CENTER[1], HEAD_CENTER[2]],
        "rear": [-HEAD_RADII[0], HEAD_CENTER[1], HEAD_CENTER[2]],
    }
    chosen: dict[str, int] = {}
    for key, tgt in targets.items():
        d = np.linalg.norm(hv - np.array(tgt), axis=1)
        d[[chosen[k] - o for k in chosen]] = np.inf
        chosen[key] = int(np.argmin(d)) + o
    v[chosen["nose"], 2] += 0.015  # a nose

    # shape blend shapes (built in "soles at y=0" coordinates)
    rng = np.random.default_rng(seed)
    part_id = np.concatenate([np.full(len(pp.vertices), i) for i, pp in enumerate(parts)])
    names = [pp.name for pp in parts]
    is_part = {n: part_id == names.index(n) for n in names}
    arms = is_part["left_arm"] | is_part["right_arm"]
    legs = is_part["left_leg"] | is_part["right_leg"]
    torso = is_part["torso"]
    radial = v - centre
    radial[:, 1] = np.where(arms, radial[:, 1], 0.0)  # legs/torso/neck grow sideways, not up
    dirs = np.zeros((N_VERTS, 3, N_BETAS))
    dirs[:, :, 0] = v * np.array([0.01, 0.035, 0.01])  # taller (and slightly bigger)
    girth = np.where(torso, 0.08, 0.0) + np.where(legs, 0.05 * np.clip((v[:, 1] - KNEE_Y) / 0.4, 0, 1), 0)
    girth = girth + np.where(arms, 0.04, 0.0) + np.where(is_part["neck"], 0.03, 0.0)
    dirs[:, :, 1] = radial * girth[:, None]
    dirs[:, 0, 1] += np.where(arms, np.sign(v[:, 0]) * 0.08 * 0.17, 0.0)  # arms move out with the torso
    dirs[:, 1, 2] = 0.03 * np.minimum(v[:, 1], HIP_Y)  # longer legs
    upper = np.clip((v[:, 1] - 1.15) / 0.25, 0, 1)
    dirs[:, 0, 3] = np.where(torso, 0.08 * v[:, 0] * upper, 0.0)
    dirs[:, 0, 3] += np.where(arms, np.sign(v[:, 0]) * 0.08 * 0.18, 0.0)  # broader shoulders
    belly = np.exp(-(((v[:, 1] - 1.05) / 0.12) ** 2))
    dirs[:, 2, 4] = np.where(torso, 0.3 * np.maximum(v[:, 2], 0.0) * belly, 0.0)
    for b in range(5, N_BETAS):  # small smooth random fields
        k = rng.normal(size=(3, 3)) * 2 * np.pi / 0.6
        phase = rng.uniform(0, 2 * np.pi, size=3)
        dirs[:, :, b] = 0.005 * np.sin(v @ k + phase)

    # scale per gender, then put the pelvis at the origin (as in SMPL)
    v = v * prop.scale
    dirs = dirs * prop.scale
    v = v - np.array([0.0, PELVIS_Y * prop.scale, 0.0])

    # move the face landmarks to smplx's indices (swaps keep every other vertex's data)
    order = np.arange(N_VERTS)
    for key, dst in FACE_VERTEX_IDS.items():
        src = int(np.flatnonzero(order == chosen[key])[0])
        order[[dst, src]] = order[[src, dst]]
    inverse = np.empty_like(order)
    inverse[order] = np.arange(N_VERTS)

    kintree = np.array([PARENTS, range(N_JOINTS)], dtype=np.int64)
    kintree[0, 0] = 4294967295
    return {
        "v_template": v[order],
        "shapedirs": dirs[order],
        "posedirs": np.zeros((N_VERTS, 3, N_POSE_BASIS)),
        "J_regressor": J_regressor[:, order],
        "weights": weights[order],
        "kintree_table": kintree.astype(np.uint32),
        "f": inverse[f].astype(np.uint32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def make_synthetic_smpl(path: Path, seed: int = 0, gender: str = "neutral") -> Path:
    """Write a synthetic SMPL-format pickle (loadable by ``smplx``) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(build_synthetic(seed, gender), fh, protocol=2)
    return path


def make_synthetic_smpl_dir(out_dir: Path) -> list[Path]:
    """SMPL_MALE/FEMALE/NEUTRAL.pkl in ``out_dir`` (different proportions and seeds)."""
    out_dir = Path(out_dir)
    return [
        make_synthetic_smpl(out_dir / f"SMPL_{g.upper()}.pkl", seed=i, gender=g)
        for i, g in enumerate(("male", "female", "neutral"))
    ]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m inference.bodies.smpl_synthetic OUT_DIR", file=sys.stderr)
        return 2
    for p in make_synthetic_smpl_dir(Path(args[0])):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

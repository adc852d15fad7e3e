"""Stage 6, measure: tailoring measurements (cm) of the rest-pose mesh.

Every girth is a *tape measure*: the convex hull of a plane cut of the mesh (a tape bridges the
hollows between the buttocks or under the bust). The photo's pose never bends a measurement:
the mesh measured is the fitted body in the standard A-pose (arms 45° down, away from the
torso as a tailor asks; legs as in the rest pose). Landmarks are the body model's COCO keypoints,
so one definition serves every body model.

Definitions (A-pose, Y up; L = torso length = mid-shoulder height - mid-hip height):
- height: top of the head to the soles (vertical extent of the standing mesh).
- chest: largest horizontal torso girth between 0.55 L above the hips and just below the armpits
  (the highest level where the arms are still apart from the torso, less 0.04 L): the chest at
  armpit level, or the bust where it is larger; arms excluded.
- waist: smallest horizontal torso girth between 0.25 L and 0.60 L above the hips (natural waist).
- hip: largest horizontal girth between 0.20 L below and 0.15 L above the hip joints, around both
  legs (buttocks).
- neck: girth of the neck cut at 35 % of the way from the shoulders to the nose, perpendicular
  to the shoulder→nose axis.
- shoulder_width: straight distance between the two shoulder joint centres.
- arm_length: shoulder → elbow → wrist along the left arm.
- inseam: crotch (lowest point of the torso on the mid-plane) to the floor.
- thigh: left thigh girth perpendicular to the thigh, 30 % of the way from hip joint to knee.
- upper_arm: left upper-arm girth perpendicular to the arm, half way from shoulder to elbow.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from inference.types import MEASUREMENTS

from inference.bodies.base import (
    L_ELBOW, L_HIP, L_KNEE, L_SHOULDER, L_WRIST, NOSE, R_HIP, R_SHOULDER,
)

_SCAN_STEPS = 16


def measure(vertices: np.ndarray, faces: np.ndarray, keypoints: np.ndarray) -> dict[str, float]:
    """(V, 3) T-pose mesh in metres, (F, 3), (17, 3) COCO keypoints → {name: cm}."""
    mesh = _Mesh(vertices, faces)
    kp = np.asarray(keypoints, np.float64)
    floor = vertices[:, 1].min()
    shoulder_mid = 0.5 * (kp[L_SHOULDER] + kp[R_SHOULDER])
    hip_mid = 0.5 * (kp[L_HIP] + kp[R_HIP])
    torso = shoulder_mid[1] - hip_mid[1]
    # loops whose centre is beyond the shoulders' half width are arms or hands, not torso/legs
    lateral_limit = 0.9 * 0.5 * abs(kp[L_SHOULDER, 0] - kp[R_SHOULDER, 0])
    axis_x = hip_mid[0]

    def torso_girth(y: float) -> float:
        loops = _section_loops(mesh, np.array([0.0, y, 0.0]), np.array([0.0, 1.0, 0.0]))
        keep = [lp for lp in loops if abs(lp[:, 0].mean() - axis_x) <= lateral_limit]
        if not keep:
            return 0.0
        pts = np.concatenate(keep)[:, [0, 2]]
        return _hull_perimeter(pts)

    def scan(lo: float, hi: float, pick) -> float:
        ys = np.linspace(hip_mid[1] + lo * torso, hip_mid[1] + hi * torso, _SCAN_STEPS)
        return pick([torso_girth(y) for y in ys])

    armpit = _armpit_level(mesh, hip_mid[1], torso)
    out = {
        "height": vertices[:, 1].max() - floor,
        "chest": scan(0.55, max(0.6, armpit - 0.04), max),
        "waist": scan(0.25, 0.60, lambda g: min(x for x in g if x > 0) if any(g) else 0.0),
        "hip": scan(-0.20, 0.15, max),
    }
    neck_c = shoulder_mid + 0.35 * (kp[NOSE] - shoulder_mid)
    out["neck"] = _limb_girth(mesh, neck_c, kp[NOSE] - shoulder_mid)
    out["shoulder_width"] = float(np.linalg.norm(kp[L_SHOULDER] - kp[R_SHOULDER]))
    out["arm_length"] = float(np.linalg.norm(kp[L_ELBOW] - kp[L_SHOULDER])
                              + np.linalg.norm(kp[L_WRIST] - kp[L_ELBOW]))
    out["inseam"] = _crotch_height(vertices, axis_x, hip_mid[1], kp[L_KNEE, 1]) - floor
    thigh_c = kp[L_HIP] + 0.30 * (kp[L_KNEE] - kp[L_HIP])
    out["thigh"] = _limb_girth(mesh, thigh_c, kp[L_KNEE] - kp[L_HIP])
    arm_c = 0.5 * (kp[L_SHOULDER] + kp[L_ELBOW])
    out["upper_arm"] = _limb_girth(mesh, arm_c, kp[L_ELBOW] - kp[L_SHOULDER])
    return {k: round(float(out[k]) * 100.0, 1) for k in MEASUREMENTS}


def _armpit_level(mesh: "_Mesh", hip_y: float, torso: float) -> float:
    """Highest level (in torso lengths above the hips) where a horizontal cut still finds the
    torso and both arms apart; 0.80 where the arms touch the torso (e.g. a T-pose)."""
    level = None
    for f in np.arange(0.55, 1.0, 0.02):
        if len(_section_loops(mesh, np.array([0.0, hip_y + f * torso, 0.0]), np.array([0.0, 1.0, 0.0]))) >= 3:
            level = f
        elif level is not None:
            break
    return 0.80 if level is None else float(level)


class _Mesh:
    """A triangle mesh cut by planes, with what every cut reads made once per topology (every
    measurement's cut and every avatar of a worker share it): the unique edges and, where each
    edge has exactly two faces (a closed mesh, as the body models' are), those faces."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        self.vertices = np.asarray(vertices, np.float64)
        self.faces = np.asarray(faces, np.int64)
        self.edges, self.face_edges, self.edge_faces = _topology(self.faces)


_TOPOLOGY: OrderedDict[tuple, tuple] = OrderedDict()


def _topology(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(E, 2) unique edges (low, high vertex), (F, 3) each face's edges (v0v1, v1v2, v2v0) and
    (E, 2) each edge's two faces (None unless every edge has exactly two)."""
    key = (faces.shape, hash(faces.tobytes()))
    hit = _TOPOLOGY.get(key)
    if hit is None:
        pairs = np.stack([faces, np.roll(faces, -1, axis=1)], axis=2).reshape(-1, 2)
        edges, inverse, counts = np.unique(np.sort(pairs, axis=1), axis=0, return_inverse=True,
                                           return_counts=True)
        inverse = inverse.reshape(-1)
        edge_faces = None
        if len(counts) and (counts == 2).all():
            order = np.argsort(inverse, kind="stable")
            edge_faces = (order // 3).reshape(-1, 2)
        hit = edges, inverse.reshape(-1, 3), edge_faces
        _TOPOLOGY[key] = hit
        while len(_TOPOLOGY) > 4:
            _TOPOLOGY.popitem(last=False)
    return hit


def _section_loops(mesh: _Mesh, origin: np.ndarray, normal: np.ndarray) -> list[np.ndarray]:
    """The plane's cut through the mesh as loops (N, 3): the points where it crosses the mesh's
    edges, one array per connected cut (each face the plane crosses joins the two points on its
    crossed edges). A vertex on the plane counts as on its positive side. The points of a loop
    are unordered: what is read of a loop (its convex hull, its centre) does not need an
    order. Loops of fewer than 3 points are left out."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    d = mesh.vertices @ np.asarray(normal, np.float64) - float(np.dot(origin, normal))
    side = d >= 0.0
    a, b = mesh.edges[:, 0], mesh.edges[:, 1]
    ids = np.flatnonzero(side[a] != side[b])
    if not len(ids):
        return []
    ea, eb = a[ids], b[ids]
    t = (d[ea] / (d[ea] - d[eb]))[:, None]
    points = mesh.vertices[ea] + t * (mesh.vertices[eb] - mesh.vertices[ea])
    n = len(ids)
    if mesh.edge_faces is not None:
        # each crossed face holds exactly two crossed edges: its two entries, side by side
        # once sorted by face, are the points it joins
        faces = mesh.edge_faces[ids].reshape(-1)
        pair = np.repeat(np.arange(n), 2)[np.argsort(faces, kind="stable")].reshape(-1, 2)
    else:
        node = np.full(len(mesh.edges), -1, np.int64)
        node[ids] = np.arange(n)
        fe = node[mesh.face_edges]  # (F, 3): each face's crossed edges as points, -1 if not crossed
        cut = (fe >= 0).sum(1) == 2
        pair = np.sort(fe[cut], axis=1)[:, 1:]  # the two crossed edges' points (-1 first, dropped)
    graph = coo_matrix((np.ones(len(pair)), (pair[:, 0], pair[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    order = np.argsort(label, kind="stable")
    bounds = np.flatnonzero(np.diff(label[order])) + 1
    return [points[g] for g in np.split(order, bounds) if len(g) >= 3]


def _hull_perimeter(points_2d: np.ndarray) -> float:
    from scipy.spatial import ConvexHull

    if len(points_2d) < 3:
        return 0.0
    try:
        hull = points_2d[ConvexHull(points_2d).vertices]
    except Exception:  # degenerate (collinear) cut
        return 0.0
    return float(np.linalg.norm(hull - np.roll(hull, 1, axis=0), axis=1).sum())


def _limb_girth(mesh: "_Mesh", centre: np.ndarray, direction: np.ndarray) -> float:
    """Tape girth of the loop nearest ``centre`` in the plane through it normal to ``direction``."""
    n = direction / np.linalg.norm(direction)
    loops = _section_loops(mesh, centre, n)
    if not loops:
        return 0.0
    loop = min(loops, key=lambda lp: np.linalg.norm(lp.mean(0) - centre))
    # 2-D coordinates in the cutting plane
    a = np.cross(n, [0.0, 0.0, 1.0] if abs(n[2]) < 0.9 else [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    rel = loop - centre
    return _hull_perimeter(np.stack([rel @ a, rel @ b], 1))


def _crotch_height(vertices: np.ndarray, axis_x: float, hip_y: float, knee_y: float) -> float:
    """Lowest mesh point on the mid-plane between the hips and the knees."""
    band = (np.abs(vertices[:, 0] - axis_x) < 0.012) & (vertices[:, 1] < hip_y) & (vertices[:, 1] > knee_y)
    if not band.any():
        return hip_y
    return float(vertices[band, 1].min())

"""The tape measure's plane cuts (``measure._section_loops``): loops of known solids, a closed
mesh and the same mesh opened (the general path), and a body model's cuts against trimesh's
``Trimesh.section`` (what the measurements were defined with until session 16)."""
import numpy as np
import pytest

from inference.stages import measure as M


def cylinder(radius: float, height: float, n: int = 48, x0: float = 0.0, caps: bool = True):
    """A closed (or, without ``caps``, open) n-gon prism along Y, centred at (x0, 0, 0)."""
    ang = 2 * np.pi * np.arange(n) / n
    ring = np.stack([x0 + radius * np.cos(ang), np.zeros(n), radius * np.sin(ang)], 1)
    bottom, top = ring - [0, height / 2, 0], ring + [0, height / 2, 0]
    v = np.concatenate([bottom, top, [[x0, -height / 2, 0], [x0, height / 2, 0]]])
    f = []
    for i in range(n):
        j = (i + 1) % n
        f += [[i, n + j, j], [i, n + i, n + j]]
        if caps:
            f += [[2 * n, i, j], [2 * n + 1, n + j, n + i]]
    return v, np.asarray(f, np.int64)


def two_cylinders(caps=True):
    v1, f1 = cylinder(0.1, 1.0, caps=caps, x0=-0.3)
    v2, f2 = cylinder(0.05, 1.0, caps=caps, x0=0.3)
    return np.concatenate([v1, v2]), np.concatenate([f1, f2 + len(v1)])


def test_a_cut_through_two_solids_gives_their_two_loops_and_true_girths():
    v, f = two_cylinders()
    mesh = M._Mesh(v, f)
    assert mesh.edge_faces is not None  # closed: the fast path
    loops = M._section_loops(mesh, np.array([0.0, 0.1, 0.0]), np.array([0.0, 1.0, 0.0]))
    assert len(loops) == 2
    loops.sort(key=lambda lp: lp[:, 0].mean())
    n = 48
    for loop, r, x0 in zip(loops, (0.1, 0.05), (-0.3, 0.3)):
        assert len(loop) == 2 * n and np.allclose(loop[:, 1], 0.1)  # the n sides and their diagonals
        assert abs(loop[:, 0].mean() - x0) < 1e-9
        polygon = 2 * n * r * np.sin(np.pi / n)
        assert M._hull_perimeter(loop[:, [0, 2]]) == pytest.approx(polygon, rel=1e-9)
    # beyond the solids: nothing; a slanted plane: still two loops, each longer than its girth
    assert M._section_loops(mesh, np.array([0.0, 0.6, 0.0]), np.array([0.0, 1.0, 0.0])) == []
    slanted = M._section_loops(mesh, np.zeros(3), np.array([0.3, 1.0, 0.0]) / np.hypot(0.3, 1.0))
    assert len(slanted) == 2


def test_an_open_mesh_is_cut_by_the_general_path_alike():
    closed, opened = M._Mesh(*two_cylinders(True)), M._Mesh(*two_cylinders(False))
    assert opened.edge_faces is None  # its rims have edges with one face
    for y in (-0.3, 0.0, 0.2):
        a = M._section_loops(closed, np.array([0.0, y, 0.0]), np.array([0.0, 1.0, 0.0]))
        b = M._section_loops(opened, np.array([0.0, y, 0.0]), np.array([0.0, 1.0, 0.0]))
        assert len(a) == len(b) == 2
        key = lambda lp: lp[:, 0].mean()  # noqa: E731
        for la, lb in zip(sorted(a, key=key), sorted(b, key=key)):
            assert np.allclose(np.sort(la, axis=0), np.sort(lb, axis=0))


@pytest.mark.slow
def test_a_bodys_cuts_match_trimeshs_sections(anny_body):
    """Every plane the measurements cut a body with, against trimesh's section: the same loops
    (count, points) and the same tape girths."""
    import torch
    import trimesh

    from inference.eval.truth import truth_for

    truth = truth_for(anny_body, "female", muscle=0.7, weight=0.8)
    v = truth.vertices
    kp = anny_body.keypoints_from_vertices(torch.as_tensor(v[None], dtype=anny_body.dtype))[0].numpy()
    ours = M._Mesh(v, anny_body.faces)
    theirs = trimesh.Trimesh(v, anny_body.faces, process=False)
    hip_y = 0.5 * (kp[11, 1] + kp[12, 1])
    planes = [(np.array([0.0, y, 0.0]), np.array([0.0, 1.0, 0.0]))
              for y in np.linspace(hip_y - 0.15, hip_y + 0.55, 15)]
    planes.append((0.5 * (kp[5] + kp[7]), (kp[7] - kp[5]) / np.linalg.norm(kp[7] - kp[5])))
    planes.append((kp[11] + 0.3 * (kp[13] - kp[11]), (kp[13] - kp[11]) / np.linalg.norm(kp[13] - kp[11])))
    for origin, normal in planes:
        a = M._section_loops(ours, origin, normal)
        b = [np.asarray(d) for d in theirs.section(plane_origin=origin, plane_normal=normal).discrete
             if len(d) >= 3]
        assert len(a) == len(b) >= 1
        key = lambda lp: tuple(np.round(lp.mean(0), 4))  # noqa: E731
        for la, lb in zip(sorted(a, key=key), sorted(b, key=key)):
            # the same points (trimesh merges a path's points closer than 1e-5 m, its path tolerance)
            gap = np.linalg.norm(la[:, None] - lb[None], axis=2)
            assert gap.min(1).max() < 2e-5 and gap.min(0).max() < 2e-5
            assert M._hull_perimeter(la[:, [0, 2]]) == pytest.approx(M._hull_perimeter(lb[:, [0, 2]]), abs=1e-6)

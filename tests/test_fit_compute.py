"""How the fit computes, not what it finds: the faster forms give the slower ones' bits."""
import torch

from inference.bodies.anny_body import dense_blend_skinning
from inference.stages.fit import distinct_rows, mesh_volume


def test_distinct_rows_rebuild_the_batch_and_keep_two_rows_or_more():
    X = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
    rows, inverse = distinct_rows(X)
    assert len(rows) == 3 and torch.equal(rows[inverse], X)
    same = X[:1].repeat(3, 1)
    rows, inverse = distinct_rows(same)
    assert len(rows) == 2 and torch.equal(rows[inverse], same)  # batch 1 runs other kernels
    rows, inverse = distinct_rows(X[:1])
    assert torch.equal(rows, X[:1]) and inverse.tolist() == [0]


def test_the_stage_c_residuals_of_a_deduplicated_batch_are_the_full_batchs(anny_body):
    """Anny's forward gives each row the same values at any batch of 2 or more (what
    ``distinct_rows`` relies on; the same bits on the CPUs it was developed on, within float
    rounding on others whose kernels split a batch differently); batch 1 is left as it is."""
    from inference.stages.fit import Fitter

    fitter = Fitter(anny_body)
    gen = torch.Generator().manual_seed(0)
    X = anny_body.clamp_shape(torch.rand(12, 6, generator=gen))
    stand = anny_body.standard_pose(X[:1], "apose")[0]
    limbs = stand + 0.05 * torch.randn(stand.shape, generator=gen)
    rot, trans = torch.tensor([0.1, 0.2, 0.05]), torch.tensor([0.0, 0.1, 3.0])
    with torch.no_grad():
        full, scale, mass, _ = fitter._posed_camera(X, limbs, stand, rot, trans, 1.75)
        for part in (X[:2], X[3:8], X[::4]):
            anny_body._rest_cache = ()
            st, s, m, _ = fitter._posed_camera(part, limbs, stand, rot, trans, 1.75)
            rows = [int((X == r).all(1).nonzero()[0]) for r in part]
            assert (st.vertices - full.vertices[rows]).abs().max() <= 1e-6  # metres
            assert torch.allclose(s, scale[rows], rtol=1e-6, atol=0)
            # the volume sums ~27k faces' products of those vertices: their rounding carries
            # into it at a few parts per million
            assert torch.allclose(m, mass[rows], rtol=5e-6, atol=0)


def test_dense_skinning_gives_annys_values_and_gradients(anny_body):
    from anny.skinning.skinning import dense_linear_blend_skinning

    weights = anny_body.model.dense_vertex_bone_weights
    gen = torch.Generator().manual_seed(0)
    for batch in (1, 2, 5):
        vertices = torch.randn(batch, weights.shape[0], 3, generator=gen, requires_grad=True)
        transforms = torch.randn(batch, weights.shape[1], 4, 4, generator=gen, requires_grad=True)
        grad_out = torch.randn(batch, weights.shape[0], 3, generator=gen)
        ours = dense_blend_skinning(vertices, weights, transforms)
        annys = dense_linear_blend_skinning(vertices, weights, transforms)
        # each vertex's few bones summed sparsely: the same values within float rounding
        assert torch.allclose(ours, annys, rtol=1e-5, atol=1e-5)
        for a, b in zip(torch.autograd.grad(ours, (vertices, transforms), grad_out),
                        torch.autograd.grad(annys, (vertices, transforms), grad_out)):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-4)


def test_mesh_volume_is_the_same_with_and_without_a_gradient(anny_body):
    faces = torch.as_tensor(anny_body.faces)
    shape = torch.tensor([[0.0, 0.8, 0.5, 0.5, 0.5, 0.5], [1.0, 0.8, 0.3, 0.7, 0.4, 0.5]])
    vertices = anny_body.posed(shape, anny_body.standard_pose(shape, "apose")).vertices.detach()
    with torch.no_grad():
        plain = mesh_volume(vertices, faces)
    tracked = mesh_volume(vertices.clone().requires_grad_(True), faces)
    assert torch.equal(plain, tracked.detach())
    assert ((plain > 0.03) & (plain < 0.2)).all()  # m³: adults


def test_initial_shape_is_the_same_with_its_height_grid_remembered(anny_body):
    from inference.types import Subject

    for subject in (Subject(172, "female", 60), Subject(188, "male", 90), Subject(160, "other", None)):
        anny_body._height_grids = {}
        first = anny_body.initial_shape(subject)
        assert torch.equal(anny_body.initial_shape(subject), first)  # the grid remembered
    assert len(anny_body._height_grids) == 1


def test_remembered_pose_matrices_are_the_ones_computed(anny_body):
    limbs = torch.randn(2, 10, 3, generator=torch.Generator().manual_seed(3)) * 0.3
    made = anny_body._pose_matrices_of(limbs, 2)
    assert torch.equal(anny_body._pose_matrices(limbs, 2), made)
    assert torch.equal(anny_body._pose_matrices(limbs.clone(), 2), made)  # from the cache
    tracked = limbs.clone().requires_grad_(True)  # limbs with a gradient are never cached
    assert anny_body._pose_matrices(tracked, 2).requires_grad


def test_a_height_grid_remembered_for_one_subject_serves_another_of_the_same_gender(anny_body):
    from inference.types import Subject

    anny_body._height_grids = {}
    fresh = anny_body.initial_shape(Subject(160, "female", None))
    anny_body._height_grids = {}
    anny_body.initial_shape(Subject(185, "female", 95))  # fills the grid
    assert torch.equal(anny_body.initial_shape(Subject(160, "female", None)), fresh)


def test_the_linearised_body_is_the_body_near_its_point_and_has_its_gradient(anny_body):
    """Stage B's shape steps use ``_LinearBody``: at its point the exact rest model, scale and
    mass; a step of the size stage B takes between refreshes stays within a millimetre and a
    few hundred grams; the mass's gradient is the exact one's within a few per cent."""
    from inference.stages.fit import Fitter, _LinearBody

    fitter = Fitter(anny_body)
    gen = torch.Generator().manual_seed(1)
    s0 = anny_body.clamp_shape(torch.rand(2, 6, generator=gen))
    s0[:, 0] = torch.tensor([0.0, 1.0])
    stand = anny_body.standard_pose(s0, "apose")
    heights = torch.tensor([1.70, 1.62])
    free_idx = torch.arange(1, 6)
    lin = _LinearBody(fitter, s0, free_idx, stand, heights)

    def exact(shape):
        st = anny_body.posed(shape, stand)
        scale, mass = fitter._scale_and_mass(st.vertices, heights)
        return anny_body.rest_model(shape), scale, mass

    with torch.no_grad():
        rest_l, basis_l, scale_l, mass_l = lin.at(s0)
        rest_e, scale_e, mass_e = exact(s0)
        assert torch.allclose(mass_l, mass_e, rtol=1e-6) and torch.allclose(scale_l, scale_e, rtol=1e-6)
        assert max((a - b).abs().max() for a, b in zip(rest_l, rest_e)) <= 1e-6
        assert (basis_l - anny_body.keypoint_basis(rest_e[4])).abs().max() <= 1e-5
        step = s0.clone()
        step[:, 1:] += 0.03 * (torch.rand(2, 5, generator=gen) - 0.5)
        step = anny_body.clamp_shape(step)
        rest_l, _, scale_l, mass_l = lin.at(step)
        rest_e, scale_e, mass_e = exact(step)
        assert (rest_l[4] - rest_e[4]).abs().max() <= 1e-3  # Anny's rest vertices, metres
        assert (mass_l - mass_e).abs().max() <= 0.3  # kg
        assert (scale_l / scale_e - 1).abs().max() <= 1e-3
    for linear in (True, False):
        shape = s0.clone().requires_grad_(True)
        mass = lin.at(shape)[3] if linear else exact(shape)[2]
        mass.sum().backward()
        if linear:
            g_lin = shape.grad[:, 1:].clone()
        else:
            g = shape.grad[:, 1:]
    assert torch.allclose(g_lin, g, rtol=0.05, atol=0.05 * float(g.abs().max()))


def test_nearest_points_are_the_distance_matrixs_minimum():
    from inference.stages.fit import nearest_points

    gen = torch.Generator().manual_seed(2)
    cloud = torch.rand(4573, 2, generator=gen) * torch.tensor([300.0, 900.0]) + 100
    points = torch.rand(400, 2, generator=gen) * torch.tensor([320.0, 920.0]) + 90
    want = torch.cdist(points, cloud).min(1).indices
    got = nearest_points(points, cloud)
    assert got.dtype == torch.long and torch.equal(got, want)
    cloud[7, 0] = float("nan")  # not finite: the distance matrix's way
    assert nearest_points(points, cloud).shape == (400,)


def test_posed_points_are_the_posed_bodys_vertices_and_keypoints(anny_body):
    """Stage B skins only the vertices its silhouette terms read; its keypoints come from the
    regressor folded into the skinning (``keypoint_basis``): the same values within rounding."""
    gen = torch.Generator().manual_seed(3)
    S = anny_body.clamp_shape(torch.rand(3, 6, generator=gen))
    limbs = anny_body.standard_pose(S, "apose") + 0.1 * torch.randn(3, 10, 3, generator=gen)
    idx = torch.arange(0, anny_body.faces.max() + 1, 3)
    with torch.no_grad():
        st = anny_body.posed(S, limbs)
        rest = anny_body.rest_model(S)
        v, kp = anny_body.posed_points(rest, limbs, idx, anny_body.keypoint_basis(rest[4]))
    assert torch.equal(v, st.vertices[:, idx])
    assert (kp - st.keypoints).abs().max() <= 1e-4  # metres (sums in another order)


def test_mesh_volumes_written_out_gradient_is_autograds(anny_body):
    """``mesh_volume`` carries its own backward (each corner's gradient the cross product of
    the other two, summed into the vertices by a sparse product): autograd's through the plain
    formula gives the same, and finite differences agree in float64."""
    import trimesh

    faces = torch.as_tensor(anny_body.faces)
    shape = torch.tensor([[0.0, 0.8, 0.5, 0.5, 0.5, 0.5], [1.0, 0.8, 0.3, 0.7, 0.4, 0.5]])
    vertices = anny_body.posed(shape, anny_body.standard_pose(shape, "apose")).vertices.detach()
    tracked = vertices.clone().requires_grad_(True)
    weights = torch.tensor([1.0, -2.0])
    ours = torch.autograd.grad((mesh_volume(tracked, faces) * weights).sum(), tracked)[0]
    plain = vertices.clone().requires_grad_(True)
    v0, v1, v2 = (plain[:, faces[:, k]] for k in range(3))
    reference = (torch.cross(v0, v1, dim=-1) * v2).sum(-1).sum(-1).abs() / 6.0
    expected = torch.autograd.grad((reference * weights).sum(), plain)[0]
    # a vertex's gradient sums its faces' cross products, which nearly cancel: float32 rounding
    # of those terms, not of the sum (a wrong corner or sign is off by the gradient's own size)
    assert (ours - expected).abs().max() <= 1e-4 * expected.abs().max()
    sphere = trimesh.creation.icosphere(1)
    v = torch.tensor(sphere.vertices)[None] * torch.tensor([1.0, 1.5, 0.7])
    assert torch.autograd.gradcheck(lambda x: mesh_volume(x, torch.as_tensor(sphere.faces)),
                                    (v.requires_grad_(True),))


def test_the_keypoint_basis_gradient_is_the_dense_products(anny_body):
    gen = torch.Generator().manual_seed(4)
    shape = anny_body.clamp_shape(torch.rand(2, 6, generator=gen)).requires_grad_(True)
    rest = anny_body.rest_model(shape)[4]
    basis = anny_body.keypoint_basis(rest)
    bones = anny_body._kp_bones[0].to_dense()  # (17 bones, V)
    homog = torch.cat([rest, torch.ones_like(rest[..., :1])], -1)
    dense = torch.einsum("rv,bvc->brc", bones, homog).reshape(2, 17, -1, 4)
    # float32 sums over thousands of vertices in another order: 1.4e-5 apart on an Intel Xeon
    # (under 1e-5 on the AMD EPYCs) for values up to 1; a wrong product is off by ~0.1 and more
    assert (basis - dense).abs().max() <= 5e-5
    grad_out = torch.randn(basis.shape, generator=gen)
    ours = torch.autograd.grad((basis * grad_out).sum(), shape, retain_graph=True)[0]
    theirs = torch.autograd.grad((dense * grad_out).sum(), shape)[0]
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_posed_points_with_the_standing_body_are_the_two_forwards(anny_body):
    """Stage B poses the photo's points and the standing A-pose with one pass through the bone
    chain: the values and gradients of the two separate forwards."""
    gen = torch.Generator().manual_seed(5)
    S = anny_body.clamp_shape(torch.rand(2, 6, generator=gen))
    stand = anny_body.standard_pose(S, "apose")
    idx = torch.arange(0, anny_body.faces.max() + 1, 3)
    grads = []
    for together in (True, False):
        shape = S.clone().requires_grad_(True)
        limbs = (stand + 0.1 * torch.randn(stand.shape, generator=torch.Generator().manual_seed(6))).requires_grad_(True)
        rest = anny_body.rest_model(shape)
        basis = anny_body.keypoint_basis(rest[4])
        if together:
            v, kp, whole = anny_body.posed_points_standing(rest, limbs, stand, idx, basis)
        else:
            v, kp = anny_body.posed_points(rest, limbs, idx, basis)
            whole = anny_body.posed_from_rest(rest, stand).vertices
        loss = (v ** 2).sum() + (kp ** 2).sum() + (whole[..., 1] ** 3).sum()
        grads.append((v.detach(), kp.detach(), whole.detach(), *torch.autograd.grad(loss, (shape, limbs))))
    for a, b in zip(*grads):
        # the shape's gradient sums ~10^4 vertices' terms up to ~10^5 in float32: its small
        # entries are apart by the large ones' rounding (0.008 at 718 beside 97717 on an Intel
        # Xeon), so the tolerance follows the tensor's largest entry too
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 + 1e-6 * float(b.abs().max()))


def test_the_fits_cpu_threads_are_set_while_it_runs_and_restored_after():
    import threading

    from inference.stages.fit import cpu_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        seen, ready, release = [], threading.Barrier(2), threading.Event()

        def other():
            with cpu_threads(2):  # a second fit while the first runs: the first's setting holds
                ready.wait()
                release.wait(10)
                seen.append(torch.get_num_threads())

        with cpu_threads(1):
            t = threading.Thread(target=other)
            t.start()
            ready.wait()
            seen.append(torch.get_num_threads())
            release.set()
            t.join(10)
            seen.append(torch.get_num_threads())
        assert seen == [1, 1, 1]
        assert torch.get_num_threads() == 3  # back once the last fit ended
    finally:
        torch.set_num_threads(before)


def test_annys_frame_to_the_canonical_one_is_the_matrix_products_bits():
    from inference.bodies.anny_body import ANNY_TO_CANON, _ToCanon

    gen = torch.Generator().manual_seed(3)
    for shape in ((7, 3), (2, 500, 3), (1, 17, 104, 3)):
        x = torch.randn(*shape, generator=gen, requires_grad=True)
        grad_out = torch.randn(*shape, generator=gen)
        ours, product = _ToCanon.apply(x), x @ ANNY_TO_CANON.T
        assert torch.equal(ours, product)
        assert torch.equal(*(torch.autograd.grad(y, x, grad_out)[0] for y in (ours, product)))
    # a view with a batch stride of 0 (a rest mesh expanded over poses) goes through too
    x = torch.randn(1, 50, 3, generator=gen).expand(4, -1, -1)
    assert torch.equal(_ToCanon.apply(x), x @ ANNY_TO_CANON.T)


def test_the_skinnings_apply_step_has_autograds_gradients_bit_for_bit():
    from inference.bodies.anny_body import _apply_blend, _ApplyBlend

    gen = torch.Generator().manual_seed(4)
    for batch, n in ((1, 300), (3, 1000)):
        blend = torch.randn(batch, n, 3, 4, generator=gen, requires_grad=True)
        vertices = torch.randn(batch, n, 3, generator=gen, requires_grad=True)
        grad_out = torch.randn(batch, n, 3, generator=gen)
        ours = torch.autograd.grad(_ApplyBlend.apply(blend, vertices), (blend, vertices), grad_out)
        autograds = torch.autograd.grad(_apply_blend(blend, vertices), (blend, vertices), grad_out)
        for a, b in zip(ours, autograds):
            assert torch.equal(a, b)


def test_the_monotone_solve_finds_each_rows_root_in_fewer_calls_than_a_bisection():
    """Stage C's mass search (``solve_monotone``): per row the v in [0, 1] where an increasing
    function meets the target, within its tolerance; out of range the nearer end."""
    from inference.stages.fit import solve_monotone

    # piecewise smooth rows with a kink at 0.5, as Anny's mass in the weight phenotype
    slope_lo = torch.tensor([60.0, 12.0, 30.0, 5.0, 80.0])
    slope_hi = torch.tensor([100.0, 12.0, 5.0, 50.0, 80.0])
    base = torch.tensor([50.0, 67.0, 60.0, 64.0, 85.0])

    def g(rows, v):
        lo, hi, b = slope_lo[rows], slope_hi[rows], base[rows]
        return b + lo * v.clamp(max=0.5) + hi * (v - 0.5).clamp(min=0) + 8.0 * v**2

    calls = []

    def f(rows, v):
        calls.append(len(rows))
        return g(rows, v)

    target = 72.0
    v = solve_monotone(f, target, 5, torch.float32, "cpu", tol=0.05)
    every = torch.arange(5)
    inside = (g(every, torch.zeros(5)) < target) & (g(every, torch.ones(5)) > target)
    assert inside.tolist() == [True, True, True, True, False]
    assert (g(every, v) - target)[inside].abs().max() < 0.05
    assert v[4] == 0.0  # already heavier at 0: the lower end
    assert solve_monotone(lambda r, x: g(r, x), 500.0, 5, torch.float32, "cpu").eq(1.0).all()
    # the body forwards it ran (rows summed) against a bisection's 8 calls of all 5 rows
    assert len(calls) <= 7 and sum(calls) < 8 * 5


def test_drive_answers_every_waiting_solver_in_one_call_and_each_ends_on_its_own():
    from inference.stages.fit import drive

    def solver(name, steps):
        total = 0
        for k in range(steps):
            total += yield (name, k)
        return name, total

    calls = []

    def answer(asked):
        calls.append(sorted(asked))
        return {j: 10 * j + req[1] for j, req in asked.items()}

    out = drive([solver("a", 3), solver("b", 0), solver("c", 1)], answer)
    assert out == [("a", 0 + 1 + 2), ("b", 0), ("c", 20)]
    assert calls == [[0, 2], [0], [0]]  # "b" asked nothing; "c" ended after its first answer


def test_stage_c_rows_of_two_photos_in_one_forward_are_each_photos_own(anny_body):
    """Stage C serves several photos' candidates with one forward (``_posed_camera_rows``: a
    pose, camera and height per row): each photo's rows as its own call gives them."""
    from inference.stages.fit import Fitter

    fitter = Fitter(anny_body)
    gen = torch.Generator().manual_seed(1)
    X = anny_body.clamp_shape(torch.rand(6, 6, generator=gen))
    stand = anny_body.standard_pose(X[:1], "apose")[0]
    poses = [stand + 0.05 * torch.randn(stand.shape, generator=gen) for _ in range(2)]
    rots = [torch.tensor([0.1, 0.2, 0.05]), torch.tensor([-0.05, 0.0, 0.1])]
    transes = [torch.tensor([0.0, 0.1, 3.0]), torch.tensor([0.2, -0.1, 2.5])]
    heights = (1.75, 1.62)
    with torch.no_grad():
        rows = fitter._posed_camera_rows(
            X, torch.stack([poses[0]] * 3 + [poses[1]] * 3), stand[None].expand(6, -1, -1),
            torch.stack([rots[0]] * 3 + [rots[1]] * 3), torch.stack([transes[0]] * 3 + [transes[1]] * 3)[:, None],
            torch.tensor([heights[0]] * 3 + [heights[1]] * 3))
        for k in range(2):
            st, scale, mass, to_cam = fitter._posed_camera(X[3 * k:3 * k + 3], poses[k], stand, rots[k],
                                                           transes[k], heights[k])
            part = slice(3 * k, 3 * k + 3)
            assert (rows[0].vertices[part] - st.vertices).abs().max() <= 1e-6
            assert torch.allclose(rows[1][part], scale, rtol=1e-6, atol=0)
            assert torch.allclose(rows[2][part], mass, rtol=5e-6, atol=0)
            cam = rows[3](rows[0].vertices)[part]
            assert (cam - to_cam(st.vertices)).abs().max() <= 1e-5


def test_constants_of_the_fits_loops_are_made_once_per_device_and_dtype():
    """On a GPU each ``torch.tensor(numbers, device=...)`` is a copy that waits for the stream
    (a host sync per call of the fit's inner loops); ``on_device`` makes each constant once."""
    from inference.bodies.base import on_device

    a = on_device((1.0, 2.0, 3.0), "cpu", torch.float32)
    assert a is on_device((1.0, 2.0, 3.0), torch.device("cpu"), torch.float32)
    assert a.tolist() == [1.0, 2.0, 3.0] and a.dtype == torch.float32
    b = on_device((1.0, 2.0, 3.0), "cpu", torch.float64)
    assert b is not a and b.dtype == torch.float64
    assert on_device(((1.0, 0.0), (0.0, -1.0)), "cpu", torch.float32).shape == (2, 2)


def test_the_fits_loops_copy_no_host_data_to_the_device(pipeline, bus_jpg, tmp_path):
    """``inference.syncs.count_syncs`` on a CPU (as ``scripts/fit_ab.py fit --syncs``): data made
    on the host that a GPU run copies in (``torch.tensor`` of numbers with a device,
    ``.to(device)``), by the line of inference/ that asked. One fit of a real photo copies at
    setup, not at every step (70 stage-B steps, each with the shape prior and the detector's
    keypoint offsets; stage C's requests)."""
    from inference.pipeline import Job
    from inference.stages.fit import Fitter, FitTarget
    from inference.syncs import COPY, count_syncs
    from inference.types import Subject

    job = Job(bus_jpg, Subject(180, "male", 75), tmp_path / "unused")
    seen = pipeline.observe([job])
    photo, person, mask = seen["photos"][0], seen["subjects"][0], seen["masks"][0]
    target = FitTarget(job.subject, (photo.image.shape[1], photo.image.shape[0]), person.keypoints, mask,
                       photo.focal_35mm)
    fitter = Fitter(pipeline.body_for("male"))
    copies = {k: n for k, n in count_syncs(lambda: fitter.fit([target])).items() if COPY in k}
    assert copies and max(copies.values()) <= 8, sorted(copies.items(), key=lambda kv: -kv[1])[:3]

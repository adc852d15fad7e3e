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
            assert torch.allclose(m, mass[rows], rtol=1e-6, atol=0)


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
        assert torch.equal(ours, annys)
        for a, b in zip(torch.autograd.grad(ours, (vertices, transforms), grad_out),
                        torch.autograd.grad(annys, (vertices, transforms), grad_out)):
            assert torch.equal(a, b)


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

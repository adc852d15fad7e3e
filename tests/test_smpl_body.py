"""SMPL behind the BodyModel interface, on the synthetic SMPL-format model (the real one is licensed)."""
from __future__ import annotations

import math
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import trimesh

from inference.bodies.base import L_ELBOW, L_SHOULDER, L_WRIST, LIMB, LIMBS, R_SHOULDER, R_WRIST
from inference.bodies.smpl_body import SmplBody
from inference.bodies.smpl_convert import convert_smpl_dir, convert_smpl_pickle
from inference.bodies.smpl_synthetic import FACE_VERTEX_IDS, build_synthetic, main as synthetic_main
from inference.errors import MissingWeightError
from inference.types import COCO_KEYPOINTS, Subject

SUBJECT = Subject(height_cm=170.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smpl")
    assert synthetic_main([str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def body(model_dir) -> SmplBody:
    return SmplBody(model_dir, "other")


def kp(state, name: str) -> torch.Tensor:
    return state.keypoints[0, COCO_KEYPOINTS.index(name)]


# ---- synthetic model ------------------------------------------------------------------------
def test_synthetic_model_is_a_closed_body_with_face_landmarks_on_the_head():
    d = build_synthetic(seed=0)
    v, f = d["v_template"], d["f"].astype(np.int64)
    assert v.shape == (6890, 3) and d["shapedirs"].shape == (6890, 3, 10)
    assert d["posedirs"].shape == (6890, 3, 207) and d["J_regressor"].shape == (24, 6890)
    assert d["weights"].shape == (6890, 24) and d["kintree_table"].shape == (2, 24)
    np.testing.assert_allclose(d["weights"].sum(1), 1.0)
    np.testing.assert_allclose(d["J_regressor"].sum(1), 1.0)
    mesh = trimesh.Trimesh(v, f, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0.03
    assert len(np.unique(f)) == 6890
    neck_y = (d["J_regressor"] @ v)[12, 1]
    for name, idx in FACE_VERTEX_IDS.items():
        assert v[idx, 1] > neck_y, name
    assert v[FACE_VERTEX_IDS["leye"], 0] > 0 > v[FACE_VERTEX_IDS["reye"], 0]
    assert v[FACE_VERTEX_IDS["nose"], 2] > 0.05  # faces +Z


# ---- loading and rest shape --------------------------------------------------------------------
def test_loads_synthetic_model(body):
    assert body.name == "smpl" and body.version.startswith("smplx ")
    assert body.shape_names == tuple(f"beta{i}" for i in range(10))
    assert body.faces.shape[1] == 3 and body.faces.max() == 6889
    assert body.face_uv.shape == body.faces.shape and body.face_uv.max() < len(body.uv)
    assert body.uv.min() >= 0.0 and body.uv.max() <= 1.0
    assert body.initial_shape(SUBJECT).shape == (1, 10)
    assert torch.all(body.free_shape_mask(SUBJECT) == 1)


def test_rest_pose_is_canonical_and_about_170cm(body):
    rest = body.rest(body.initial_shape(SUBJECT))
    assert rest.vertices.shape == (1, 6890, 3)
    assert float(body.rest_height(rest.vertices)[0]) == pytest.approx(1.7, abs=0.08)
    assert float(rest.vertices[0, :, 1].min()) == pytest.approx(0.0, abs=1e-6)
    assert kp(rest, "left_shoulder")[0] > 0 > kp(rest, "right_shoulder")[0]
    assert kp(rest, "left_eye")[0] > 0 > kp(rest, "right_eye")[0]
    assert kp(rest, "left_ear")[0] > 0 > kp(rest, "right_ear")[0]
    assert kp(rest, "left_hip")[0] > 0 > kp(rest, "right_hip")[0]
    assert kp(rest, "nose")[2] > kp(rest, "left_ear")[2]  # faces +Z
    assert kp(rest, "nose")[1] > kp(rest, "left_shoulder")[1] > kp(rest, "left_hip")[1]
    assert kp(rest, "left_hip")[1] > kp(rest, "left_knee")[1] > kp(rest, "left_ankle")[1] > 0


def test_genders_load_different_files(model_dir):
    heights = {g: float(SmplBody(model_dir, g).rest(torch.zeros(1, 10)).vertices[0, :, 1].max())
               for g in ("male", "female", "other")}
    assert heights["male"] > heights["other"] > heights["female"]


def test_shape_space(body):
    zero = torch.zeros(1, 10)
    taller = zero.clone()
    taller[0, 0] = 2.0
    h0 = float(body.rest_height(body.rest(zero).vertices)[0])
    h1 = float(body.rest_height(body.rest(taller).vertices)[0])
    assert h1 > h0 + 0.05
    wide = zero.clone()
    wide[0, 1] = 2.0
    w0 = body.rest(zero).vertices[0, :, 2].std()
    w1 = body.rest(wide).vertices[0, :, 2].std()
    assert w1 > w0
    # the soles stay on the floor whatever the shape
    assert float(body.rest(taller).vertices[0, :, 1].min()) == pytest.approx(0.0, abs=1e-6)
    big = torch.full((2, 10), 9.0)
    assert torch.all(body.clamp_shape(big) == 5.0) and torch.all(body.clamp_shape(-big) == -5.0)
    prior = body.shape_prior(torch.stack([torch.zeros(10), torch.ones(10)]), SUBJECT)
    assert prior[0] == 0 and prior[1] == pytest.approx(0.5)


# ---- posing and keypoints ------------------------------------------------------------------
def test_keypoints_from_vertices_matches_posed(body, tmp_path):
    g = torch.Generator().manual_seed(0)
    shape = torch.randn(2, 10, generator=g)
    limbs = 0.4 * torch.randn(2, len(LIMBS), 3, generator=g)
    state = body.posed(shape, limbs)
    assert state.keypoints.shape == (2, 17, 3)
    torch.testing.assert_close(body.keypoints_from_vertices(state.vertices), state.keypoints)
    # also on a mesh written to and read back from an OBJ
    path = tmp_path / "body.obj"
    trimesh.Trimesh(state.vertices[0].detach().numpy(), body.faces, process=False).export(path)
    back = trimesh.load(path, process=False)
    kp_obj = body.keypoints_from_vertices(torch.tensor(np.asarray(back.vertices))[None])
    np.testing.assert_allclose(kp_obj[0].numpy(), state.keypoints[0].detach().numpy(), atol=1e-5)


def test_left_upper_arm_rotation_moves_left_wrist_down(body):
    shape = torch.zeros(1, 10)
    rest = body.posed(shape, body.zero_limbs())
    limbs = body.zero_limbs()
    limbs[0, LIMB["left_upper_arm"]] = torch.tensor([0.0, 0.0, -math.pi / 2])
    down = body.posed(shape, limbs)
    arm = float((kp(rest, "left_wrist") - kp(rest, "left_shoulder")).norm())
    drop = float(kp(rest, "left_wrist")[1] - kp(down, "left_wrist")[1])
    assert drop == pytest.approx(arm, abs=0.02)
    assert float(kp(down, "left_wrist")[0]) == pytest.approx(float(kp(rest, "left_shoulder")[0]), abs=0.02)
    torch.testing.assert_close(kp(down, "right_wrist"), kp(rest, "right_wrist"))
    torch.testing.assert_close(kp(down, "left_shoulder"), kp(rest, "left_shoulder"))


def test_each_limb_moves_its_own_joints(body):
    shape = torch.zeros(1, 10)
    rest = body.posed(shape).keypoints[0]
    for limb, axis, moved, still in (
        ("right_forearm", (0.0, 0.0, 0.5), "right_wrist", "right_elbow"),
        ("left_thigh", (0.5, 0.0, 0.0), "left_knee", "left_hip"),
        ("right_shin", (0.5, 0.0, 0.0), "right_ankle", "right_knee"),
        ("neck", (0.5, 0.0, 0.0), "nose", "left_shoulder"),
        ("spine", (0.5, 0.0, 0.0), "left_shoulder", "left_hip"),
    ):
        limbs = body.zero_limbs()
        limbs[0, LIMB[limb]] = torch.tensor(axis)
        kp_ = body.posed(shape, limbs).keypoints[0]
        i, j = COCO_KEYPOINTS.index(moved), COCO_KEYPOINTS.index(still)
        assert (kp_[i] - rest[i]).norm() > 0.02, limb
        assert (kp_[j] - rest[j]).norm() < 1e-4, limb


def test_apose_lowers_wrists(body):
    shape = torch.zeros(1, 10)
    rest = body.rest(shape)
    apose = body.posed(shape, body.standard_pose(shape, "apose"))
    for wrist, shoulder in ((L_WRIST, L_SHOULDER), (R_WRIST, R_SHOULDER)):
        assert apose.keypoints[0, wrist, 1] < rest.keypoints[0, wrist, 1] - 0.2
        d = apose.keypoints[0, wrist] - apose.keypoints[0, shoulder]
        assert math.degrees(math.atan2(-float(d[1]), abs(float(d[0])))) == pytest.approx(45.0, abs=3.0)
    # forearm stays straight
    a = apose.keypoints[0]
    u, w = a[L_ELBOW] - a[L_SHOULDER], a[L_WRIST] - a[L_ELBOW]
    assert float(torch.nn.functional.cosine_similarity(u, w, dim=0)) > 0.99


def test_gradients_reach_shape_and_limbs(body):
    shape = torch.zeros(1, 10, requires_grad=True)
    limbs = body.zero_limbs().requires_grad_(True)
    state = body.posed(shape, limbs)
    (state.keypoints[0, L_WRIST, 1] + state.vertices[..., 1].max()).backward()
    assert shape.grad.abs().sum() > 0
    assert limbs.grad[0, LIMB["left_upper_arm"]].abs().sum() > 0


def test_params(body):
    limbs = body.zero_limbs()
    limbs[0, LIMB["left_upper_arm"]] = torch.tensor([0.1, 0.2, 0.3])
    limbs[0, LIMB["spine"]] = torch.tensor([0.4, 0.0, 0.0])
    p = body.params(torch.ones(1, 10), limbs)
    assert p["betas"].shape == (10,) and np.all(p["betas"] == 1)
    assert p["body_pose"].shape == (69,) and p["global_orient"].shape == (3,)
    np.testing.assert_allclose(p["body_pose"][(16 - 1) * 3:(16 - 1) * 3 + 3], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(p["body_pose"][(3 - 1) * 3:(3 - 1) * 3 + 3], [0.4, 0.0, 0.0], atol=1e-7)
    assert np.count_nonzero(p["body_pose"]) == 4
    assert str(p["gender"]) == "neutral"
    # the same pose through smplx's own forward gives our vertices (up to the floor shift)
    import smplx

    m = smplx.SMPL(str(body.model_path), num_betas=10)
    out = m(betas=torch.tensor(p["betas"])[None], body_pose=torch.tensor(p["body_pose"])[None],
            global_orient=torch.tensor(p["global_orient"])[None])
    ours = body.posed(torch.ones(1, 10), limbs).vertices[0]
    offset = (ours - out.vertices[0]).detach()
    torch.testing.assert_close(offset, offset[:1].expand_as(offset), atol=1e-5, rtol=0)
    assert float(offset[0, 0]) == pytest.approx(0.0, abs=1e-6)


# ---- UVs ------------------------------------------------------------------------------------
def test_planar_atlas_splits_front_and_back(body):
    v = body.rest(torch.zeros(1, 10)).vertices[0].numpy()
    tri = v[body.faces]
    nz = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2]
    u = body.uv[body.face_uv][..., 0].mean(1)
    assert np.all(u[nz >= 0] < 0.5) and np.all(u[nz < 0] > 0.5)


def test_uv_template_obj_is_used(model_dir, tmp_path, body):
    d = tmp_path / "withuv"
    d.mkdir()
    (d / "SMPL_NEUTRAL.pkl").write_bytes((model_dir / "SMPL_NEUTRAL.pkl").read_bytes())
    rng = np.random.default_rng(1)
    vt = rng.uniform(size=(6890, 2))  # one uv per vertex: easy to check
    order = rng.permutation(len(body.faces))
    faces = np.roll(body.faces[order], 1, axis=1)  # shuffled and rotated triangles
    lines = [f"vt {a:.6f} {b:.6f}" for a, b in vt]
    lines += ["f " + " ".join(f"{i + 1}/{i + 1}" for i in tri) for tri in faces]
    (d / "smpl_uv.obj").write_text("\n".join(lines) + "\n")
    b = SmplBody(d, "other")
    np.testing.assert_array_equal(b.faces, body.faces)
    np.testing.assert_allclose(b.uv[b.face_uv], vt[b.faces].astype(np.float32), atol=1e-6)


# ---- missing / unconverted files -----------------------------------------------------------
def test_missing_file_raises_missing_weight_error(tmp_path):
    with pytest.raises(MissingWeightError) as err:
        SmplBody(tmp_path, "male")
    msg = str(err.value)
    assert str(tmp_path / "SMPL_MALE.pkl") in msg
    assert "avatar weights convert-smpl SRC_DIR" in msg


# ---- conversion of official (chumpy) pickles -----------------------------------------------
class FakeCh:
    """Pickles like chumpy.ch.Ch: the array under 'x' in the state dict, after other arrays."""

    __module__ = "chumpy.ch"
    __qualname__ = "Ch"

    def __init__(self, x: np.ndarray):
        self.label = np.zeros(3)  # a decoy array before 'x'
        self._dirty_vars = set()
        self.x = x


class FakeSelect:
    """Pickles like a derived chumpy node (no 'x'): its value is the first array in its state."""

    __module__ = "chumpy.ch_ops"
    __qualname__ = "Select"

    def __init__(self, a: np.ndarray):
        self.note = "derived"
        self.a = a


def write_official_style_pickle(path: Path, data: dict, monkeypatch) -> None:
    """An SMPL pickle holding (fake) chumpy objects and scipy sparse matrices, like the official."""
    ch = types.ModuleType("chumpy.ch")
    ops = types.ModuleType("chumpy.ch_ops")
    ch.Ch, ops.Select = FakeCh, FakeSelect
    with monkeypatch.context() as mp:  # the chumpy modules exist only while pickling
        mp.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
        mp.setitem(sys.modules, "chumpy.ch", ch)
        mp.setitem(sys.modules, "chumpy.ch_ops", ops)
        official = dict(data)
        official["v_template"] = FakeCh(data["v_template"])
        official["shapedirs"] = FakeCh(data["shapedirs"])
        official["J"] = FakeCh(data["J_regressor"] @ data["v_template"])
        official["weights"] = FakeSelect(data["weights"])
        official["J_regressor"] = sp.csc_matrix(data["J_regressor"])
        official["J_regressor_prior"] = sp.csc_matrix(data["J_regressor"])
        path.write_bytes(pickle.dumps(official, protocol=2))


def test_convert_official_style_pickle_round_trips(tmp_path, model_dir, body, monkeypatch):
    data = build_synthetic(seed=2)  # the neutral synthetic model is seed 2
    src = tmp_path / "src" / "models" / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    src.parent.mkdir(parents=True)
    write_official_style_pickle(src, data, monkeypatch)
    assert "chumpy" not in sys.modules
    with pytest.raises(ModuleNotFoundError):  # the file really needs chumpy to load plainly
        pickle.loads(src.read_bytes(), encoding="latin1")

    dst = tmp_path / "plain.pkl"
    convert_smpl_pickle(src, dst)
    with open(dst, "rb") as fh:
        out = pickle.load(fh)
    for key in ("v_template", "shapedirs", "J_regressor", "weights", "posedirs", "f", "kintree_table"):
        assert isinstance(out[key], np.ndarray), key
        np.testing.assert_array_equal(out[key], data[key], err_msg=key)
    assert isinstance(out["J"], np.ndarray) and out["J"].shape == (24, 3)
    assert out["bs_style"] == "lbs"

    # an unconverted file is reported as a weight problem, with the fix
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "SMPL_NEUTRAL.pkl").write_bytes(src.read_bytes())
    with pytest.raises(MissingWeightError, match="convert-smpl"):
        SmplBody(raw, "other")

    # the directory converter finds the official name and smplx loads the result
    written = convert_smpl_dir(tmp_path / "src", tmp_path / "weights")
    assert written == [tmp_path / "weights" / "SMPL_NEUTRAL.pkl"]
    converted = SmplBody(tmp_path / "weights", "other")
    shape = torch.randn(1, 10, generator=torch.Generator().manual_seed(3))
    limbs = body.standard_pose(shape, "apose")
    torch.testing.assert_close(converted.posed(shape, limbs).vertices, body.posed(shape, limbs).vertices)


def test_convert_dir_picks_genders_and_versions(tmp_path, model_dir):
    src = tmp_path / "SMPL_python_v.1.1.0" / "smpl" / "models"
    src.mkdir(parents=True)
    plain = (model_dir / "SMPL_MALE.pkl").read_bytes()
    female = (model_dir / "SMPL_FEMALE.pkl").read_bytes()
    (src / "basicModel_m_lbs_10_207_0_v1.0.0.pkl").write_bytes(female)  # older version: ignored
    (src / "basicmodel_m_lbs_10_207_0_v1.1.0.pkl").write_bytes(plain)
    (src / "basicmodel_f_lbs_10_207_0_v1.1.0.pkl").write_bytes(female)
    (src / "SMPLX_MALE.pkl").write_bytes(b"not smpl")  # other models are not picked up
    written = convert_smpl_dir(tmp_path, tmp_path / "out")
    assert sorted(p.name for p in written) == ["SMPL_FEMALE.pkl", "SMPL_MALE.pkl"]
    with open(tmp_path / "out" / "SMPL_MALE.pkl", "rb") as fh:
        male = pickle.load(fh)
    np.testing.assert_array_equal(male["v_template"], pickle.loads(plain)["v_template"])


def test_convert_dir_without_models_raises(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match="basicModel_m_lbs_10_207_0_v1.0.0.pkl"):
        convert_smpl_dir(tmp_path, tmp_path / "out")

"""End-to-end runs of the real pipeline (real YOLO weights, Anny, GrabCut, pyrender)."""
import json

import numpy as np
import pytest
import trimesh
from PIL import Image

from inference import artefacts
from inference.errors import CancelledError, InputError
from inference.pipeline import BESIDE_EXPORT, STAGES, Job
from inference.types import Subject

pytestmark = pytest.mark.slow


def test_bus_run_writes_every_artefact(bus_result):
    result, _ = bus_result
    names = sorted(p.name for p in result.out_dir.iterdir())
    assert names == sorted(artefacts.expected("anny"))


def test_artefacts_load(bus_result):
    result, _ = bus_result
    d = result.out_dir
    glb = trimesh.load(d / artefacts.AVATAR_GLB, force="mesh")
    assert len(glb.faces) == 27420 and glb.visual.uv is not None
    for name in (artefacts.BODY_ORIGINAL, artefacts.BODY_TPOSE, artefacts.BODY_APOSE):
        from inference.stages.export import read_obj_vertices

        v, f = read_obj_vertices(d / name)
        assert v.shape == (13718, 3) and f.shape == (27420, 3)
    tex = Image.open(d / artefacts.SKIN_TEXTURE)
    assert tex.size == (1024, 1024)
    photo = Image.open(result.out_dir / artefacts.OVERLAY)
    assert photo.size == (810, 1080)  # the photo's own size
    assert Image.open(d / artefacts.PREVIEW).size == (1024, 512)
    params = np.load(d / artefacts.ANNY_PARAMS)
    assert params["phenotypes"].shape == (6,) and params["limb_rotvecs"].shape == (10, 3)
    kp = json.loads((d / artefacts.KEYPOINTS).read_text())
    assert len(kp["keypoints"]) == 17
    timings = json.loads((d / artefacts.TIMINGS).read_text())
    assert list(timings["stages_ms"]) == list(STAGES)
    # measure and render run beside the export: the total covers the stages run one after
    # another, and each of those two, but not their sum
    in_turn = [ms for stage, ms in timings["stages_ms"].items() if stage not in BESIDE_EXPORT]
    assert timings["total_ms"] >= sum(in_turn) * 0.99
    assert timings["total_ms"] >= max(timings["stages_ms"].values())
    assert timings["beside_export"] == list(BESIDE_EXPORT)
    assert timings["device"] == "cpu" and timings["models"]["body_model"]["name"] == "anny"


def test_height_is_exact_and_mass_follows_weight(bus_result):
    result, _ = bus_result
    assert result.measurements["height"] == pytest.approx(180.0, abs=0.2)
    assert result.fit["mass_kg"] == pytest.approx(75.0, abs=2.0)
    assert 70 < result.measurements["chest"] < 130
    assert result.measurements["waist"] < result.measurements["hip"]


def test_mesh_sits_on_the_person(bus_result):
    """The fitted keypoints land on the detected ones and the mesh inside the silhouette. The
    median, not the mean: this man's arms are crossed, which the A-pose prior and the joint limits
    do not let the body copy, so his wrists stay ~0.1 body heights off."""
    result, _ = bus_result
    assert result.fit["keypoint_error_median_rel"] < 0.03  # of the body's pixel height
    assert result.fit["keypoint_error_rel"] < 0.07
    assert result.fit["vertices_in_silhouette"] > 0.6
    # where the fit's time went, part by part, adds up to (about) the fit stage's own time
    parts = result.fit["fit_parts_ms"]
    assert list(parts) == ["setup", "stage_a", "stage_b", "widths_and_prior", "stage_c", "final"]
    assert all(ms >= 0 for ms in parts.values()) and parts["stage_b"] > 0
    assert 0.8 * result.timings_ms["fit"] <= sum(parts.values()) <= result.timings_ms["fit"] + 1.0


def test_stage_events_come_in_order(bus_result):
    _, events = bus_result
    assert [(e.stage, e.status) for e in events] == [(s, x) for s in STAGES for x in ("start", "end")]
    assert all(e.elapsed_ms is not None and e.elapsed_ms >= 0 for e in events if e.status == "end")
    assert events[-1].progress == 1.0


def test_truncated_body_leaves_nothing_behind(pipeline, zidane_jpg, tmp_path):
    out = tmp_path / "avatar"
    with pytest.raises(InputError) as err:
        pipeline.run(Job(zidane_jpg, Subject(175, "male", 70), out))
    assert err.value.code == "body_truncated"
    assert list(tmp_path.iterdir()) == []


def test_cancel_between_stages(pipeline, bus_jpg, tmp_path):
    out = tmp_path / "avatar"
    seen = []
    with pytest.raises(CancelledError):
        pipeline.run(Job(bus_jpg, Subject(180, "male", 75), out), on_stage=seen.append,
                     cancel=lambda: any(e.stage == "detect" and e.status == "end" for e in seen))
    assert [e.stage for e in seen if e.status == "end"] == ["load", "detect"]
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_ends_the_stages_beside_it_and_leaves_nothing(pipeline, bus_jpg, tmp_path,
                                                                      monkeypatch):
    """The preview waits for the export's texture: when the export fails before baking it,
    the run still ends (with the export's error), and no folder is left behind."""
    from concurrent.futures import ThreadPoolExecutor

    from inference.stages import texture

    def broken(*args, **kwargs):
        raise OSError("texture bake failed")

    monkeypatch.setattr(texture, "bake_texture", broken)
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(pipeline.run, Job(bus_jpg, Subject(180, "male", 75), tmp_path / "avatar"))
        with pytest.raises(OSError, match="texture bake failed"):
            run.result(timeout=300)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rerun_keeps_the_earlier_result(pipeline, bus_result, zidane_jpg):
    result, _ = bus_result
    before = sorted(p.name for p in result.out_dir.iterdir())
    with pytest.raises(InputError):
        pipeline.run(Job(zidane_jpg, Subject(180, "male", 75), result.out_dir))
    assert sorted(p.name for p in result.out_dir.iterdir()) == before


@pytest.mark.parametrize("subject, code", [
    (Subject(300, "male", 70), "invalid_height"),
    (Subject(170, "male", 10), "invalid_weight"),
    (Subject(170, "robot", 70), "invalid_gender"),
    (Subject(170, "male", 70, "baggy"), "invalid_clothing"),
    (Subject(170, "male", 70, "regular", "guess"), "invalid_weight_source"),
    (Subject(170, "male", None, "regular", "scale"), "invalid_weight_source"),
])
def test_bad_subjects_are_refused_before_any_work(pipeline, bus_jpg, tmp_path, subject, code):
    seen = []
    with pytest.raises(InputError) as err:
        pipeline.run(Job(bus_jpg, subject, tmp_path / "avatar"), on_stage=seen.append)
    assert err.value.code == code and seen == []
    assert list(tmp_path.iterdir()) == []

"""`avatar eval` on a small sample of the frozen wide test split (people in loose clothes, other
poses, cameras, backgrounds): the set holds truth next to each photo, the report has every row,
and the pipeline's errors stay under the guard (the full tables are in the README)."""
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def avatar(*args):
    return subprocess.run([sys.executable, "-m", "inference.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalset")
    r = avatar("eval", "make-set", d, "--split", "test", "--n", "4")
    assert r.returncode == 0, r.stderr
    return d


def test_make_set_stores_truth_next_to_each_photo(eval_set):
    cases = sorted(eval_set.glob("case_*"))
    assert len(cases) == 4
    genders = set()
    for case in cases:
        truth = json.loads((case / "truth.json").read_text())
        genders.add(truth["gender"])
        assert 150 <= truth["height_cm"] <= 200
        assert {"chest", "waist", "hip"} <= set(truth["measurements"])
        assert (case / truth["photo"]).is_file() and (case / "truth_mesh.npz").is_file()
        assert truth["preset"] == "wide" and "scene" in truth
        assert (case / "truth_mask.png").is_file()
        bmi = truth["weight_kg"] / (truth["height_cm"] / 100) ** 2
        assert 17 <= bmi <= 40
        given = truth["perturbed_input"]
        assert abs(abs(given["height_cm"] - truth["height_cm"]) - 2.0) < 0.11
        assert abs(abs(given["weight_kg"] - truth["weight_kg"]) - 5.0) < 0.11
    assert genders == {"male", "female"}


@pytest.fixture(scope="module")
def report(eval_set, tmp_path_factory):
    report_path = tmp_path_factory.mktemp("report") / "report.json"
    r = avatar("eval", "run", eval_set, "--device", "cpu", "--json", report_path)
    assert r.returncode == 0, r.stderr
    assert "baseline (no photo)" in r.stdout and "chest mean/max" in r.stdout
    return json.loads(report_path.read_text())


def test_run_reports_every_row_without_failures(report):
    rows = report["rows"]
    assert set(rows) == {"pipeline", "pipeline, inputs off by ±2 cm/±5 kg", "baseline (no photo)"}
    assert all(row["failed"] == 0 for row in rows.values())
    assert rows["pipeline"]["abs_error_cm"]["height"]["max"] <= 0.5
    assert rows["pipeline, inputs off by ±2 cm/±5 kg"]["abs_error_cm"]["height"]["mean"] == pytest.approx(2.0, abs=0.3)


def test_the_photo_beats_the_photo_free_baseline_on_every_girth(report):
    """Same height, weight and gender: only the photo can tell muscle from fat."""
    pipe = report["rows"]["pipeline"]["abs_error_cm"]
    base = report["rows"]["baseline (no photo)"]["abs_error_cm"]
    for key in ("chest", "waist", "hip"):
        # the target is 4 cm and is not met: on this sample case_003 (loose clothes, a
        # camera at 0.9 m looking up, clutter) has the chest 5.2-5.7 cm small with the learned
        # prior (the 48-photo split's worst chest went 7.5 -> 5.2 with it). A single photo also
        # moves by up to ~1 cm with float rounding alone, so this guards against a regression
        # beyond that, not the target (README, accuracy)
        assert pipe[key]["max"] <= 6.5, (key, pipe[key])
        assert pipe[key]["mean"] < base[key]["mean"], (key, pipe[key], base[key])


def test_keypoint_offsets_agree_with_the_fitters_table(eval_set):
    """The calibration table the fitter uses (medians on the separate wide calib set) still
    describes the detector on this set: the detector's hips sit higher and its ankles lower than
    Anny's own keypoints."""
    from inference.bodies.anny_body import AnnyBody
    from inference.types import COCO_KEYPOINTS as COCO_NAMES

    r = avatar("eval", "keypoint-offsets", eval_set, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    measured = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in COCO_NAMES:
            measured[parts[0]] = (float(parts[1]), float(parts[2]))
    assert set(measured) == set(COCO_NAMES)
    table = dict(zip(COCO_NAMES, AnnyBody.detector_offsets))
    for name in ("left_hip", "left_knee", "left_ankle", "left_shoulder"):
        assert measured[name] == pytest.approx(table[name], abs=0.04), name
    assert measured["left_hip"][1] > 0.02 and measured["left_ankle"][1] < -0.02

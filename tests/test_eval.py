"""`avatar eval` on a tiny set: the set holds truth next to each photo, the report has every row,
and the pipeline's errors stay under regression thresholds (the full table is in the README)."""
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
    r = avatar("eval", "make-set", d, "--n", "2", "--seed", "3")
    assert r.returncode == 0, r.stderr
    return d


def test_make_set_stores_truth_next_to_each_photo(eval_set):
    cases = sorted(eval_set.glob("case_*"))
    assert len(cases) == 2
    genders = set()
    for case in cases:
        truth = json.loads((case / "truth.json").read_text())
        genders.add(truth["gender"])
        assert 150 <= truth["height_cm"] <= 200
        assert {"chest", "waist", "hip"} <= set(truth["measurements"])
        assert (case / "photo.png").is_file() and (case / "truth_mesh.npz").is_file()
        given = truth["perturbed_input"]
        assert abs(abs(given["height_cm"] - truth["height_cm"]) - 2.0) < 0.11
        assert abs(abs(given["weight_kg"] - truth["weight_kg"]) - 5.0) < 0.11
    assert genders == {"male", "female"}


def test_run_reports_every_row_without_failures(eval_set, tmp_path):
    report_path = tmp_path / "report.json"
    r = avatar("eval", "run", eval_set, "--device", "cpu", "--json", report_path)
    assert r.returncode == 0, r.stderr
    assert "baseline (no photo)" in r.stdout and "chest mean/max" in r.stdout
    report = json.loads(report_path.read_text())
    rows = report["rows"]
    assert set(rows) == {"pipeline", "pipeline, inputs off by ±2 cm/±5 kg", "baseline (no photo)"}
    assert all(row["failed"] == 0 for row in rows.values())
    pipe = rows["pipeline"]["abs_error_cm"]
    assert pipe["height"]["max"] <= 0.5
    for key in ("chest", "waist", "hip"):  # regression guard, not the target
        assert pipe[key]["max"] <= 5.0, (key, pipe[key])
    assert rows["pipeline, inputs off by ±2 cm/±5 kg"]["abs_error_cm"]["height"]["mean"] == pytest.approx(2.0, abs=0.3)

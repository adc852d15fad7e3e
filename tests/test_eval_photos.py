"""`avatar eval photos`: a studio's own photos against its own tape measurements (a CSV). The
CSV is checked whole before anything runs; the report compares the pipeline and the photo-free
baseline with the tape; a photo that fails is counted, not fatal."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.errors import InputError
from inference.eval.photos import read_rows


def avatar(*args):
    return subprocess.run([sys.executable, "-m", "inference.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=900)


def write(path, text):
    path.write_text(text)
    return path


def test_rows_are_read_with_paths_relative_to_the_csv(tmp_path):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "a.jpg")
    csv = write(tmp_path / "tape.csv", "photo,height_cm,weight_kg,gender,clothing,weight_source,chest,hip,customer\n"
                "photos/a.jpg,170,,Female,,,90.5,,c1\nphotos/a.jpg,170,61,male,fitted,Scale,91,,c2\n\n")
    rows, tape, ignored = read_rows(csv)
    assert len(rows) == 2 and rows[0]["line"] == 2
    assert rows[0]["photo"] == tmp_path / "photos" / "a.jpg"
    s = rows[0]["subject"]
    assert (s.height_cm, s.weight_kg, s.gender, s.clothing, s.weight_source) == (170.0, None, "female", "regular",
                                                                                "reported")
    s = rows[1]["subject"]
    assert (s.weight_kg, s.clothing, s.weight_source) == (61.0, "fitted", "scale")
    assert rows[0]["tape"] == {"chest": 90.5}  # a blank cell is "not measured"
    assert tape == ["chest", "hip"] and ignored == ["customer"]


@pytest.mark.parametrize("text, said", [
    ("photo,gender,chest\nx.jpg,male,90\n", "missing column(s) height_cm"),
    ("photo,height_cm,gender,notes\nx.jpg,170,male,n\n", "no measurement column"),
    ("photo,height_cm,gender,chest\n", "no rows"),
    ("photo,height_cm,gender,chest\nmissing.jpg,170,male,90\n", "line 2: photo 'missing.jpg' not found"),
    ("photo,height_cm,gender,chest\nok.jpg,170,alien,90\n", "line 2: gender 'alien'"),
    ("photo,height_cm,gender,chest\nok.jpg,tall,male,90\n", "line 2: height_cm 'tall' is not a number"),
    ("photo,height_cm,gender,chest\nok.jpg,400,male,90\n", "line 2: height 400.0 cm is outside"),
    ("photo,height_cm,gender,weight_kg,chest\nok.jpg,170,male,nan,90\n", "weight_kg 'nan' is not a number"),
    ("photo,height_cm,gender,chest\nok.jpg,170,male,\n", "line 2: no tape measurement"),
    ("photo,height_cm,gender,chest\nok.jpg,170,male,-3\n", "not positive"),
    ("photo,height_cm,gender,clothing,chest\nok.jpg,170,male,suit,90\n", "clothing 'suit'"),
    ("photo,height_cm,gender,weight_source,chest\nok.jpg,170,male,guess,90\n", "line 2: weight_source 'guess'"),
    ("photo,height_cm,gender,weight_source,chest\nok.jpg,170,male,scale,90\n",
     "line 2: weight source 'scale' needs a weight"),
])
def test_a_bad_csv_is_refused_with_what_is_wrong(tmp_path, text, said):
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.jpg")
    with pytest.raises(InputError) as err:
        read_rows(write(tmp_path / "tape.csv", text))
    assert said in str(err.value)


def test_every_problem_is_listed_at_once_and_nothing_runs(tmp_path):
    csv = write(tmp_path / "tape.csv", "photo,height_cm,gender,chest\nnope.jpg,170,male,90\n"
                "nope2.jpg,170,male,91\n")
    out = tmp_path / "out"
    r = avatar("eval", "photos", csv, "--out-dir", out, "--json", tmp_path / "r.json")
    assert r.returncode == 2
    assert "line 2:" in r.stderr and "line 3:" in r.stderr
    assert not out.exists() and not (tmp_path / "r.json").exists()
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_photos_against_their_tape(tmp_path):
    """Two renders of known bodies (their truth as the tape) and a photo with nobody in it."""
    r = avatar("eval", "make-set", tmp_path / "set", "--split", "test", "--n", "2")
    assert r.returncode == 0, r.stderr
    Image.fromarray(np.full((640, 480, 3), 128, np.uint8)).save(tmp_path / "empty.jpg")
    lines = ["photo,height_cm,weight_kg,gender,chest,waist,hip,upper_arm"]
    truths = {}
    for case in sorted((tmp_path / "set").glob("case_*")):
        t = json.loads((case / "truth.json").read_text())
        m = t["measurements"]
        name = f"set/{case.name}/{t['photo']}"
        truths[name] = m
        lines.append(f"{name},{t['height_cm']},{t['weight_kg']},{t['gender']},{m['chest']},{m['waist']},"
                     f"{m['hip']},")  # upper arm not measured on these two
    lines.append("empty.jpg,170,70,male,90,80,95,30")
    csv = write(tmp_path / "tape.csv", "\n".join(lines) + "\n")
    r = avatar("eval", "photos", csv, "--device", "cpu", "--out-dir", tmp_path / "out",
               "--json", tmp_path / "report.json")
    assert r.returncode == 1, r.stderr  # one photo failed: said, and the others still reported
    assert "(1 failed)" in r.stdout and "failed:" in r.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["photos"] == 3 and report["failed"] == 1
    done = [p for p in report["per_photo"] if "pipeline" in p]
    assert {p["photo"] for p in done} == set(truths)
    for p in done:
        assert Path(p["out_dir"], "overlay.png").is_file()  # kept, to look at
        assert set(p["pipeline"]) == set(p["baseline"]) == {"chest", "waist", "hip"}
        for m, fitted in p["pipeline"].items():
            assert abs(fitted - truths[p["photo"]][m]) <= 6.5, (p["photo"], m)  # eval's guard
        assert p["fit"]["mass_kg"] > 0
    failed = next(p for p in report["per_photo"] if "error" in p)
    assert failed["photo"] == "empty.jpg" and failed["error"]["code"]
    summary = report["measurements"]
    assert set(summary) == {"chest", "waist", "hip"}  # no upper arm was measured
    for m, s in summary.items():
        diffs = [p["pipeline"][m] - p["tape"][m] for p in done]
        assert s["n"] == 2
        assert s["mean_abs"] == pytest.approx(np.mean(np.abs(diffs)), abs=0.011)
        assert s["bias"] == pytest.approx(np.mean(diffs), abs=0.011)
        assert s["max_abs"] >= s["mean_abs"] and s["baseline_mean_abs"] > 0

"""The ``avatar`` command as a user runs it: exit codes, messages, nothing half-written."""
import json
import subprocess
import sys

import pytest


def avatar(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "inference.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("flags, needle", [
    (["--height", "300", "--gender", "male"], "height 300.0 cm is outside 50-250 cm"),
    (["--height", "170", "--weight", "5", "--gender", "male"], "weight 5.0 kg is outside"),
    (["--height", "170", "--gender", "robot"], "gender 'robot' is not one of"),
    (["--height", "170", "--clothing", "baggy"], "clothing 'baggy' is not one of regular, fitted"),
    (["--height", "170", "--weight", "70", "--weight-source", "guess"], "weight source 'guess' is not one of"),
    (["--height", "170", "--weight-source", "scale"], "weight source 'scale' needs a weight"),
])
def test_bad_numbers_exit_2_with_a_message(bus_jpg, tmp_path, flags, needle):
    out = tmp_path / "out"
    r = avatar("create", bus_jpg, *flags, "--out", out)
    assert r.returncode == 2 and needle in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("photo", [[], ["BUS"]])
def test_a_photo_or_the_sample_not_both_nor_neither(bus_jpg, tmp_path, photo):
    photo = [bus_jpg if p == "BUS" else p for p in photo]
    r = avatar("create", *photo, *(["--sample"] if photo else []), "--height", "170", "--out", tmp_path / "out")
    assert r.returncode == 2 and "give a photo or --sample" in r.stderr
    assert not (tmp_path / "out").exists()


def test_not_an_image(tmp_path):
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"\x00" * 1000)
    r = avatar("create", bad, "--height", "170", "--out", tmp_path / "out")
    assert r.returncode == 2 and "not a readable image" in r.stderr
    assert not (tmp_path / "out").exists()


def test_missing_weights_name_the_fix(bus_jpg, tmp_path):
    r = avatar("create", bus_jpg, "--height", "170", "--out", tmp_path / "out",
               "--weights-dir", tmp_path / "empty")
    assert r.returncode == 3 and "avatar weights fetch" in r.stderr


def test_a_missing_person_mask_model_names_the_fix(bus_jpg, tmp_path, weights_dir):
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "yolo11n-pose.pt").symlink_to(weights_dir / "yolo11n-pose.pt")
    r = avatar("create", bus_jpg, "--height", "170", "--out", tmp_path / "out", "--weights-dir", wdir)
    assert r.returncode == 3 and "pose_landmark_full.tflite" in r.stderr and "avatar weights fetch" in r.stderr
    assert not (tmp_path / "out").exists()


def test_smpl_without_files_names_the_fix(bus_jpg, tmp_path):
    r = avatar("create", bus_jpg, "--height", "170", "--out", tmp_path / "out",
               "--body-model", "smpl", "--weights-dir", tmp_path / "empty")
    assert r.returncode == 3 and "convert-smpl" in r.stderr


def test_truncated_body_json_error(zidane_jpg, tmp_path):
    r = avatar("create", zidane_jpg, "--height", "175", "--gender", "male", "--out", tmp_path / "out", "--json")
    assert r.returncode == 2
    doc = json.loads(r.stdout)
    assert doc["status"] == "error" and doc["error"]["code"] == "body_truncated"
    assert not (tmp_path / "out").exists()


def test_weights_check_passes_after_fetch(weights_dir):
    r = avatar("weights", "check", "--weights-dir", weights_dir)
    assert r.returncode == 0, r.stdout
    assert "yolo11n-pose.pt" in r.stdout and "869e83fc" in r.stdout
    assert "pose_landmark_full.tflite" in r.stdout and "e9a5c5cb" in r.stdout


def test_weights_check_fails_on_a_corrupt_file(tmp_path, weights_dir):
    (tmp_path / "yolo11n-pose.pt").write_bytes(b"garbage")
    r = avatar("weights", "check", "--weights-dir", tmp_path)
    assert r.returncode == 3 and "MISMATCH" in r.stdout


@pytest.mark.slow
def test_create_json_then_measure_agrees(tmp_path):
    """The README's first command: the sample photo, no photo of one's own."""
    out = tmp_path / "out"
    r = avatar("create", "--sample", "--height", "180", "--weight", "75", "--gender", "male",
               "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # progress went to stderr: stdout is one JSON document
    assert doc["status"] == "ok" and doc["body_model"] == "anny"
    assert "[4/7] fit" in r.stderr and "[7/7] render" in r.stderr
    assert set(doc["timings_ms"]["stages"]) == {"load", "detect", "segment", "fit", "export",
                                                 "measure", "render"}
    m = avatar("measure", out / "body_apose.obj", "--body-model", "anny", "--json")
    assert m.returncode == 0, m.stderr
    assert json.loads(m.stdout)["measurements"] == doc["measurements"]


def test_measure_refuses_a_foreign_mesh(tmp_path):
    obj = tmp_path / "cube.obj"
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    r = avatar("measure", obj, "--body-model", "anny")
    assert r.returncode == 2 and "13718" in r.stderr


@pytest.mark.slow
def test_create_says_when_the_silhouette_reads_fitted_clothes(tmp_path):
    """A skin-tight studio render said to wear everyday clothes: the fit reads the clothes from
    the silhouette, fits it as fitted and says so (case 12 of the studio tuning set, predicted
    ~0.7 cm at the hips, well under the 1.2 cm threshold). Its weight is said to be a scale's, and
    the mass line says so (the clothes are read before the weight's source matters)."""
    sets = tmp_path / "set"
    r = avatar("eval", "make-set", sets, "--preset", "studio", "--seed", "1", "--n", "13")
    assert r.returncode == 0, r.stderr
    truth = json.loads((sets / "case_012" / "truth.json").read_text())
    r = avatar("create", sets / "case_012" / truth["photo"], "--height", truth["height_cm"],
               "--weight", truth["weight_kg"], "--gender", truth["gender"], "--weight-source", "scale",
               "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "clothing: said regular, read as fitted from the silhouette" in r.stdout
    assert f"(weighed {truth['weight_kg']:.1f} kg on a scale: held within ~2 %)" in r.stdout

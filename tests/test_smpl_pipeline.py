"""The SMPL path end to end, on a generated SMPL-format model (the licensed files cannot be had
here): `--body-model auto` must pick SMPL when its files are present, and say so."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from inference import artefacts
from inference.bodies.smpl_synthetic import make_synthetic_smpl_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smpl_weights(weights_dir, tmp_path_factory):
    wdir = tmp_path_factory.mktemp("weights")
    for name in ("yolo11n-pose.pt", "pose_landmark_full.tflite"):
        shutil.copy(weights_dir / name, wdir / name)
    make_synthetic_smpl_dir(wdir / "smpl")
    return wdir


def avatar(*args):
    return subprocess.run([sys.executable, "-m", "inference.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_auto_picks_smpl_and_writes_its_params(smpl_weights, bus_jpg, tmp_path):
    out = tmp_path / "out"
    r = avatar("create", bus_jpg, "--height", "180", "--weight", "75", "--gender", "male",
               "--out", out, "--weights-dir", smpl_weights, "--json")
    assert r.returncode == 0, r.stderr
    assert "auto: smpl" in r.stderr  # said loudly
    doc = json.loads(r.stdout)
    assert doc["body_model"] == "smpl"
    assert sorted(p.name for p in out.iterdir()) == sorted(artefacts.expected("smpl"))
    params = np.load(out / artefacts.SMPL_PARAMS)
    assert params["betas"].shape == (10,) and params["body_pose"].shape == (69,)
    assert doc["measurements"]["height"] == pytest.approx(180.0, abs=0.5)
    m = avatar("measure", out / artefacts.BODY_APOSE, "--body-model", "smpl",
               "--weights-dir", smpl_weights, "--json")
    assert m.returncode == 0, m.stderr
    assert json.loads(m.stdout)["measurements"] == doc["measurements"]

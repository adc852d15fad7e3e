"""docker-compose.gpu.yml: valid against the Compose spec, wired to the settings we have, and
free of secrets (no Docker engine here: the file is checked, not run)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.gpu.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_is_valid_against_the_compose_spec():
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")
    assert exe, "check-jsonschema is missing: pip install -e '.[test]'"
    r = subprocess.run([exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_api_and_worker_only_set_variables_the_settings_know(compose):
    known = {name.upper() for name in Settings.model_fields} | {"PYOPENGL_PLATFORM"}
    for name in ("api", "worker-gpu0"):
        assert set(compose["services"][name]["environment"]) <= known, name


def test_the_worker_reserves_a_gpu_and_pins_it(compose):
    w = compose["services"]["worker-gpu0"]
    devices = w["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert w["command"][:3] == ["avatar", "worker", "--gpu"]


def test_no_secret_is_written_in_the_file():
    text = COMPOSE.read_text()
    for name in ("POSTGRES_PASSWORD", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
        values = re.findall(rf"^\s*{name}:\s*(\S+)", text, flags=re.M)
        assert values, name
        for value in values:
            assert value.startswith("${"), f"{name} has a literal value"

"""RunPod's configuration: BACKEND=runpod refuses to load without its credentials, and
Dockerfile.runpod, read (no Docker engine here): a CUDA image that places the weights at build
time, ships the handler and what it imports, and starts the handler."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "Dockerfile.runpod").read_text()
LINES = [line.strip() for line in re.sub(r"\\\n", " ", TEXT).splitlines() if line.strip() and not line.startswith("#")]


def test_it_builds_on_a_cuda_image():
    assert re.match(r"FROM nvidia/cuda:\S+-runtime-", LINES[0])


def test_weights_are_placed_at_build_time_and_checked():
    run = " ".join(line for line in LINES if line.startswith("RUN "))
    assert "avatar weights fetch" in run and "avatar weights check" in run
    assert "ANNY_CACHE_DIR=/app/weights" in TEXT  # Anny's cache inside the image, beside the weights


def test_it_ships_the_handler_and_everything_it_imports():
    copied = " ".join(line for line in LINES if line.startswith("COPY "))
    for path in ("runpod_handler.py", "inference", "service", "constraints.txt", "pyproject.toml"):
        assert path in copied, path
    assert "'.[runpod]'" in TEXT and "-c constraints.txt" in TEXT


def test_it_starts_the_handler():
    assert LINES[-1] == 'CMD ["python", "-u", "runpod_handler.py"]'


def test_the_sdk_is_pinned_where_the_image_installs_it():
    assert 'runpod = ["runpod==1.12.0"]' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize("given,missing", [
    ({}, "RUNPOD_ENDPOINT_ID and RUNPOD_API_KEY"),
    ({"runpod_endpoint_id": "abc"}, "RUNPOD_API_KEY"),
    ({"runpod_api_key": "rpa_x"}, "RUNPOD_ENDPOINT_ID"),
])
def test_backend_runpod_without_its_credentials_is_refused_and_names_them(given, missing):
    with pytest.raises(ValidationError, match=f"BACKEND=runpod needs {missing} "):
        Settings(_env_file=None, backend="runpod", **given)


def test_backend_runpod_with_its_credentials_loads():
    s = Settings(_env_file=None, backend="runpod", runpod_endpoint_id="abc", runpod_api_key="rpa_x")
    assert s.runpod_base_url == "https://api.runpod.ai/v2" and s.v2_endpoint_ids == ("avatar",)

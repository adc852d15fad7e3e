"""Shared fixtures: real photos shipped with Ultralytics, real weights, one Pipeline per session."""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import PostgresServer, S3Server, postgres_server, redis_server, s3_server

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
os.environ.setdefault("YOLO_OFFLINE", "1")


def _ultralytics_assets() -> Path:
    spec = importlib.util.find_spec("ultralytics")
    return Path(next(iter(spec.submodule_search_locations))) / "assets"


@pytest.fixture(scope="session")
def bus_jpg() -> Path:
    return _ultralytics_assets() / "bus.jpg"


@pytest.fixture(scope="session")
def zidane_jpg() -> Path:
    return _ultralytics_assets() / "zidane.jpg"


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    from inference.weights import OFFLINE_WEIGHTS, default_weights_dir

    wdir = default_weights_dir()
    if not all((wdir / wf.name).is_file() for wf in OFFLINE_WEIGHTS):
        pytest.fail(f"weights missing in {wdir}: run `avatar weights fetch` first")
    return wdir


@pytest.fixture(scope="session")
def pipeline(weights_dir):
    from inference.pipeline import Pipeline, PipelineConfig

    pipe = Pipeline(PipelineConfig(device="cpu", body_model="anny", weights_dir=weights_dir))
    yield pipe
    pipe.close()


@pytest.fixture(scope="session")
def anny_body(pipeline):
    return pipeline.body_for("other")


@pytest.fixture(scope="session")
def bus_result(pipeline, bus_jpg, tmp_path_factory):
    """One full run on bus.jpg shared by the tests that inspect its artefacts."""
    from inference.pipeline import Job
    from inference.types import Subject

    out = tmp_path_factory.mktemp("bus") / "avatar"
    events = []
    result = pipeline.run(Job(bus_jpg, Subject(180, "male", 75), out), on_stage=events.append)
    return result, events


# ---- real servers for the service's integration tests (started once, only when asked for) ----
S3_ACCESS_KEY = "test-access-key"
S3_SECRET_KEY = "test-secret-key-0123456789"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def s3(tmp_path_factory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3"), S3_ACCESS_KEY, S3_SECRET_KEY) as server:
        yield server


@pytest.fixture(scope="session")
def postgres(tmp_path_factory) -> Iterator[PostgresServer]:
    with postgres_server(tmp_path_factory.mktemp("postgres")) as server:
        yield server

"""docker-compose.gpu.yml and the Dockerfile: valid against the Compose spec, wired to what the
code needs (settings it reads, GPU index inside each container, EGL's 'graphics' capability),
health-checked, pinned, and free of secrets (no Docker engine here: the files are checked, not run)."""
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
DOCKERFILE = ROOT / "Dockerfile"
# variables our images read besides the settings: PyOpenGL's platform, the NVIDIA container toolkit's
GL_AND_DRIVER_ENV = {"PYOPENGL_PLATFORM", "NVIDIA_DRIVER_CAPABILITIES"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_is_valid_against_the_compose_spec():
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")
    assert exe, "check-jsonschema is missing: pip install -e '.[test]'"
    r = subprocess.run([exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def ours(compose: dict) -> dict[str, dict]:
    """The services that run this package (built from the Dockerfile)."""
    return {n: s for n, s in compose["services"].items() if "build" in s}


def workers(compose: dict) -> dict[str, dict]:
    return {n: s for n, s in ours(compose).items() if s["command"][:2] == ["avatar", "worker"]}


def test_api_and_workers_only_set_variables_the_settings_know(compose):
    known = {name.upper() for name in Settings.model_fields} | GL_AND_DRIVER_ENV
    assert set(ours(compose)) >= {"api", "worker-gpu0", "worker-gpu1"}
    for name, service in ours(compose).items():
        assert set(service["environment"]) <= known, name


def test_each_worker_reserves_one_gpu_and_uses_index_0_inside_its_container(compose):
    from inference.gpu import device_in_pinned_process

    host_gpus = []
    for name, w in workers(compose).items():
        (device,) = w["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
        assert len(device["device_ids"]) == 1, f"{name}: one worker per GPU"
        host_gpus.append(device["device_ids"][0])
        cmd = w["command"]
        gpu = cmd[cmd.index("--gpu") + 1]
        assert gpu == "0", f"{name}: its container sees only GPU {device['device_ids'][0]}, as index 0"
        device_env = w["environment"].get("WORKER_DEVICE", "auto")
        assert device_in_pinned_process(device_env, gpu) in ("auto", "cuda", "cuda:0"), name
    assert sorted(host_gpus) == sorted(set(host_gpus)) and {"0", "1"} <= set(host_gpus)


def test_workers_get_nvidia_egl(compose):
    """Without 'graphics' the toolkit mounts no EGL library: the render falls back to the CPU."""
    for name, w in workers(compose).items():
        (device,) = w["deploy"]["resources"]["reservations"]["devices"]
        caps = set(w["environment"]["NVIDIA_DRIVER_CAPABILITIES"].split(","))
        assert {"compute", "utility", "graphics"} <= caps, name
        assert {"compute", "utility", "graphics"} <= set(device["capabilities"]), name
        assert w["environment"]["PYOPENGL_PLATFORM"] == "egl", name


def test_every_service_is_health_checked_and_the_api_waits_for_its_dependencies(compose):
    for name, service in compose["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    deps = compose["services"]["api"]["depends_on"]
    assert set(deps) == {"redis", "postgres", "seaweedfs"}
    assert all(d["condition"] == "service_healthy" for d in deps.values())
    for name, w in workers(compose).items():
        assert w["depends_on"]["api"]["condition"] == "service_healthy", name


def test_image_tags_are_pinned(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: {image}"


def test_dockerfile_has_a_cpu_api_and_a_cuda_worker_with_egl_and_weights(compose):
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.M | re.I)
    assert {"api", "worker"} <= set(stages)
    api = text.split(" AS api")[1].split(" AS worker")[0]
    worker = text.split(" AS worker")[1]
    assert "download.pytorch.org/whl/cpu" in api
    assert "libegl1" in worker and "10_nvidia.json" in worker and "libEGL_nvidia.so.0" in worker
    assert "avatar weights fetch" in worker and "graphics" in worker
    targets = {s["build"]["target"] for s in ours(compose).values()}
    assert targets == {"api", "worker"}


def test_no_secret_is_written_in_the_file():
    text = COMPOSE.read_text()
    for name in ("POSTGRES_PASSWORD", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
        values = re.findall(rf"^\s*{name}:\s*(\S+)", text, flags=re.M)
        assert values, name
        for value in values:
            assert value.startswith("${"), f"{name} has a literal value"


def test_worker_health_follows_this_hosts_heartbeat(redis_url):
    import asyncio

    from service import queue
    from service.healthcheck import worker_alive

    async def go() -> tuple[bool, bool, bool]:
        pool = await queue.connect(redis_url)
        try:
            before = await worker_alive(redis_url, "box-a", "q")
            await queue.beat(pool, "box-a:1", {"name": "box-a:1", "queue": "q"}, ttl_seconds=30)
            mine = await worker_alive(redis_url, "box-a", "q")
            other = await worker_alive(redis_url, "box", "q")  # a prefix of another host's name is not it
            elsewhere = await worker_alive(redis_url, "box-a", "another-queue")
            await queue.stop_beating(pool, "box-a:1")
            return before, mine, other or elsewhere
        finally:
            await pool.aclose()

    assert asyncio.run(go()) == (False, True, False)

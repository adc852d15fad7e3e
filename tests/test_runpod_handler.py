"""runpod_handler.py through the RunPod SDK's own local test mode (``--test_input``): the real
pipeline on a real photo fetched from a URL, as a RunPod worker would run it."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from inference import artefacts
from inference.errors import InputError
from service_procs import photo_host
from test_service_api import load_artefact

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(bus_jpg):
    data = bus_jpg.read_bytes()
    with photo_host({"bus.jpg": data, "cut.jpg": data[:30000]}) as base:
        yield base


def run_handler(tmp_path: Path, weights_dir: Path, job_input: dict) -> tuple[subprocess.CompletedProcess, dict]:
    """One job through ``python runpod_handler.py --test_input``; returns the process and the output."""
    out = tmp_path / "output.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ALLOW_PRIVATE_PHOTO_URLS": "true", "WORKER_DEVICE": "cpu",
           "AVATAR_WEIGHTS_DIR": str(weights_dir), "RUNPOD_LOG_LEVEL": "INFO", "PYOPENGL_PLATFORM": "osmesa"}
    proc = subprocess.run([sys.executable, str(ROOT / "runpod_handler.py"), "--output_file", str(out),
                           "--test_input", json.dumps({"input": job_input})],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    return proc, json.loads(out.read_text()) if out.exists() else {}


def test_a_photo_becomes_every_artefact_in_base64(site, weights_dir, tmp_path):
    proc, out = run_handler(tmp_path, weights_dir, {"photo_url": f"{site}/bus.jpg", "height": 178, "weight": 80,
                                                    "gender": "male", "clothing": "fitted", "weight_source": "scale",
                                                    "user_id": "u-rp"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert set(out) == {"files_base64", "measurements", "timings", "body_model", "fit"}
    assert set(out["files_base64"]) == set(artefacts.expected("anny"))
    files = {name: base64.b64decode(data) for name, data in out["files_base64"].items()}
    assert len(load_artefact(artefacts.AVATAR_GLB, files[artefacts.AVATAR_GLB]).faces) == 27420
    assert load_artefact(artefacts.MEASUREMENTS, files[artefacts.MEASUREMENTS]) == out["measurements"]
    assert abs(out["measurements"]["height"] - 178) <= 0.5 and out["body_model"] == "anny"
    assert set(out["timings"]["stages_ms"]) == {"load", "detect", "segment", "fit", "export", "measure", "render"}
    assert out["fit"]["mass_kg"] == pytest.approx(80, rel=0.01)
    assert out["fit"]["clothing"] == "fitted" and out["fit"]["weight_source"] == "scale"  # the input reached the fit
    assert "progress 100% finished render (7/7)" in proc.stdout + proc.stderr  # each stage reported


def test_a_truncated_photo_comes_back_as_a_runpod_error(site, weights_dir, tmp_path):
    proc, out = run_handler(tmp_path, weights_dir, {"photo_url": f"{site}/cut.jpg", "height": 178, "gender": "male"})
    assert proc.returncode == 1  # the SDK's local mode: the job failed
    assert out == {"error": out["error"]} and out["error"].startswith("invalid_image: ")
    assert "truncated" in out["error"]


def test_a_scale_weight_without_a_weight_is_refused_before_the_photo_is_fetched(site, monkeypatch):
    from runpod_handler import handler
    from service.settings import get_settings

    monkeypatch.setenv("ALLOW_PRIVATE_PHOTO_URLS", "true")
    get_settings.cache_clear()
    try:
        job = {"id": "j-scale", "input": {"photo_url": f"{site}/missing.jpg", "height": 178, "gender": "male",
                                          "weight_source": "scale"}}
        out = asyncio.run(handler(job))
        # a photo fetched first would have failed on the missing file instead
        assert out == {"error": "invalid_weight_source: weight source 'scale' needs a weight"}
        out = asyncio.run(handler({**job, "input": {**job["input"], "weight_source": "kitchen"}}))
        assert out["error"].startswith("invalid_input: weight_source: ")
    finally:
        get_settings.cache_clear()


def _bucket(s3, name: str):
    client = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name=s3.region,
                          aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key)
    client.create_bucket(Bucket=name)
    return client


@pytest.fixture
def made_files(tmp_path) -> dict[str, Path]:
    files = {artefacts.AVATAR_GLB: b"glTF" + bytes(range(256)) * 40, artefacts.MEASUREMENTS: b'{"height": 170.0}'}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


def test_files_go_to_presigned_put_urls_and_the_output_lists_their_keys(s3, made_files):
    from runpod_handler import upload
    from service.runpod_protocol import UploadTarget

    client = _bucket(s3, "handler-urls")
    urls = {artefacts.AVATAR_GLB: client.generate_presigned_url(
        "put_object", Params={"Bucket": "handler-urls", "Key": f"a/{artefacts.AVATAR_GLB}"})}
    keys = asyncio.run(upload(made_files, UploadTarget(urls=urls), allow_private=True))
    assert keys == {artefacts.AVATAR_GLB: f"handler-urls/a/{artefacts.AVATAR_GLB}"}  # the rest: base64
    got = client.get_object(Bucket="handler-urls", Key=f"a/{artefacts.AVATAR_GLB}")["Body"].read()
    assert got == made_files[artefacts.AVATAR_GLB].read_bytes()
    with pytest.raises(InputError):  # the same address rules as photo URLs
        asyncio.run(upload(made_files, UploadTarget(urls=urls), allow_private=False))
    forged = {artefacts.AVATAR_GLB: urls[artefacts.AVATAR_GLB].replace("Signature=", "Signature=x")}
    with pytest.raises(InputError) as refused:
        asyncio.run(upload(made_files, UploadTarget(urls=forged), allow_private=True))
    assert refused.value.code == "upload_failed"


def test_files_go_to_a_bucket_under_its_prefix(s3, made_files):
    from runpod_handler import upload
    from service.runpod_protocol import UploadTarget

    client = _bucket(s3, "handler-bucket")
    target = UploadTarget(bucket={"bucket": "handler-bucket", "prefix": "jobs/j1", "endpoint_url": s3.endpoint_url,
                                  "access_key_id": s3.access_key, "secret_access_key": s3.secret_key})
    keys = asyncio.run(upload(made_files, target, allow_private=True))
    assert keys == {name: f"jobs/j1/{name}" for name in made_files}
    for name, key in keys.items():
        assert client.get_object(Bucket="handler-bucket", Key=key)["Body"].read() == made_files[name].read_bytes()

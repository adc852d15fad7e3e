"""``avatar bench --via-api``: a job's time split into the parts the service adds."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from service.bench_api import PARTS, split
from service_procs import api_server, run_avatar, worker
from stack import nobody_jpeg


def status_doc() -> dict:
    """A completed job's status document, as GET /api/avatar/status returns it."""
    return {
        "status": "completed", "created_at": "2026-12-02T13:00:00.000000",
        "started_at": "2026-12-02T13:00:00.400000", "completed_at": "2026-12-02T13:00:09.000000",
        "timings": {"stages_ms": {"fit": 6000.0}, "total_ms": 8000.0, "wall_ms": 8500.0},
    }


def test_a_jobs_time_splits_into_queue_pipeline_storage_bookkeeping_and_client():
    parts = split(status_doc(), end_to_end_ms=9200.0)
    assert set(parts) == set(PARTS)
    assert parts["queue_wait"] == 400.0  # created → a worker took it
    assert parts["pipeline"] == 8000.0 and parts["fetch_and_storage"] == 500.0
    assert parts["bookkeeping"] == 100.0  # 8.6 s taken, 8.5 s of it in the worker's own clock
    assert parts["client"] == 200.0  # 9.2 s seen by the client, 9.0 s by the server
    assert parts["overhead"] == 1200.0
    assert parts["queue_wait"] + parts["fetch_and_storage"] + parts["bookkeeping"] + parts["client"] \
        == parts["overhead"]


def test_timestamps_with_a_zone_split_the_same():
    doc = status_doc()
    for k in ("created_at", "started_at", "completed_at"):
        doc[k] += "+00:00"
    assert split(doc, 9200.0) == split(status_doc(), 9200.0)


def test_via_api_without_a_key_names_the_fix():
    r = subprocess.run([sys.executable, "-m", "service.cli", "bench", "--via-api", "http://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "avatar keys create" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("follow", ["events", "poll"])
def test_via_api_follows_every_job_to_its_end(redis_url, weights_dir, tmp_path, follow):
    """Against a real `avatar serve` + `avatar worker` (SQLite, local folder): each job is followed,
    by its server-sent events or by polling, until its final status (here a photo the pipeline
    refuses at once: what is tested is the following, not the pipeline)."""
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/avatar.db", "STORAGE_URL": f"file://{tmp_path}/storage",
           "REDIS_URL": redis_url, "QUEUE_NAME": f"avatar:test:{uuid.uuid4().hex[:8]}", "WORKER_WARMUP": "false",
           "WORKER_NICE": "0", "HEARTBEAT_SECONDS": "1", "RATE_LIMIT_PER_MINUTE": "0",
           "AVATAR_WEIGHTS_DIR": str(weights_dir), "PYOPENGL_PLATFORM": "osmesa", "YOLO_OFFLINE": "1"}
    photo = tmp_path / "nobody.jpg"
    photo.write_bytes(nobody_jpeg())
    with api_server(env, tmp_path) as base, worker(env, tmp_path, base):
        key = run_avatar(env, tmp_path, "keys", "create", "--tenant", "bench").stdout.split()[0]
        r = run_avatar(env, tmp_path, "bench", "--via-api", base, "--key", key, "--photos", str(photo), "--runs", "2",
                       "--follow", follow, "--json", str(tmp_path / "bench.json"))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["follow"] == follow
    row = report["concurrency"][0]
    assert (row["jobs"], row["completed"]) == (2, 0)
    assert [e["code"] for e in row["failed"]] == ["no_person", "no_person"]

"""Seeing it: /metrics, /admin/queue, `avatar queue`, `avatar jobs retry|fail`, `avatar doctor` and
JSON logs, against a real `avatar serve` (PostgreSQL, S3, Redis). A worker's heartbeat is written
to Redis the way a worker writes it, so the views have a worker to show without a pipeline."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager

import pytest
import redis as redis_client
from prometheus_client.parser import text_string_to_metric_families

from service_procs import run_avatar
from stack import api_stack, create, service_env, upload

WORKER = {"name": "gpu-box:42:beef", "device": "cuda:0", "current_job": None, "jobs_done": 7,
          "gpu_memory_bytes": 123456}


@pytest.fixture(scope="module")
def stack(postgres, s3, redis_url, weights_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ops")
    db = redis_url.rsplit("/", 1)[0] + "/7"  # a Redis database of its own: no other test's workers
    env = service_env(postgres, s3, db, weights_dir, LOG_FORMAT="json")
    with api_stack(env, cwd, admin=("ops", "--admin"), ops=("ops",)) as st:
        yield st


@contextmanager
def heartbeat(stack, worker: dict):
    """``worker``'s heartbeat in Redis, written as a worker writes it, while the block runs."""
    r = redis_client.Redis.from_url(stack.env["REDIS_URL"])
    beat = {**worker, "queue": stack.env["QUEUE_NAME"], "beat_at": time.time()}
    r.set(f"avatar:worker:{worker['name']}", json.dumps(beat), px=30_000)
    try:
        yield
    finally:
        r.delete(f"avatar:worker:{worker['name']}")


@pytest.fixture
def beating(stack):
    with heartbeat(stack, WORKER):
        yield


@pytest.fixture(scope="module")
def waiting_job(stack, bus_jpg) -> str:
    c = stack.client("ops")
    return create(c, "u-ops", upload(c, bus_jpg)["photo_url"]).json()["job_id"]


def metrics(stack) -> dict[tuple[str, tuple], float]:
    text = stack.client().get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_show_jobs_the_queue_and_the_workers(stack, waiting_job, beating):
    m = metrics(stack)
    assert m[("avatar_jobs", (("state", "queued"),))] >= 1
    assert m[("avatar_queue_depth", ())] >= 1 and m[("avatar_queue_oldest_waiting_seconds", ())] > 0
    assert m[("avatar_worker_heartbeat_age_seconds", (("device", "cuda:0"), ("worker", WORKER["name"])))] < 30
    assert m[("avatar_worker_gpu_memory_bytes", (("device", "cuda:0"), ("worker", WORKER["name"])))] == 123456


def test_admin_queue_shows_the_tenants_jobs_and_every_worker(stack, waiting_job, beating):
    assert stack.client("ops").get("/admin/queue").status_code == 403
    view = stack.client("admin").get("/admin/queue").json()
    assert view["counts"]["waiting"] >= 1 and view["oldest_waiting"]["tenant"] == "ops"
    assert [w["name"] for w in view["workers"]] == [WORKER["name"]]
    assert view["workers"][0]["jobs_done"] == 7 and view["workers"][0]["current_jobs"] == []


BATCHING = {"name": "gpu-box:43:cafe", "device": "cuda:1", "current_job": "job-a", "jobs_done": 2,
            "current_jobs": ["job-a", "job-b", "job-c"]}


@pytest.fixture
def batching(stack):
    """A worker fitting a batch of three jobs."""
    with heartbeat(stack, BATCHING):
        yield


def test_the_queue_views_show_every_job_of_a_workers_batch(stack, batching):
    view = stack.client("admin").get("/admin/queue").json()
    worker = next(w for w in view["workers"] if w["name"] == BATCHING["name"])
    assert worker["current_jobs"] == ["job-a", "job-b", "job-c"] and worker["current_job"] == "job-a"
    listed = run_avatar(stack.env, stack.cwd, "queue")
    assert listed.returncode == 0, listed.stderr
    line = next(ln for ln in listed.stdout.splitlines() if BATCHING["name"] in ln)
    assert "on job-a, job-b, job-c" in line


def test_an_operator_fails_and_retries_jobs_from_the_cli(stack, bus_jpg):
    c = stack.client("ops")
    photo = upload(c, bus_jpg)["photo_url"]
    stuck, doomed = (create(c, f"u-op{i}", photo).json()["job_id"] for i in range(2))
    retried = run_avatar(stack.env, stack.cwd, "jobs", "retry", stuck)
    assert retried.returncode == 0 and "queued again" in retried.stdout, retried.stderr
    failed = run_avatar(stack.env, stack.cwd, "jobs", "fail", doomed, "--reason", "bad photo, asked by the studio")
    assert failed.returncode == 0, failed.stderr
    doc = c.get(f"/api/avatar/status/{doomed}").json()
    assert doc["status"] == "failed" and doc["error"] == {"code": "failed_by_operator",
                                                          "message": "bad photo, asked by the studio"}
    final = run_avatar(stack.env, stack.cwd, "jobs", "retry", doomed)
    assert final.returncode == 2 and "final" in final.stderr
    listed = json.loads(run_avatar(stack.env, stack.cwd, "queue", "--json").stdout)
    assert doomed in {f["job_id"] for f in listed["recent_failures"]}


def test_doctor_names_what_is_wrong_and_the_fix(stack):
    r = run_avatar(stack.env, stack.cwd, "doctor")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "ok    database" in r.stdout and "ok    storage" in r.stdout and "ok    weights" in r.stdout
    assert "ok    rendering OSMesa (on the CPU)" in r.stdout  # a CPU worker here
    assert "FAIL  workers" in r.stdout and "avatar worker" in r.stdout
    down = run_avatar({**stack.env, "REDIS_URL": "redis://127.0.0.1:1/0"}, stack.cwd, "doctor")
    assert down.returncode == 1 and "FAIL  redis" in down.stdout and "REDIS_URL" in down.stdout


def test_json_logs_are_one_object_a_line_with_the_job_id(stack, waiting_job):
    stack.client("ops").get(f"/api/avatar/status/{waiting_job}")
    lines = [json.loads(line) for log in stack.cwd.glob("api-*.log")
             for line in log.read_text().splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line.get("logger") == "uvicorn.access" for line in lines)

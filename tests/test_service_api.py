"""The service end to end: `avatar serve` and `avatar worker` processes over a real Redis, a real
S3 server (SeaweedFS) and a real PostgreSQL, running the real pipeline on CPU."""
from __future__ import annotations

import asyncio
import io
import json
import math
import time
import uuid

import httpx
import numpy as np
import pytest

from inference import artefacts
from servers import free_port
from service_procs import api_server, run_avatar, worker
from stack import Stack, create, follow, objects, query, service_env, upload

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(postgres, s3, redis_url, weights_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("service")
    env = service_env(postgres, s3, redis_url, weights_dir)
    with api_server(env, cwd) as base:
        st = Stack(base, env, cwd)
        st.keys = {"acme": st.key("acme"), "other": st.key("other"), "admin": st.key("ops", "--admin")}
        with worker(env, cwd, base) as proc:
            st.worker = proc
            yield st


def load_artefact(name: str, data: bytes):
    """Open each artefact the way a client would; returns something to check."""
    import trimesh
    from PIL import Image

    if name.endswith(".glb"):
        return trimesh.load(io.BytesIO(data), file_type="glb", force="mesh")
    if name.endswith(".obj"):
        return trimesh.load(io.BytesIO(data), file_type="obj", process=False, force="mesh")
    if name.endswith(".png"):
        return Image.open(io.BytesIO(data)).convert("RGB")
    if name.endswith(".npz"):
        return dict(np.load(io.BytesIO(data)))
    return json.loads(data)


def test_the_seed_flow_end_to_end_and_no_other_tenant_sees_it(stack, bus_jpg):
    acme = stack.client("acme")
    photo = upload(acme, bus_jpg)
    r = create(acme, "u-flow", photo["photo_url"])
    assert r.status_code == 202, r.text
    queued = r.json()
    assert queued["status"] == "queued" and queued["user_id"] == "u-flow" and queued["estimated_time_seconds"] > 0
    job_id = queued["job_id"]

    seen = follow(acme, job_id)
    done = seen[-1]
    assert done["status"] == "completed", done
    progress = [d["progress"] for d in seen]
    assert progress == sorted(progress), "progress went backwards"
    assert len({p for p in progress if 0 < p < 100}) >= 3, f"progress not seen moving: {progress}"
    assert "fit" in {d["stage"] for d in seen}
    assert set(done["timings"]["stages_ms"]) == {"load", "detect", "segment", "fit", "export", "measure", "render"}

    # every artefact downloads through its link, without the API key, and loads
    assert set(done["files"]) == set(artefacts.expected("anny"))
    assert done["avatar_url"] == done["files"][artefacts.AVATAR_GLB]
    loaded = {}
    for name, url in done["files"].items():
        got = httpx.get(url, timeout=30)
        assert got.status_code == 200, (name, got.status_code)
        assert f"/avatars/u-flow/{job_id}/t1/{name}" in url
        loaded[name] = load_artefact(name, got.content)
    for mesh in (artefacts.BODY_APOSE, artefacts.BODY_TPOSE, artefacts.BODY_ORIGINAL, artefacts.AVATAR_GLB):
        assert len(loaded[mesh].faces) == 27420, mesh  # the Anny body, whole
    assert loaded[artefacts.PREVIEW].size[0] >= 256 and loaded[artefacts.OVERLAY].size[0] > 256
    assert "betas" in loaded[artefacts.ANNY_PARAMS] or len(loaded[artefacts.ANNY_PARAMS]) > 3
    assert loaded[artefacts.MEASUREMENTS] == done["measurements"]
    assert abs(done["measurements"]["height"] - 178) <= 0.5

    # the fit beside what was typed (80 kg as the person reported it, everyday clothes); none before
    # the job completed
    assert done["inputs"] == {"height": 178, "weight": 80, "gender": "male", "clothing": "regular",
                              "weight_source": "reported"}
    fit = done["fit"]
    assert fit["weight_kg_typed"] == 80 and fit["clothing_said"] == "regular" and fit["body_model"] == "anny"
    assert fit["weight_source"] == "reported"
    assert math.isfinite(fit["mass_kg"]) and fit["mass_kg"] == pytest.approx(80, rel=0.05)
    # null where the photo's widths give the learned prior nothing to read (bus.jpg today)
    assert fit["clothing_read"] in (None, "regular", "fitted")
    assert fit["cloth_offset_cm"] is None or fit["cloth_offset_cm"]["hips"] >= 0
    assert all(d["fit"] is None for d in seen[:-1])

    # the fit passport now shows this avatar
    passport = acme.get("/api/avatar/u-flow").json()
    assert passport["status"] == "completed" and passport["avatar_job_id"] == job_id
    assert passport["measurements"] == done["measurements"]
    assert set(passport["pipeline_files"]) == set(done["files"])
    assert passport["processing_started_at"] and passport["processing_completed_at"]

    # manual corrections are kept apart from the fitted values
    fixed = acme.patch("/api/measurements/u-flow", json={"measurements": {"waist": 88.5}})
    assert fixed.status_code == 200, fixed.text
    body = fixed.json()
    assert body["manual_measurements"] == {"waist": 88.5}
    assert body["measurements"]["waist"] == done["measurements"]["waist"]
    assert body["effective_measurements"]["waist"] == 88.5

    # a second tenant can see none of it
    other = stack.client("other")
    assert other.get(f"/api/avatar/status/{job_id}").status_code == 404
    assert other.post(f"/api/avatar/cancel/{job_id}").status_code == 404
    assert other.get("/api/avatar/u-flow").status_code == 404
    assert other.patch("/api/measurements/u-flow", json={"measurements": {"waist": 1.0 + 80}}).status_code == 404
    assert other.get(f"/api/photos/{photo['photo_id']}", follow_redirects=False).status_code == 404
    stolen = create(other, "u-thief", photo["photo_url"])
    assert stolen.status_code == 404 and stolen.json()["error"]["code"] == "photo_not_found"
    assert acme.get("/api/avatar/u-flow").json()["manual_measurements"] == {"waist": 88.5}


def test_a_photo_the_pipeline_refuses_fails_the_job_with_the_reason(stack, zidane_jpg):
    acme = stack.client("acme")
    photo = upload(acme, zidane_jpg)
    job_id = create(acme, "u-cut", photo["photo_url"]).json()["job_id"]
    done = follow(acme, job_id)[-1]
    assert done["status"] == "failed"
    assert done["error"]["code"] == "body_truncated" and "head to feet" in done["error"]["message"]
    assert done["files"] == {} and done["avatar_url"] is None
    assert objects(stack, f"avatars/u-cut/{job_id}/") == []
    assert acme.get("/api/avatar/u-cut").json()["status"] == "failed"


def test_a_cancelled_job_ends_cancelled_and_leaves_no_artefacts(stack, bus_jpg):
    acme = stack.client("acme")
    photo = upload(acme, bus_jpg)
    job_id = create(acme, "u-cancel", photo["photo_url"]).json()["job_id"]
    r = acme.post(f"/api/avatar/cancel/{job_id}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert _worker_result(stack, job_id) == "cancelled"  # the worker is done with it
    assert acme.get(f"/api/avatar/status/{job_id}").json()["status"] == "cancelled"
    assert objects(stack, f"avatars/u-cancel/{job_id}/") == []
    again = acme.post(f"/api/avatar/cancel/{job_id}")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"


def _worker_result(stack: Stack, job_id: str, timeout: float = 240):
    """Wait for the worker's own answer for a job (arq keeps each job's result in Redis)."""
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.jobs import Job

    async def go():
        pool = await create_pool(RedisSettings.from_dsn(stack.env["REDIS_URL"]))
        try:  # each delivery of a job has its own arq id, JOB_ID.TOKEN
            deadline = time.monotonic() + timeout
            while not (ids := [k.decode() async for k in pool.scan_iter(match=f"arq:job:{job_id}.*")]
                       + [k.decode() async for k in pool.scan_iter(match=f"arq:result:{job_id}.*")]):
                assert time.monotonic() < deadline, f"no arq delivery of {job_id}"
                await asyncio.sleep(0.2)
            arq_id = ids[0].split(":", 2)[2]
            return await Job(arq_id, pool, _queue_name=stack.env["QUEUE_NAME"]).result(timeout=timeout, poll_delay=0.2)
        finally:
            await pool.aclose()
    return asyncio.run(go())


@pytest.mark.parametrize("method,path", [
    ("post", "/api/photos"), ("post", "/api/avatar/create"), ("get", "/api/avatar/status/abc"),
    ("post", "/api/avatar/cancel/abc"), ("get", "/api/avatar/u1"), ("patch", "/api/measurements/u1"),
    ("post", "/api/events"), ("get", "/api/keys"),
])
def test_requests_without_a_valid_key_get_401(stack, method, path):
    for c in (stack.client(), stack.client(key="avk_not-a-real-key")):
        r = getattr(c, method)(path)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_health_and_readiness(stack):
    assert httpx.get(f"{stack.base}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.base}/ready")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert all(c["ok"] for c in checks.values()) and checks["workers"]["devices"] == ["cpu"]


def test_ready_is_503_without_a_worker(stack, redis_url):
    # the same database and storage, but a Redis database no worker beats in
    env = {**stack.env, "REDIS_URL": redis_url.rsplit("/", 1)[0] + "/5"}
    with api_server(env, stack.cwd) as base:
        r = httpx.get(f"{base}/ready")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["workers"]["ok"] is False and "avatar worker" in checks["workers"]["error"]
    assert checks["database"]["ok"] and checks["redis"]["ok"] and checks["storage"]["ok"]


@pytest.mark.parametrize("content,status,code", [
    (b"GIF89a" + b"\0" * 100, 415, "unsupported_image_type"),
    (b"hello, not a photo", 415, "unsupported_image_type"),
    (b"", 422, "invalid_image"),
    (b"\xff\xd8\xff" + b"\0" * 3_000_000, 413, "photo_too_large"),
    (b"\xff\xd8\xff\xe0" + b"\0" * 100, 422, "invalid_image"),
])
def test_bad_uploads_are_refused(stack, content, status, code):
    r = stack.client("acme").post("/api/photos", files={"file": ("x.jpg", content, "image/jpeg")})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


@pytest.mark.parametrize("change,code", [
    ({"height": 20}, "invalid_request"), ({"weight": 500}, "invalid_request"), ({"gender": "robot"}, "invalid_request"),
    ({"clothing": "baggy"}, "invalid_request"), ({"weight_source": "kitchen"}, "invalid_request"),
    ({"weight_source": "scale"}, "invalid_weight_source"),  # no weight given
    ({"weight_source": "scale", "weight": None}, "invalid_weight_source"),
    ({"user_id": "../etc"}, "invalid_request"), ({"extra": 1}, "invalid_request"),
    ({"photo_url": "ftp://example.com/a.jpg"}, "invalid_photo_url"),
    ({"photo_url": "http://127.0.0.1:9/a.jpg"}, "invalid_photo_url"),
    ({"photo_url": "http://169.254.169.254/latest/meta-data"}, "invalid_photo_url"),
])
def test_bad_create_requests_get_422_and_create_no_job(stack, change, code):
    acme = stack.client("acme")
    body = {"user_id": "u-bad", "photo_url": "https://example.com/p.jpg", "height": 170, "gender": "female", **change}
    r = acme.post("/api/avatar/create", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code
    assert acme.get("/api/avatar/u-bad").status_code == 404


def test_a_bad_weight_source_is_refused_with_what_to_do(stack):
    acme = stack.client("acme")
    body = {"user_id": "u-scale", "photo_url": "https://example.com/p.jpg", "height": 170, "gender": "female"}
    r = acme.post("/api/avatar/create", json={**body, "weight_source": "kitchen"})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("weight_source: "), r.text
    assert "'reported' or 'scale'" in r.json()["error"]["message"]
    r = acme.post("/api/avatar/create", json={**body, "weight_source": "scale"})
    assert r.status_code == 422 and r.json()["error"] == {
        "code": "invalid_weight_source", "message": "weight source 'scale' needs a weight"}
    # the page's limits say the same, so it can refuse before sending
    limits = httpx.get(f"{stack.base}/limits").json()
    assert limits["weight_sources"] == ["reported", "scale"]
    assert limits["weight_source_message"] == r.json()["error"]["message"]
    assert acme.get("/api/avatar/u-scale").status_code == 404


def test_unknown_jobs_and_users_are_404(stack):
    acme = stack.client("acme")
    assert acme.get(f"/api/avatar/status/{uuid.uuid4().hex}").status_code == 404
    assert acme.get("/api/avatar/status/not-an-id").status_code == 404
    assert acme.get("/api/avatar/nobody").status_code == 404
    assert acme.patch("/api/measurements/nobody", json={"measurements": {"chest": 90}}).status_code == 404


def test_measurement_corrections_are_checked(stack):
    acme = stack.client("acme")
    assert acme.patch("/api/measurements/u1", json={"measurements": {"elbow_girth": 30}}).status_code == 422
    assert acme.patch("/api/measurements/u1", json={"measurements": {}}).status_code == 422


def test_events_are_stored_for_the_callers_tenant(stack):
    r = stack.client("acme").post("/api/events", json={"name": "viewer.opened", "user_id": "u1",
                                                       "properties": {"screen": "fit", "ms": 120}})
    assert r.status_code == 202
    event_id = r.json()["event_id"]
    row = query(stack, f"SELECT tenant, user_id, name, properties FROM events WHERE id = {int(event_id)}")
    assert row[0] == "acme" and row[1] == "u1" and row[2] == "viewer.opened"
    assert json.loads(row[3]) == {"screen": "fit", "ms": 120}
    big = stack.client("acme").post("/api/events", json={"name": "x", "properties": {"blob": "a" * 20000}})
    assert big.status_code == 413


def test_admin_keys_manage_their_own_tenants_keys_and_client_keys_cannot(stack):
    admin, acme = stack.client("admin"), stack.client("acme")
    assert acme.post("/api/keys", json={"tenant": "ops"}).status_code == 403
    made = admin.post("/api/keys", json={"tenant": "ops", "name": "ops app"})
    assert made.status_code == 201
    ops_key = made.json()["key"]
    assert ops_key.startswith("avk_")
    listed = admin.get("/api/keys").json()
    assert all(k["key"] is None for k in listed) and made.json()["id"] in {k["id"] for k in listed}
    ops = stack.client(key=ops_key)
    assert ops.get("/api/avatar/u-flow").status_code == 404  # authenticated, but not its tenant's user
    assert admin.delete(f"/api/keys/{made.json()['id']}").status_code == 204
    assert ops.get("/api/avatar/u-flow").status_code == 401


def test_an_admin_key_cannot_reach_another_tenants_keys(stack):
    admin = stack.client("admin")
    r = admin.post("/api/keys", json={"tenant": "acme", "admin": True})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert {k["tenant"] for k in admin.get("/api/keys").json()} == {"ops"}
    acme_key_id = next(line.split()[0] for line in run_avatar(stack.env, stack.cwd, "keys", "list").stdout.splitlines()
                       if " acme " in line)
    assert admin.delete(f"/api/keys/{acme_key_id}").status_code == 404
    assert stack.client("acme").get("/api/avatar/nobody").status_code == 404  # still a working key


@pytest.mark.parametrize("change,fix", [
    ({"REDIS_URL": "redis://127.0.0.1:{port}/0"}, "REDIS_URL"),
    ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:{port}/x"}, "DATABASE_URL"),
    ({"S3_SECRET_ACCESS_KEY": "wrong"}, "S3_SECRET_ACCESS_KEY"),
])
def test_serve_refuses_to_start_without_its_dependencies(stack, change, fix):
    env = {**stack.env, **{k: v.format(port=free_port()) for k, v in change.items()}}
    r = run_avatar(env, stack.cwd, "serve", "--port", str(free_port()), timeout=60)
    assert r.returncode != 0
    assert fix in r.stderr, r.stderr[-2000:]


def test_worker_refuses_to_start_without_redis(stack):
    env = {**stack.env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    r = run_avatar(env, stack.cwd, "worker", "--device", "cpu", timeout=120)
    assert r.returncode != 0
    assert "REDIS_URL" in r.stderr, r.stderr[-2000:]


def test_when_redis_goes_down_create_answers_503_and_leaves_no_queued_job(stack, bus_jpg, tmp_path):
    from servers import redis_server

    with redis_server(tmp_path) as own_redis:
        env = {**stack.env, "REDIS_URL": own_redis}
        with api_server(env, stack.cwd) as base:
            c = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {stack.keys['acme']}"}, timeout=30)
            photo = upload(c, bus_jpg)
            import redis as redis_client

            redis_client.Redis.from_url(own_redis).shutdown(nosave=True)
            r = create(c, "u-noqueue", photo["photo_url"])
            assert r.status_code == 503 and r.json()["error"]["code"] == "queue_unavailable"
            ready = httpx.get(f"{base}/ready")
            assert ready.status_code == 503 and ready.json()["checks"]["redis"]["ok"] is False
    row = query(stack, "SELECT status, error_code FROM jobs WHERE user_id = 'u-noqueue'")
    assert tuple(row) == ("failed", "queue_unavailable")

"""RunPod both ways, with real processes. ``cloud`` is our service with a local worker: its /v2
routes play RunPod's cloud for the official ``runpod`` SDK and for ``front``, a second service
with ``BACKEND=runpod`` that forwards its jobs there (so each half checks the other).
``scripted`` forwards to a fake RunPod (``fake_runpod.py``) for the answers our /v2 never gives."""
from __future__ import annotations

import base64
import contextlib
import http.server
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import runpod

import fake_runpod
from inference import artefacts
from service_procs import api_server, run_avatar, worker
from stack import polled
from test_service_api import _worker_result, load_artefact, upload

pytestmark = pytest.mark.slow
FINAL = {"completed", "failed", "cancelled"}


@dataclass
class Service:
    """One of our services (API + worker) as a user starts it; the API can be restarted."""

    env: dict[str, str]
    cwd: Path
    base: str = ""
    keys: dict[str, str] = field(default_factory=dict)
    _api: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def client(self, tenant: str) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.keys[tenant]}"}, timeout=60)

    def start_api(self) -> None:
        self.base = self._api.enter_context(api_server(self.env, self.cwd))

    def restart_api(self) -> None:
        self._api.close()
        self.start_api()


@contextlib.contextmanager
def service(env: dict[str, str], cwd: Path, tenants: tuple[str, ...]) -> Iterator[Service]:
    svc = Service(env, cwd)
    with svc._api:
        svc.start_api()
        for tenant in tenants:
            r = run_avatar(env, cwd, "keys", "create", "--tenant", tenant)
            assert r.returncode == 0, r.stderr
            svc.keys[tenant] = r.stdout.split()[0]
        with worker(env, cwd, svc.base):
            yield svc


def _env(redis_url: str, db: int, weights_dir: Path, **extra: str) -> dict[str, str]:
    return {"REDIS_URL": f"{redis_url.rsplit('/', 1)[0]}/{db}", "QUEUE_NAME": f"avatar:rp:{uuid.uuid4().hex[:8]}",
            "HEARTBEAT_SECONDS": "1", "WORKER_WARMUP": "false", "WORKER_NICE": "0", "AVATAR_WEIGHTS_DIR": str(weights_dir),
            "PYOPENGL_PLATFORM": "osmesa", "YOLO_OFFLINE": "1", **extra}


def _s3_env(s3, bucket: str) -> dict[str, str]:
    return {"STORAGE_URL": f"s3://{bucket}", "S3_ENDPOINT_URL": s3.endpoint_url,
            "S3_ACCESS_KEY_ID": s3.access_key, "S3_SECRET_ACCESS_KEY": s3.secret_key}


@pytest.fixture(scope="module")
def cloud(redis_url, weights_dir, tmp_path_factory) -> Iterator[Service]:
    env = _env(redis_url, 11, weights_dir, ALLOW_PRIVATE_PHOTO_URLS="true", ALLOW_PRIVATE_WEBHOOK_URLS="true")
    with service(env, tmp_path_factory.mktemp("rp-cloud"), ("studio", "other")) as svc:
        yield svc


@pytest.fixture(scope="module")
def front(cloud, redis_url, s3, weights_dir, tmp_path_factory) -> Iterator[Service]:
    env = _env(redis_url, 12, weights_dir, BACKEND="runpod", RUNPOD_BASE_URL=f"{cloud.base}/v2",
               RUNPOD_ENDPOINT_ID="avatar", RUNPOD_API_KEY=cloud.keys["studio"], RUNPOD_POLL_SECONDS="0.3",
               **_s3_env(s3, f"front-{uuid.uuid4().hex[:8]}"))
    with service(env, tmp_path_factory.mktemp("rp-front"), ("acme",)) as svc:
        yield svc


@pytest.fixture(scope="module")
def fake() -> Iterator[fake_runpod.FakeRunpod]:
    with fake_runpod.fake_runpod() as f:
        yield f


@pytest.fixture(scope="module")
def scripted(fake, redis_url, s3, weights_dir, tmp_path_factory) -> Iterator[Service]:
    env = _env(redis_url, 13, weights_dir, BACKEND="runpod", RUNPOD_BASE_URL=fake.base,
               RUNPOD_ENDPOINT_ID=fake_runpod.ENDPOINT, RUNPOD_API_KEY="rp-secret", RUNPOD_POLL_SECONDS="0.2",
               JOB_TIMEOUT_SECONDS="10", **_s3_env(s3, f"scripted-{uuid.uuid4().hex[:8]}"))
    with service(env, tmp_path_factory.mktemp("rp-scripted"), ("acme",)) as svc:
        yield svc


@pytest.fixture
def endpoint(cloud, monkeypatch) -> runpod.Endpoint:
    """The official SDK pointed at our /v2 (what RUNPOD_ENDPOINT_BASE_URL does at its import)."""
    monkeypatch.setattr(runpod, "endpoint_url_base", f"{cloud.base}/v2")
    return runpod.Endpoint("avatar", api_key=cloud.keys["studio"])


@pytest.fixture(scope="module")
def photo_url(cloud, bus_jpg) -> str:
    return upload(cloud.client("studio"), bus_jpg)["photo_url"]


def person(photo: str, user: str | None = None, **kw) -> dict:
    return {"photo_url": photo, "height": 178, "weight": 80, "gender": "male",
            **({"user_id": user} if user else {}), **kw}


def follow(c: httpx.Client, job_id: str, timeout: float = 300) -> list[dict]:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(polled(c, f"/api/avatar/status/{job_id}"))
        if seen[-1]["status"] in FINAL:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not final after {timeout} s: {seen[-1]}")


@contextlib.contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict], threading.Event]]:
    bodies: list[dict] = []
    called = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            called.set()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies, called
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- inbound: RunPod clients on our /v2

def test_the_runpod_sdk_runs_a_job_that_is_an_ordinary_job_and_calls_its_webhook_once(cloud, endpoint, photo_url):
    with webhook_receiver() as (hook, bodies, called):
        job = endpoint.run({"input": person(photo_url, "rp-sdk", return_files="links"), "webhook": hook})
        assert job.status() in ("IN_QUEUE", "IN_PROGRESS")
        out = job.output(timeout=300)
        assert job.status() == "COMPLETED"
        assert called.wait(30)
        assert _worker_result(cloud, job.job_id) == "completed"  # the worker is done with it, webhook included
    assert set(out["files"]) == set(artefacts.expected("anny")) and "files_base64" not in out
    files = {name: httpx.get(url, timeout=30) for name, url in out["files"].items()}
    assert all(r.status_code == 200 for r in files.values())
    assert len(load_artefact(artefacts.AVATAR_GLB, files[artefacts.AVATAR_GLB].content).faces) == 27420
    assert load_artefact(artefacts.MEASUREMENTS, files[artefacts.MEASUREMENTS].content) == out["measurements"]
    assert out["body_model"] == "anny" and "fit" in out["timings"]["stages_ms"]
    assert len(bodies) == 1 and bodies[0]["id"] == job.job_id and bodies[0]["status"] == "COMPLETED"
    assert bodies[0]["output"]["measurements"] == out["measurements"]
    assert bodies[0]["executionTime"] > 0 and bodies[0]["delayTime"] >= 0

    studio = cloud.client("studio")
    ours = studio.get(f"/api/avatar/status/{job.job_id}").json()
    assert ours["status"] == "completed" and ours["measurements"] == out["measurements"]
    assert out["fit"] == ours["fit"] and ours["fit"]["mass_kg"] == pytest.approx(80, rel=0.05)
    assert studio.get("/api/avatar/rp-sdk").json()["avatar_job_id"] == job.job_id
    assert cloud.client("other").get(f"/api/avatar/status/{job.job_id}").status_code == 404

    health = endpoint.health()
    assert health["jobs"]["completed"] >= 1 and health["jobs"]["inQueue"] == 0
    assert health["workers"]["idle"] + health["workers"]["running"] == 1


def test_run_sync_answers_with_the_final_body(cloud, endpoint, zidane_jpg):
    cut = upload(cloud.client("studio"), zidane_jpg)["photo_url"]  # refused at detect: quick to end
    assert endpoint.run_sync(person(cut), timeout=120) is None  # the SDK gives a failed job's output: none
    r = httpx.post(f"{cloud.base}/v2/avatar/runsync", params={"wait": 120_000}, json={"input": person(cut)},
                   headers={"Authorization": cloud.keys["studio"]}, timeout=150)
    doc = r.json()
    assert doc["status"] == "FAILED" and doc["error"].startswith("body_truncated: "), doc
    assert doc["executionTime"] > 0 and doc["delayTime"] >= 0


def test_cancel_through_the_sdk(cloud, endpoint, photo_url):
    job = endpoint.run(person(photo_url, "rp-cancel"))
    assert job.cancel()["status"] == "CANCELLED"
    assert job.status() == "CANCELLED"
    assert cloud.client("studio").get(f"/api/avatar/status/{job.job_id}").json()["status"] == "cancelled"


def test_v2_takes_the_bare_key_and_keeps_tenants_apart(cloud):
    v2 = f"{cloud.base}/v2"
    assert httpx.get(f"{v2}/avatar/health", headers={"Authorization": cloud.keys["studio"]}).status_code == 200
    assert httpx.get(f"{v2}/avatar/health").status_code == 401
    assert httpx.get(f"{v2}/avatar/health", headers={"Authorization": "Bearer avk_nope"}).status_code == 401
    other = {"Authorization": f"Bearer {cloud.keys['other']}"}
    assert httpx.get(f"{v2}/nope/health", headers=other).status_code == 404
    r = httpx.post(f"{v2}/avatar/run", headers=other, json={"input": {"photo_url": "https://example.com/a.jpg",
                                                                      "height": 20, "gender": "male"}})
    assert r.status_code == 422 and "height" in r.json()["error"]["message"]
    r = httpx.post(f"{v2}/avatar/run", headers=other, json={"input": {
        "photo_url": "https://example.com/a.jpg", "height": 170, "gender": "male", "weight_source": "scale"}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_weight_source", r.text
    assert httpx.get(f"{v2}/avatar/status/{uuid.uuid4().hex}", headers=other).status_code == 404


# ---------------------------------------------------------------- outbound: our API on RunPod (our own /v2)

def test_the_seed_flow_through_the_runpod_backend_survives_an_api_restart(front, cloud, bus_jpg):
    acme = front.client("acme")
    photo = upload(acme, bus_jpg)
    r = acme.post("/api/avatar/create", json=person(photo["photo_url"], "u-remote", clothing="fitted",
                                                    weight_source="scale"))
    assert r.status_code == 202, r.text
    job_id, seen = r.json()["job_id"], []
    while not seen or seen[-1]["status"] != "processing":  # RunPod has started it: restart the API
        seen.append(polled(acme, f"/api/avatar/status/{job_id}"))
        assert len(seen) < 1000, seen[-1]
        time.sleep(0.1)
    front.restart_api()
    seen += follow(front.client("acme"), job_id)
    done = seen[-1]
    assert done["status"] == "completed", done
    assert [d["status"] for d in seen][0] == "queued"
    progress = [d["progress"] for d in seen]
    assert progress == sorted(progress) and len({p for p in progress if 0 < p < 100}) >= 2, progress
    assert set(done["files"]) == set(artefacts.expected("anny"))
    for name, url in done["files"].items():
        # our storage, where a local job puts it: its try's own prefix (service.objects)
        assert re.search(rf"/avatars/u-remote/{job_id}/t\d+/{re.escape(name)}\?", url), url
        got = httpx.get(url, timeout=30)
        assert got.status_code == 200, name
        load_artefact(name, got.content)
    assert front.client("acme").get("/api/avatar/u-remote").json()["avatar_job_id"] == job_id
    # the other half: the RunPod-side job is an ordinary completed job of the account the key belongs to
    remote = cloud.client("studio").get(f"/api/avatar/status/{done['timings']['runpod']['id']}").json()
    assert remote["status"] == "completed" and remote["measurements"] == done["measurements"]
    assert remote["inputs"] == done["inputs"] == {"height": 178, "weight": 80, "gender": "male", "clothing": "fitted",
                                                  "weight_source": "scale"}
    # the fit came through our /v2's output (its summary) and reads the same on both sides; the
    # remote fit ran with the weight source this request gave
    assert done["fit"] == remote["fit"] and done["fit"]["clothing_said"] == "fitted"
    assert done["fit"]["weight_source"] == "scale"
    assert done["fit"]["mass_kg"] == pytest.approx(80, rel=0.05) and done["fit"]["weight_kg_typed"] == 80


def test_ready_and_the_log_name_the_backend(front, cloud):
    ready = httpx.get(f"{front.base}/ready").json()
    assert ready["backend"] == "runpod" and ready["checks"]["workers"]["devices"] == ["runpod:avatar"]
    assert httpx.get(f"{cloud.base}/ready").json()["backend"] == "local"
    assert any("runpod backend" in p.read_text() for p in front.cwd.glob("api-*.log"))


def test_a_private_webhook_is_refused(front, bus_jpg):
    v2 = httpx.Client(base_url=f"{front.base}/v2/avatar", headers={"Authorization": front.keys["acme"]})
    for hook in ("http://127.0.0.1:9/hook", "http://169.254.169.254/latest", "ftp://example.com/x"):
        r = v2.post("/run", json={"input": person("https://example.com/p.jpg"), "webhook": hook})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_webhook", hook


@pytest.mark.parametrize("missing,command", [("RUNPOD_API_KEY", "serve"), ("RUNPOD_ENDPOINT_ID", "worker")])
def test_the_runpod_backend_refuses_to_start_without_its_settings(front, missing, command):
    r = run_avatar({**front.env, missing: ""}, front.cwd, command, timeout=60)
    assert r.returncode != 0 and missing in r.stderr, r.stderr[-2000:]


# ---------------------------------------------------------------- outbound: RunPod's other answers

SCRIPTS = ("u-401", "u-404", "u-429", "u-failed", "u-timedout", "u-forever", "u-fit", "u-badfit")


@pytest.fixture(scope="module")
def scripted_photo(scripted, bus_jpg) -> str:
    return upload(scripted.client("acme"), bus_jpg)["photo_url"]


@pytest.fixture(scope="module")
def scripted_jobs(scripted, scripted_photo) -> dict[str, dict]:
    """One job per script, all at once, each followed to its end: {user_id: final status}."""
    acme = scripted.client("acme")
    ids = {}
    for user in SCRIPTS:
        r = acme.post("/api/avatar/create", json=person(scripted_photo, user))
        assert r.status_code == 202, r.text
        ids[user] = r.json()["job_id"]
    return {user: follow(acme, job_id, timeout=60)[-1] for user, job_id in ids.items()}


@pytest.mark.parametrize("user,code,says", [
    ("u-401", "runpod_unauthorized", "RUNPOD_API_KEY"),
    ("u-404", "runpod_not_found", "RUNPOD_ENDPOINT_ID"),
    ("u-failed", "no_person", "no person found in the photo"),
    ("u-timedout", "timeout", "executionTimeout exceeded"),
    ("u-forever", "timeout", "JOB_TIMEOUT_SECONDS"),
])
def test_runpod_refusals_and_failures_fail_the_job_with_the_reason(scripted_jobs, user, code, says):
    doc = scripted_jobs[user]
    assert doc["status"] == "failed" and doc["error"]["code"] == code and says in doc["error"]["message"], doc


def test_rate_limits_and_busy_answers_are_retried_until_the_job_completes(scripted_jobs, fake):
    doc = scripted_jobs["u-429"]
    assert doc["status"] == "completed", doc
    assert httpx.get(doc["files"][artefacts.AVATAR_GLB]).content == fake_runpod.FILES[artefacts.AVATAR_GLB]
    assert fake.seen[("run", "u-429")] == 3
    assert doc["fit"] is None  # RunPod's output had none


def test_the_fit_in_runpods_output_is_stored_and_a_malformed_value_is_left_out(scripted_jobs):
    doc = scripted_jobs["u-fit"]
    assert doc["status"] == "completed", doc
    assert doc["fit"] == {"body_model": "anny", "mass_kg": 76.43, "weight_kg_typed": 80.0, "weight_source": "reported",
                          "clothing_said": "regular", "clothing_read": "fitted",
                          "cloth_offset_cm": {"hips": 0.71, "under_arms": 1.3}}
    bad = scripted_jobs["u-badfit"]  # NaN, an unknown clothing, an infinite offset: left out, the job completes
    assert bad["status"] == "completed", bad
    assert bad["fit"] == {"body_model": "anny", "mass_kg": None, "weight_kg_typed": 80.0, "weight_source": "reported",
                          "clothing_said": "regular", "clothing_read": None, "cloth_offset_cm": None}


def test_runpod_gets_the_inputs_and_a_default_weight_source_is_not_sent(scripted_jobs, fake):
    sent = fake.inputs["u-fit"]
    assert {k: sent[k] for k in ("height", "weight", "gender", "clothing", "user_id")} == {
        "height": 178, "weight": 80, "gender": "male", "clothing": "regular", "user_id": "u-fit"}
    # a handler image from before the field would refuse it: a job with the default runs there too
    assert "weight_source" not in sent


def test_a_job_that_never_ends_on_runpod_is_cancelled_there(scripted_jobs, fake):
    assert scripted_jobs["u-forever"]["status"] == "failed"
    forever = next(i for i, user in fake.jobs.items() if user == "u-forever")
    assert fake.calls("POST", f"/cancel/{forever}") >= 1
    assert {auth for _, _, auth in fake.requests} == {"Bearer rp-secret"}


def test_our_cancel_cancels_the_runpod_job(scripted, scripted_photo, fake):
    acme = scripted.client("acme")
    job_id = acme.post("/api/avatar/create", json=person(scripted_photo, "u-waits")).json()["job_id"]
    deadline = time.monotonic() + 30
    while "u-waits" not in fake.jobs.values():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert acme.post(f"/api/avatar/cancel/{job_id}").json()["status"] == "cancelled"
    rp_id = next(i for i, user in fake.jobs.items() if user == "u-waits")
    assert _worker_result(scripted, job_id) == "cancelled"
    assert fake.calls("POST", f"/cancel/{rp_id}") == 1


def test_a_job_past_its_policy_execution_timeout_ends_timed_out(scripted, scripted_photo, fake):
    v2 = httpx.Client(base_url=f"{scripted.base}/v2/avatar", headers={"Authorization": scripted.keys["acme"]})
    before = set(fake.jobs)
    r = v2.post("/run", json={"input": person(scripted_photo, "u-forever"), "policy": {"executionTimeout": 1000}})
    assert r.status_code == 200 and r.json()["status"] == "IN_QUEUE"
    job_id, deadline = r.json()["id"], time.monotonic() + 30
    while (doc := polled(v2, f"/status/{job_id}"))["status"] in ("IN_QUEUE", "IN_PROGRESS"):
        assert time.monotonic() < deadline, doc
        time.sleep(0.1)
    assert doc["status"] == "TIMED_OUT" and doc["error"].startswith("timeout: "), doc
    assert 0 < doc["executionTime"] < 5000
    assert _worker_result(scripted, job_id) == "failed"
    (runpod_id,) = set(fake.jobs) - before
    assert fake.calls("POST", f"/cancel/{runpod_id}") == 1  # RunPod's job ended with ours


def test_v2_stream_purge_queue_and_retry_on_a_service_that_forwards_to_runpod(scripted, scripted_photo):
    v2 = httpx.Client(base_url=f"{scripted.base}/v2/avatar", headers={"Authorization": f"Bearer {scripted.keys['acme']}"},
                      timeout=30)
    ids = {user: v2.post("/run", json={"input": person(scripted_photo, user)}).json()["id"]
           for user in ("u-waits-v2", "u-failed", "u-forever")}

    def wait_for(user: str, status: str) -> dict:
        deadline = time.monotonic() + 30
        while (doc := polled(v2, f"/status/{ids[user]}"))["status"] != status:
            assert time.monotonic() < deadline, doc
            time.sleep(0.1)
        return doc

    running = wait_for("u-forever", "IN_PROGRESS")
    assert running["output"] == {"progress": 45, "stage": "fit", "message": "fitting"}  # RunPod's 50 % of our 0-90
    assert v2.get(f"/stream/{ids['u-forever']}").json()["stream"] == [{"output": running["output"]}]
    deadline = time.monotonic() + 10
    while (health := v2.get("/health").json())["workers"] != {"idle": 0, "running": 1}:  # its next heartbeat
        assert time.monotonic() < deadline, health
        time.sleep(0.2)
    assert health["jobs"]["inProgress"] == 1
    assert wait_for("u-failed", "FAILED")["error"] == "no_person: no person found in the photo"
    assert v2.post("/purge-queue").json() == {"removed": 1, "status": "completed"}
    assert wait_for("u-waits-v2", "CANCELLED")["id"] == ids["u-waits-v2"]
    assert v2.post(f"/retry/{ids['u-failed']}").json() == {"id": ids["u-failed"], "status": "IN_QUEUE"}
    wait_for("u-failed", "FAILED")
    assert v2.post(f"/retry/{ids['u-waits-v2']}").status_code == 409  # only FAILED or TIMED_OUT
    assert v2.get("/health").json()["jobs"]["retried"] == 1

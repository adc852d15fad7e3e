"""The embedded defaults: SQLite and a local storage folder (links served and signed by the
API), with the photo fetched by the worker from an http URL."""
from __future__ import annotations

import uuid

import httpx
import pytest

from inference import artefacts
from service_procs import api_server, photo_host, run_avatar, worker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local(redis_url, weights_dir, bus_jpg, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("local-service")
    env = {  # no DATABASE_URL or STORAGE_URL: the defaults (./data under cwd)
        "REDIS_URL": redis_url, "QUEUE_NAME": f"avatar:local:{uuid.uuid4().hex[:8]}",
        "ALLOW_PRIVATE_PHOTO_URLS": "true", "WORKER_WARMUP": "false", "HEARTBEAT_SECONDS": "1", "WORKER_NICE": "0",
        "AVATAR_WEIGHTS_DIR": str(weights_dir), "PYOPENGL_PLATFORM": "osmesa", "YOLO_OFFLINE": "1",
    }
    with photo_host({"bus.jpg": bus_jpg.read_bytes(), "notes.txt": b"not a photo"}) as site, \
            api_server(env, cwd) as base:
        key = run_avatar(env, cwd, "keys", "create", "--tenant", "studio").stdout.split()[0]
        with worker(env, cwd, base):
            yield base, site, httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30), cwd


def _wait_final(c: httpx.Client, job_id: str) -> dict:
    import time

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        doc = c.get(f"/api/avatar/status/{job_id}").json()
        if doc["status"] in ("completed", "failed", "cancelled"):
            return doc
        time.sleep(0.2)
    raise AssertionError(doc)


def test_a_photo_url_job_completes_with_signed_local_links(local):
    base, site, c, cwd = local
    r = c.post("/api/avatar/create", json={"user_id": "walk-in", "photo_url": f"{site}/bus.jpg",
                                           "height": 181, "weight": 84, "gender": "male", "clothing": "fitted",
                                           "weight_source": "scale"})
    assert r.status_code == 202, r.text
    done = _wait_final(c, r.json()["job_id"])
    assert done["status"] == "completed", done
    assert done["inputs"] == {"height": 181, "weight": 84, "gender": "male", "clothing": "fitted",
                              "weight_source": "scale"}
    # the fit says what it ran with: the worker handed the weight source on
    assert done["fit"]["weight_source"] == "scale" and done["fit"]["weight_kg_typed"] == 84
    assert set(done["files"]) == set(artefacts.expected("anny"))
    assert (cwd / "data" / "avatar.db").is_file()
    url = done["files"][artefacts.PREVIEW]
    assert url.startswith(f"{base}/files/avatars/walk-in/{done['job_id']}/t1/preview.png?")
    got = httpx.get(url)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert got.content[:8] == b"\x89PNG\r\n\x1a\n"
    tampered = url.replace("preview.png", "overlay.png")
    assert httpx.get(tampered).status_code == 403
    stale = url.split("?")[0] + "?expires=1&signature=" + "0" * 64
    assert httpx.get(stale).status_code == 403


def test_a_photo_url_that_is_not_a_photo_fails_the_job(local):
    _, site, c, _ = local
    r = c.post("/api/avatar/create", json={"user_id": "walk-in-2", "photo_url": f"{site}/notes.txt",
                                           "height": 170, "gender": "female"})
    done = _wait_final(c, r.json()["job_id"])
    assert done["status"] == "failed" and done["error"]["code"] == "unsupported_image_type"

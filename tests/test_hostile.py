"""Hostile and odd requests against a real `avatar serve` (PostgreSQL, S3, Redis; no worker needed):
bodies checked before they are read, rate limits, inputs that used to answer 500."""
from __future__ import annotations

import io
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from servers import redis_server
from service_procs import api_server, run_avatar
from stack import Stack, api_stack, create, service_env, upload

RATE_LIMIT = 40


@pytest.fixture(scope="module")
def stack(postgres, s3, redis_url, weights_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("hostile")
    env = service_env(postgres, s3, redis_url, weights_dir, RATE_LIMIT_PER_MINUTE=str(RATE_LIMIT),
                      MAX_UPLOAD_BYTES="3000000")
    with api_stack(env, cwd, admin=("acme", "--admin")) as st:
        yield st


def fresh_client(stack: Stack) -> httpx.Client:
    """A client with its own new key (its own rate-limit count)."""
    r = stack.client("admin").post("/api/keys", json={"tenant": "acme", "name": uuid.uuid4().hex[:8]})
    assert r.status_code == 201, r.text
    return stack.client(key=r.json()["key"])


def raw_request(base: str, head: str, body: bytes = b"", timeout: float = 5) -> str:
    """Send a request whose body may never come (what httpx will not do); the status line back."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        return sock.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


def api_pid(base: str) -> int:
    port = int(base.rsplit(":", 1)[1])
    return next(c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port
                and c.status == psutil.CONN_LISTEN)


def test_a_body_without_a_key_is_refused_before_it_is_read(stack):
    head = ("POST /api/avatar/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 400000000\r\n")
    assert " 401 " in raw_request(stack.base, head, b"{")


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(stack):
    key = fresh_client(stack).headers["authorization"]
    head = (f"POST /api/avatar/create HTTP/1.1\r\nHost: x\r\nAuthorization: {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 400000000\r\n")
    assert " 413 " in raw_request(stack.base, head, b"{")


@pytest.mark.parametrize("path,field", [("/api/avatar/create", None), ("/api/photos", "file")])
def test_a_streamed_body_is_cut_off_at_the_limit(stack, path, field):
    c = fresh_client(stack)

    def chunks():
        if field:
            yield (f'--b\r\nContent-Disposition: form-data; name="{field}"; filename="x.jpg"\r\n'
                   "Content-Type: image/jpeg\r\n\r\n").encode()
        for _ in range(400):  # 4 MB, no Content-Length
            yield b"x" * 10_000
    if field:
        r = c.post(path, content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    else:
        r = c.post(path, content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_each_key_is_rate_limited_with_retry_after(stack):
    c, other = fresh_client(stack), fresh_client(stack)
    codes = [c.get("/api/avatar/nobody").status_code for _ in range(RATE_LIMIT + 1)]
    assert codes[:RATE_LIMIT] == [404] * RATE_LIMIT and codes[-1] == 429
    r = c.get("/api/avatar/nobody")
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
    assert other.get("/api/avatar/nobody").status_code == 404  # another key is not slowed


def test_a_large_photo_is_checked_without_being_decoded(stack):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (7000, 7000)).save(buf, "PNG")  # 49 MP, ~50 KB; ~150 MB decoded
    c = fresh_client(stack)
    proc = psutil.Process(api_pid(stack.base))
    before = proc.memory_info().rss
    for _ in range(4):
        r = c.post("/api/photos", files={"file": ("big.png", buf.getvalue(), "image/png")})
        assert r.status_code == 201, r.text
    assert proc.memory_info().rss - before < 60e6


@pytest.mark.parametrize("url", ["http://[::1/x", "http://a..b/x.jpg", f"http://{'a' * 64}.com/x.jpg"])
def test_odd_photo_urls_are_422(stack, url):
    r = create(fresh_client(stack), "u-odd", url)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_photo_url", r.text


def test_nan_in_event_properties_is_422(stack):
    r = fresh_client(stack).post("/api/events", content=b'{"name": "x", "properties": {"v": NaN}}',
                                 headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("path", ["/api/avatar/u%00x", "/api/measurements/u%00x"])
def test_a_nul_byte_in_a_user_id_is_422(stack, path):
    c = fresh_client(stack)
    r = c.get(path) if "avatar" in path else c.patch(path, json={"measurements": {"chest": 90}})
    assert r.status_code == 422, r.text


def test_concurrent_first_creates_for_one_new_user_all_succeed(stack, bus_jpg):
    c = fresh_client(stack)
    photo = upload(c, bus_jpg)["photo_url"]
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: create(c, "u-race", photo).status_code, range(8)))
    assert codes == [202] * 8


def test_cancel_while_redis_is_down_is_503_and_cancels_nothing(stack, bus_jpg, tmp_path):
    import redis as redis_client

    with redis_server(tmp_path) as own_redis, api_server({**stack.env, "REDIS_URL": own_redis}, stack.cwd) as base:
        c = fresh_client(stack)
        c.base_url = base
        job_id = create(c, "u-cancel-down", upload(c, bus_jpg)["photo_url"]).json()["job_id"]
        redis_client.Redis.from_url(own_redis).shutdown(nosave=True)
        time.sleep(0.2)
        r = c.post(f"/api/avatar/cancel/{job_id}")
        assert r.status_code == 503 and r.json()["error"]["code"] == "queue_unavailable", r.text
        assert c.get(f"/api/avatar/status/{job_id}").json()["status"] == "queued"


def test_a_tenant_out_of_credit_gets_402_and_sees_its_ledger(stack, bus_jpg):
    grant = run_avatar(stack.env, stack.cwd, "credits", "grant", "--tenant", "metered", "2")
    assert grant.returncode == 0 and "balance 2" in grant.stdout, grant.stderr
    c = stack.client(key=stack.key("metered"))
    photo = upload(c, bus_jpg)["photo_url"]
    codes = [create(c, f"u-credit-{i}", photo).status_code for i in range(3)]
    assert codes == [202, 202, 402]
    assert c.get("/api/avatar/u-credit-2").status_code == 404  # the refused create left nothing
    doc = c.get("/api/credits").json()
    assert (doc["metered"], doc["balance"], doc["reserved"]) == (True, 0, 2)
    assert sorted(m["kind"] for m in doc["movements"]) == ["grant", "reserve", "reserve"]
    assert fresh_client(stack).get("/api/credits").json()["metered"] is False

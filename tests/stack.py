"""The service stack for integration tests: settings for `avatar serve` and `avatar worker` over
the session's real PostgreSQL, S3 server and Redis, and the calls a client makes."""
from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service_procs import api_server, run_avatar

FINAL = {"completed", "failed", "cancelled"}


def polled(c: httpx.Client, url: str) -> dict:
    """GET ``url`` as a polling client does: a 429 (polled faster than the API's rate limit, as a
    loaded machine makes the tests do) is waited out for its Retry-After, not read as a status."""
    while (r := c.get(url)).status_code == 429:
        time.sleep(float(r.headers.get("Retry-After", "1")))
    assert r.status_code == 200, r.text
    return r.json()


@dataclass
class Stack:
    base: str
    env: dict[str, str]
    cwd: Path
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, tenant: str | None = None, key: str | None = None) -> httpx.Client:
        token = key or (self.keys[tenant] if tenant else None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)

    def key(self, tenant: str, *extra: str) -> str:
        r = run_avatar(self.env, self.cwd, "keys", "create", "--tenant", tenant, *extra)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().splitlines()[0]


@contextlib.contextmanager
def api_stack(env: dict[str, str], cwd: Path, **keys: tuple[str, ...]):
    """`avatar serve` with these settings, and API keys made by the CLI: name=(tenant, *flags)."""
    with api_server(env, cwd) as base:
        st = Stack(base, env, cwd)
        st.keys = {name: st.key(*spec) for name, spec in keys.items()}
        yield st


def create_database(pg) -> str:
    import asyncpg

    name = f"avatar_{uuid.uuid4().hex[:10]}"

    async def go():
        conn = await asyncpg.connect(pg.dsn)
        await conn.execute(f"CREATE DATABASE {name}")
        await conn.close()
    asyncio.run(go())
    return pg.sqlalchemy_url.rsplit("/", 1)[0] + f"/{name}"


def service_env(postgres, s3, redis_url: str, weights_dir: Path, **extra: str) -> dict[str, str]:
    """A fresh database, bucket and queue name on the shared servers; ``extra`` overrides. Workers
    keep normal CPU priority here: on a machine busy with other work a niced worker (the default)
    runs its pipeline several times slower, and no test is about priority."""
    return {"WORKER_NICE": "0",
        "DATABASE_URL": create_database(postgres), "REDIS_URL": redis_url,
        "QUEUE_NAME": f"avatar:test:{uuid.uuid4().hex[:8]}",
        "STORAGE_URL": f"s3://avatars-{uuid.uuid4().hex[:8]}", "S3_ENDPOINT_URL": s3.endpoint_url,
        "S3_ACCESS_KEY_ID": s3.access_key, "S3_SECRET_ACCESS_KEY": s3.secret_key,
        "MAX_UPLOAD_BYTES": "3000000", "HEARTBEAT_SECONDS": "1", "AVATAR_WEIGHTS_DIR": str(weights_dir),
        "PYOPENGL_PLATFORM": "osmesa", "YOLO_OFFLINE": "1", "LOG_LEVEL": "info", **extra,
    }


def upload(c: httpx.Client, path: Path) -> dict:
    r = c.post("/api/photos", files={"file": (path.name, path.read_bytes(), "image/jpeg")})
    assert r.status_code == 201, r.text
    return r.json()


def create(c: httpx.Client, user: str, photo_url: str, **kw) -> httpx.Response:
    body = {"user_id": user, "photo_url": photo_url, "height": 178, "weight": 80, "gender": "male", **kw}
    return c.post("/api/avatar/create", json=body)


def follow(c: httpx.Client, job_id: str, timeout: float = 240) -> list[dict]:
    """Every status document until the job is final (polled the way a client polls)."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = polled(c, f"/api/avatar/status/{job_id}")
        seen.append(doc)
        if doc["status"] in FINAL:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not final after {timeout} s: {seen[-1]}")


def objects(stack: Stack, prefix: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack.env["S3_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id=stack.env["S3_ACCESS_KEY_ID"],
                      aws_secret_access_key=stack.env["S3_SECRET_ACCESS_KEY"])
    bucket = stack.env["STORAGE_URL"].removeprefix("s3://")
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def query(stack: Stack, sql: str):
    import asyncpg

    async def go():
        conn = await asyncpg.connect(stack.env["DATABASE_URL"].replace("postgresql+asyncpg", "postgresql"))
        try:
            return await conn.fetchrow(sql)
        finally:
            await conn.close()
    return asyncio.run(go())


def wait_status(c, job_id: str, want: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = polled(c, f"/api/avatar/status/{job_id}")
        if doc["status"] in want:
            return doc
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {want}: {doc}")


def assert_charged_once(c, job_id: str) -> None:
    """The ledger holds the job's reservation and exactly one commit, whatever happened between."""
    kinds = sorted(m["kind"] for m in c.get("/api/credits").json()["movements"] if m["job_id"] == job_id)
    assert kinds == ["commit", "reserve"], kinds


def assert_released(c, job_id: str) -> None:
    """The ledger holds the job's reservation and exactly one release (it did not complete)."""
    kinds = sorted(m["kind"] for m in c.get("/api/credits").json()["movements"] if m["job_id"] == job_id)
    assert kinds == ["release", "reserve"], kinds


def nobody_jpeg() -> bytes:
    """A photo with no person in it: the pipeline refuses it at detection (``no_person``), fast."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(90, 110, (480, 640, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()

"""The integration-test servers are real: real clients talk to them; they leave nothing behind."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from servers import (
    PostgresServer,
    S3Server,
    free_port,
    pid_running,
    postgres_server,
    redis_server,
    s3_server,
)

S3_ACCESS_KEY = "test-access-key"
S3_SECRET_KEY = "test-secret-key-0123456789"


def s3_client(server: S3Server, *, secret_key: str | None = None):
    import boto3

    return boto3.client(
        "s3", endpoint_url=server.endpoint_url, region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=secret_key if secret_key is not None else server.secret_key,
    )


def test_free_port_never_repeats_within_a_process() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)


def test_redis_answers_ping(redis_url: str) -> None:
    import redis

    with redis.Redis.from_url(redis_url) as client:
        assert client.ping() is True


def test_redis_stores_and_returns_a_value(redis_url: str) -> None:
    import redis

    with redis.Redis.from_url(redis_url) as client:
        client.set("greeting", b"hello")
        assert client.get("greeting") == b"hello"


def test_redis_url_points_at_a_private_server(redis_url: str) -> None:
    assert redis_url.startswith("redis://127.0.0.1:") and redis_url.endswith("/0")
    assert not redis_url.startswith("redis://127.0.0.1:6379/")


def test_s3_round_trips_an_object_byte_identical(s3: S3Server) -> None:
    client = s3_client(s3)
    payload = os.urandom(256 * 1024) + b"\x00end"
    client.create_bucket(Bucket="roundtrip")
    client.put_object(Bucket="roundtrip", Key="avatars/u1/j1/avatar.glb", Body=payload)

    got = client.get_object(Bucket="roundtrip", Key="avatars/u1/j1/avatar.glb")["Body"].read()

    assert got == payload


def test_s3_lists_a_created_bucket(s3: S3Server) -> None:
    client = s3_client(s3)
    client.create_bucket(Bucket="listed")

    names = {b["Name"] for b in client.list_buckets()["Buckets"]}

    assert "listed" in names


def test_s3_refuses_a_wrong_secret_key(s3: S3Server) -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refused:
        s3_client(s3, secret_key="not-the-secret").list_buckets()

    assert refused.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied"}
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_s3_server_stops_and_leaves_nothing_behind(tmp_path: Path) -> None:
    from botocore.exceptions import EndpointConnectionError

    with s3_server(tmp_path, S3_ACCESS_KEY, S3_SECRET_KEY) as server:
        s3_client(server).create_bucket(Bucket="ephemeral")

    with pytest.raises(EndpointConnectionError):
        s3_client(server).list_buckets()
    assert list(tmp_path.iterdir()) == []
    # other test servers may run meanwhile: only this server's own sockets must be gone
    assert server.ports
    leftovers = [p for p in Path("/tmp").glob("seaweedfs-*")
                 if any(p.name.endswith(f"-{port}.sock") for port in server.ports)]
    assert leftovers == []


def test_postgres_answers_select_1(postgres: PostgresServer) -> None:
    import asyncpg

    async def select_1() -> int:
        conn = await asyncpg.connect(postgres.dsn)
        try:
            return await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    assert asyncio.run(select_1()) == 1


def test_postgres_serves_sqlalchemys_async_engine(postgres: PostgresServer) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def server_port() -> int:
        engine = create_async_engine(postgres.sqlalchemy_url)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(text("SELECT inet_server_port()"))).scalar_one()
        finally:
            await engine.dispose()

    assert asyncio.run(server_port()) == postgres.port


def test_postgres_stops_and_removes_its_data_dir(tmp_path: Path) -> None:
    with postgres_server(tmp_path) as server:
        pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        assert pid_running(pid)

    assert not server.data_dir.exists()
    assert not pid_running(pid)


def test_redis_stops_when_the_context_exits(tmp_path: Path) -> None:
    import redis

    with redis_server(tmp_path) as url:
        redis.Redis.from_url(url).ping()

    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    assert list(tmp_path.iterdir()) == []

"""Artefact storage: the same behaviour from a local folder and from a real S3 server."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from servers import free_port
from service.errors import DependencyError
from service.storage import FileStorage, ObjectNotFound, S3Storage


@pytest.fixture(params=["file", "s3"])
def storage(request, tmp_path):
    if request.param == "file":
        return FileStorage(tmp_path / "store", b"k" * 32, expires_seconds=600)
    s3 = request.getfixturevalue("s3")
    st = S3Storage(f"b-{time.time_ns()}", s3.endpoint_url, None, s3.access_key, s3.secret_key, s3.region,
                   expires_seconds=600, create_bucket=True)
    asyncio.run(st.check())  # creates the bucket
    return st


def test_put_get_exists_and_delete_a_prefix(storage, tmp_path):
    async def go():
        src = tmp_path / "a.png"
        src.write_bytes(b"\x89PNG-file")
        await storage.put_bytes("avatars/u1/j1/a.json", b'{"x": 1}')
        await storage.put_file("avatars/u1/j1/a.png", src)
        await storage.put_bytes("avatars/u1/j2/keep.json", b"{}")
        got = await storage.get_bytes("avatars/u1/j1/a.json"), await storage.get_bytes("avatars/u1/j1/a.png")
        deleted = await storage.delete_prefix("avatars/u1/j1/")
        return got, deleted, await storage.exists("avatars/u1/j1/a.png"), await storage.exists("avatars/u1/j2/keep.json")
    got, deleted, gone_exists, kept_exists = asyncio.run(go())
    assert got == (b'{"x": 1}', b"\x89PNG-file")
    assert deleted == 2 and not gone_exists and kept_exists


def test_missing_object_raises_not_found(storage):
    with pytest.raises(ObjectNotFound):
        asyncio.run(storage.get_bytes("avatars/nobody/none.json"))


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a//b", "a/../b", ""])
def test_keys_that_escape_are_refused(storage, key):
    with pytest.raises(ValueError):
        asyncio.run(storage.put_bytes(key, b"x"))


def test_s3_link_downloads_without_credentials_and_tampering_is_refused(s3):
    st = S3Storage(f"links-{time.time_ns()}", s3.endpoint_url, None, s3.access_key, s3.secret_key, s3.region,
                   expires_seconds=600, create_bucket=True)
    asyncio.run(st.check())
    asyncio.run(st.put_bytes("avatars/u/j/preview.png", b"\x89PNG\r\n\x1a\nrest"))
    url = st.url("avatars/u/j/preview.png", "unused")
    ok = httpx.get(url)
    assert ok.status_code == 200 and ok.content == b"\x89PNG\r\n\x1a\nrest"
    assert ok.headers["content-type"] == "image/png"
    assert httpx.get(url.replace("preview.png", "overlay.png")).status_code == 403


def test_file_links_are_signed_and_expire(tmp_path):
    st = FileStorage(tmp_path, b"secret" * 6, expires_seconds=600)
    now = int(time.time())
    sig = st.signature("avatars/u/j/a.glb", now + 60)
    assert st.verify("avatars/u/j/a.glb", now + 60, sig)
    assert not st.verify("avatars/u/j/b.glb", now + 60, sig)  # another file
    assert not st.verify("avatars/u/j/a.glb", now + 61, sig)  # a longer life
    assert not st.verify("avatars/u/j/a.glb", now - 1, st.signature("avatars/u/j/a.glb", now - 1))  # expired
    other = FileStorage(tmp_path, b"other" * 7, expires_seconds=600)
    assert not other.verify("avatars/u/j/a.glb", now + 60, sig)


def test_wrong_s3_credentials_fail_the_check_with_the_fix(s3):
    st = S3Storage("whatever", s3.endpoint_url, None, s3.access_key, "wrong-secret", s3.region,
                   expires_seconds=600, create_bucket=True)
    with pytest.raises(DependencyError, match="S3_SECRET_ACCESS_KEY"):
        asyncio.run(st.check())


def test_unreachable_s3_fails_the_check_with_the_fix():
    st = S3Storage("b", f"http://127.0.0.1:{free_port()}", None, "a", "b", "us-east-1",
                   expires_seconds=600, create_bucket=True)
    with pytest.raises(DependencyError, match="S3_ENDPOINT_URL"):
        asyncio.run(st.check())

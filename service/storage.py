"""Object storage behind one small interface: S3 (SeaweedFS, MinIO, AWS) through boto3, or a
local folder as the embedded default. Clients only ever get expiring links.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import mimetypes
import os
import re
import shutil
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlencode, urlparse

from service.errors import DependencyError
from service.settings import Settings

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@/-]{0,1023}$")
CONTENT_TYPES = {
    ".glb": "model/gltf-binary", ".obj": "model/obj", ".png": "image/png", ".json": "application/json",
    ".npz": "application/octet-stream", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
}


class StorageUnavailable(DependencyError):
    """Storage cannot be reached or used; the message says how to fix it."""


class ObjectNotFound(KeyError):
    pass


def check_key(key: str) -> str:
    if not _KEY_RE.match(key) or ".." in key.split("/") or "//" in key:
        raise ValueError(f"invalid object key {key!r}")
    return key


def content_type_for(key: str) -> str:
    ext = os.path.splitext(key)[1].lower()
    return CONTENT_TYPES.get(ext) or mimetypes.guess_type(key)[0] or "application/octet-stream"


class Storage(Protocol):
    async def check(self) -> None: ...
    async def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...
    async def put_file(self, key: str, path: Path, content_type: str | None = None) -> None: ...
    async def get_bytes(self, key: str) -> bytes: ...
    async def exists(self, key: str) -> bool: ...
    async def delete_prefix(self, prefix: str) -> int: ...
    def url(self, key: str, base_url: str) -> str: ...


class FileStorage:
    """A local folder. Links point at the API's ``/files/{key}`` route, signed with HMAC and
    expiring like S3's presigned links."""

    def __init__(self, root: Path, signing_key: bytes, expires_seconds: int):
        self.root = root.resolve()
        self._key = signing_key
        self.expires_seconds = expires_seconds

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StorageUnavailable(f"local storage folder {self.root} is not writable ({exc}); "
                                     "fix its permissions or set STORAGE_URL=file:///a/writable/folder") from exc

    async def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        await asyncio.to_thread(self._write, key, lambda tmp: tmp.write_bytes(data))

    async def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        await asyncio.to_thread(self._write, key, lambda tmp: shutil.copyfile(path, tmp))

    def _write(self, key: str, fill) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
        fill(tmp)
        os.replace(tmp, dest)  # readers never see half a file

    async def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    async def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    async def delete_prefix(self, prefix: str) -> int:
        base = self._path(prefix.rstrip("/"))
        if base.is_file():
            base.unlink()
            return 1
        if not base.is_dir():
            return 0
        n = sum(1 for p in base.rglob("*") if p.is_file())
        await asyncio.to_thread(shutil.rmtree, base, True)
        return n

    def local_path(self, key: str) -> Path:
        return self._path(key)

    # ---- signed links ----
    def signature(self, key: str, expires: int) -> str:
        return hmac.new(self._key, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, key: str, base_url: str) -> str:
        expires = int(time.time()) + self.expires_seconds
        query = urlencode({"expires": expires, "signature": self.signature(key, expires)})
        return f"{base_url.rstrip('/')}/files/{quote(check_key(key))}?{query}"

    def verify(self, key: str, expires: int, signature: str) -> bool:
        return expires >= time.time() and hmac.compare_digest(self.signature(key, expires), signature)


class S3Storage:
    """Any S3 API: SeaweedFS, MinIO or AWS, through boto3 (its calls run in threads)."""

    def __init__(self, bucket: str, endpoint_url: str | None, public_endpoint_url: str | None,
                 access_key: str | None, secret_key: str | None, region: str,
                 expires_seconds: int, create_bucket: bool):
        import boto3
        from botocore.config import Config

        cfg = Config(signature_version="s3v4", s3={"addressing_style": "path"},
                     retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60)
        common = dict(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                      region_name=region, config=cfg)
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.expires_seconds = expires_seconds
        self.create_bucket = create_bucket
        self.client = boto3.client("s3", endpoint_url=endpoint_url, **common)
        # links must be signed for the address clients use, which may differ from ours
        self.public_client = (boto3.client("s3", endpoint_url=public_endpoint_url, **common)
                              if public_endpoint_url else self.client)
        self._links: dict[str, tuple[float, str]] = {}  # key -> (reuse until, link)

    async def check(self) -> None:
        await asyncio.to_thread(self._check)

    def _check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        where = self.endpoint_url or "AWS S3"
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket", "NotFound") and self.create_bucket:
                try:
                    self.client.create_bucket(Bucket=self.bucket)
                    return
                except (ClientError, BotoCoreError) as exc2:
                    raise StorageUnavailable(f"bucket {self.bucket!r} is missing at {where} and could not "
                                             f"be created ({exc2}); create it or fix the credentials") from exc2
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise StorageUnavailable(f"bucket {self.bucket!r} does not exist at {where}; create it "
                                         "or set S3_CREATE_BUCKET=true") from exc
            raise StorageUnavailable(f"S3 at {where} refused access to bucket {self.bucket!r} ({code}); "
                                     "check S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"cannot reach S3 at {where} ({exc}); start the object store or fix "
                                     "S3_ENDPOINT_URL") from exc

    async def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        await asyncio.to_thread(self.client.put_object, Bucket=self.bucket, Key=check_key(key), Body=data,
                                ContentType=content_type or content_type_for(key))

    async def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        await asyncio.to_thread(self.client.upload_file, str(path), self.bucket, check_key(key),
                                ExtraArgs={"ContentType": content_type or content_type_for(key)})

    async def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        def _get() -> bytes:
            try:
                return self.client.get_object(Bucket=self.bucket, Key=check_key(key))["Body"].read()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise ObjectNotFound(key) from exc
                raise
        return await asyncio.to_thread(_get)

    async def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        def _head() -> bool:
            try:
                self.client.head_object(Bucket=self.bucket, Key=check_key(key))
                return True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return await asyncio.to_thread(_head)

    async def delete_prefix(self, prefix: str) -> int:
        def _delete() -> int:
            n = 0
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                    n += len(keys)
            return n
        return await asyncio.to_thread(_delete)

    def url(self, key: str, base_url: str) -> str:
        """A presigned link, made again once half its life is gone: signing costs ~0.7 ms of CPU
        (boto's event machinery), and a status poll of a finished job hands out a dozen links."""
        now = time.monotonic()
        hit = self._links.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        link = self.public_client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": check_key(key)}, ExpiresIn=self.expires_seconds)
        if len(self._links) > 10_000:
            self._links.clear()
        self._links[key] = (now + self.expires_seconds / 2, link)
        return link


def make_storage(settings: Settings) -> FileStorage | S3Storage:
    parsed = urlparse(settings.storage_url)
    if parsed.scheme == "file":
        root = Path((parsed.netloc or "") + parsed.path) if parsed.netloc in ("", ".", "..") else None
        if root is None:
            raise StorageUnavailable(f"STORAGE_URL {settings.storage_url!r}: use file:///absolute/path "
                                     "or file://./relative/path")
        return FileStorage(root, settings.signing_key(), settings.url_expires_seconds)
    if not (settings.s3_access_key_id and settings.s3_secret_access_key) and settings.s3_endpoint_url:
        raise StorageUnavailable("STORAGE_URL is s3:// with S3_ENDPOINT_URL set but no credentials: "
                                 "set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY")
    return S3Storage(parsed.netloc, settings.s3_endpoint_url, settings.s3_public_endpoint_url,
                     settings.s3_access_key_id, settings.s3_secret_access_key, settings.s3_region,
                     settings.url_expires_seconds, settings.s3_create_bucket)

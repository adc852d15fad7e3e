"""Photos from untrusted places: uploads checked at the edge, and http(s) URLs the worker
fetches with size, type and address limits (no requests into the private network unless
``ALLOW_PRIVATE_PHOTO_URLS`` says so)."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlparse

import httpx

from inference.errors import InputError

_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
ACCEPTED_TYPES = tuple(_MIME.values())


def sniff_image(data: bytes) -> str | None:
    """The photo's MIME type from its first bytes if it is one we accept (JPEG, PNG, WebP)."""
    from inference.stages.load import sniff_format

    return _MIME.get(sniff_format(data) or "")


def check_url_shape(url: str) -> str:
    """Scheme and host present; raises InputError otherwise (the API turns it into a 422)."""
    p = urlparse(url)
    if p.scheme not in ("http", "https") or not p.hostname:
        raise InputError("photo_url must be an http(s) URL or a photo_url returned by POST /api/photos",
                         "invalid_photo_url")
    if p.username or p.password:
        raise InputError("photo_url must not carry credentials", "invalid_photo_url")
    return url


async def check_host_public(url: str, allow_private: bool) -> None:
    """Refuse hosts that resolve to loopback, private, link-local or reserved addresses."""
    if allow_private:
        return
    host = urlparse(url).hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"photo_url host {host!r} does not resolve", "photo_url_unreachable") from exc
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if not addr.is_global:
            raise InputError(f"photo_url host {host!r} is a private or local address; send a public URL "
                             "or upload the photo with POST /api/photos", "invalid_photo_url")


async def fetch_photo(url: str, *, max_bytes: int, timeout: float, allow_private: bool) -> bytes:
    """Download a photo: no redirects (each hop would need the address check again), at most
    ``max_bytes``, and it must be a JPEG, PNG or WebP by its bytes."""
    check_url_shape(url)
    await check_host_public(url, allow_private)
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            async with client.stream("GET", url, headers={"Accept": ", ".join(ACCEPTED_TYPES)}) as resp:
                if resp.is_redirect:
                    raise InputError(f"photo_url redirects (HTTP {resp.status_code}); give the final URL",
                                     "photo_url_redirect")
                if resp.status_code != 200:
                    raise InputError(f"photo_url answered HTTP {resp.status_code}", "photo_url_unreachable")
                declared = int(resp.headers.get("content-length") or 0)
                if declared > max_bytes:
                    raise InputError(f"photo at photo_url is {declared} bytes, over the {max_bytes} byte limit",
                                     "photo_too_large")
                chunks, size = [], 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise InputError(f"photo at photo_url is over the {max_bytes} byte limit",
                                         "photo_too_large")
                    chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise InputError(f"photo_url could not be fetched ({exc.__class__.__name__})",
                         "photo_url_unreachable") from exc
    data = b"".join(chunks)
    if sniff_image(data) is None:
        raise InputError("photo_url did not return a JPEG, PNG or WebP image", "unsupported_image_type")
    return data

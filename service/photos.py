"""Photos from untrusted places: uploads checked at the edge, and http(s) URLs the worker
fetches with size, type and address limits (no requests into the private network unless
``ALLOW_PRIVATE_PHOTO_URLS`` says so)."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urljoin, urlparse

import httpx

from inference.errors import InputError

_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
ACCEPTED_TYPES = tuple(_MIME.values())


def sniff_image(data: bytes) -> str | None:
    """The photo's MIME type from its first bytes if it is one we accept (JPEG, PNG, WebP)."""
    from inference.stages.load import sniff_format

    return _MIME.get(sniff_format(data) or "")


UNREACHABLE = "photo_url could not be fetched"  # one answer for every network failure: no port scans
MAX_REDIRECTS = 3


def check_url_shape(url: str) -> str:
    """Scheme and a well-formed host present; raises InputError otherwise (the API turns it into a 422)."""
    try:
        p = urlparse(url)
        host = p.hostname
        p.port  # noqa: B018 (raises on a bad port)
        if host and not _is_ip(host):
            host.encode("idna")  # empty or over-long labels ("a..b", 64 characters) fail here
    except (ValueError, UnicodeError) as exc:
        raise InputError("photo_url is not a well-formed URL", "invalid_photo_url") from exc
    if p.scheme not in ("http", "https") or not host:
        raise InputError("photo_url must be an http(s) URL or a photo_url returned by POST /api/photos",
                         "invalid_photo_url")
    if p.username or p.password:
        raise InputError("photo_url must not carry credentials", "invalid_photo_url")
    return url


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


async def resolve_checked(url: str, allow_private: bool) -> str:
    """The address to connect to: the host's first address, after every address it resolves to
    was checked (public only, unless ``allow_private``). Connecting to exactly this address, not
    resolving again, is what defeats DNS rebinding."""
    host = urlparse(url).hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"photo_url host {host!r} does not resolve", "photo_url_unreachable") from exc
    addrs = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    if not allow_private and not all(a.is_global for a in addrs):
        raise InputError(f"photo_url host {host!r} is a private or local address; send a public URL "
                         "or upload the photo with POST /api/photos", "invalid_photo_url")
    if not addrs:
        raise InputError(f"photo_url host {host!r} does not resolve", "photo_url_unreachable")
    return str(addrs[0])


async def check_host_public(url: str, allow_private: bool) -> None:
    """Refuse hosts that resolve to loopback, private, link-local or reserved addresses."""
    if not allow_private:
        await resolve_checked(url, allow_private)


async def fetch_photo(url: str, *, max_bytes: int, timeout: float, allow_private: bool) -> bytes:
    """Download a photo: ``timeout`` bounds the whole fetch (a server dripping bytes cannot hold
    it), each redirect hop is checked like the first URL, at most ``max_bytes``, and it must be a
    JPEG, PNG or WebP by its bytes."""
    try:
        async with asyncio.timeout(timeout):
            data = await _follow(url, max_bytes, timeout, allow_private)
    except TimeoutError as exc:
        raise InputError(UNREACHABLE, "photo_url_unreachable") from exc
    if sniff_image(data) is None:
        raise InputError("photo_url did not return a JPEG, PNG or WebP image", "unsupported_image_type")
    return data


async def _follow(url: str, max_bytes: int, timeout: float, allow_private: bool) -> bytes:
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            check_url_shape(url)
            address = await resolve_checked(url, allow_private)
            body, location = await _get(client, url, address, max_bytes)
            if location is None:
                return body
            url = urljoin(url, location)
    raise InputError(f"{UNREACHABLE} (more than {MAX_REDIRECTS} redirects)", "photo_url_unreachable")


async def _get(client: httpx.AsyncClient, url: str, address: str, max_bytes: int) -> tuple[bytes, str | None]:
    """One request to the checked address (Host header and TLS name stay the URL's); (body, None)
    or (b"", the redirect's Location)."""
    target = httpx.URL(url)
    pinned = target.copy_with(host=address)
    headers = {"Host": target.netloc.decode("ascii"), "Accept": ", ".join(ACCEPTED_TYPES)}
    try:
        async with client.stream("GET", pinned, headers=headers,
                                 extensions={"sni_hostname": target.host}) as resp:
            if resp.is_redirect and resp.headers.get("location"):
                return b"", resp.headers["location"]
            if resp.status_code != 200:
                raise InputError(UNREACHABLE, "photo_url_unreachable")
            if int(resp.headers.get("content-length") or 0) > max_bytes:
                raise InputError(f"photo at photo_url is over the {max_bytes} byte limit", "photo_too_large")
            chunks, size = [], 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise InputError(f"photo at photo_url is over the {max_bytes} byte limit", "photo_too_large")
                chunks.append(chunk)
            return b"".join(chunks), None
    except (httpx.HTTPError, ValueError) as exc:
        raise InputError(UNREACHABLE, "photo_url_unreachable") from exc

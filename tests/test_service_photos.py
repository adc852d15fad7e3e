"""Fetching a photo_url: only public hosts (unless allowed), checked again on every redirect and
connected to as checked, a total time limit, size and type limits, one answer for network failures."""
from __future__ import annotations

import asyncio
import socket
import time

import pytest

from inference.errors import InputError
from service.photos import fetch_photo
from service_procs import photo_host


@pytest.fixture(scope="module")
def host(bus_jpg):
    with photo_host({"bus.jpg": bus_jpg.read_bytes(), "page.html": b"<html>hi</html>"}) as base:
        yield base


def fetch(url, **kw):
    args = {"max_bytes": 5_000_000, "timeout": 10, "allow_private": True, **kw}
    return asyncio.run(fetch_photo(url, **args))


def test_a_photo_is_fetched_byte_for_byte(host, bus_jpg):
    assert fetch(f"{host}/bus.jpg") == bus_jpg.read_bytes()


@pytest.mark.parametrize("path,kw,code", [
    ("/bus.jpg", {"allow_private": False}, "invalid_photo_url"),
    ("/loop", {}, "photo_url_unreachable"),
    ("/bus.jpg", {"max_bytes": 10_000}, "photo_too_large"),
    ("/page.html", {}, "unsupported_image_type"),
    ("/missing.jpg", {}, "photo_url_unreachable"),
])
def test_bad_photo_urls_fail_with_a_reason(host, path, kw, code):
    with pytest.raises(InputError) as err:
        fetch(f"{host}{path}", **kw)
    assert err.value.code == code


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.jpg", "http://user:pw@example.com/a.jpg",
                                 "http:///nohost", "http://[::1/x", "http://a..b/x.jpg", f"http://{'a' * 64}.com/x.jpg",
                                 "http://example.com:99999/x.jpg"])
def test_urls_of_other_kinds_are_refused_before_any_request(url):
    with pytest.raises(InputError) as err:
        fetch(url, allow_private=False)
    assert err.value.code == "invalid_photo_url"


def test_a_redirect_is_followed_to_the_photo(host, bus_jpg):
    assert fetch(f"{host}/redirect") == bus_jpg.read_bytes()


def test_the_time_limit_covers_the_whole_fetch_not_each_read(host):
    t0 = time.monotonic()
    with pytest.raises(InputError) as err:
        fetch(f"{host}/slow", timeout=1)
    assert err.value.code == "photo_url_unreachable" and time.monotonic() - t0 < 2.5


def test_network_failures_all_read_the_same(host):
    from servers import free_port

    closed = f"http://127.0.0.1:{free_port()}/x.jpg"
    messages = set()
    for url in (closed, f"{host}/missing.jpg"):
        with pytest.raises(InputError) as err:
            fetch(url)
        messages.add((err.value.code, str(err.value)))
    assert len(messages) == 1


def test_a_host_that_resolves_public_then_loopback_is_never_fetched_from_loopback(host, monkeypatch):
    """DNS rebinding: the check sees a public address, a second lookup would give 127.0.0.1."""
    real = socket.getaddrinfo
    answers = iter(["203.0.113.7"] + ["127.0.0.1"] * 10)  # any public-looking first answer

    def rebinding(name, *args, **kwargs):
        if name in ("rebind.example", b"rebind.example"):  # anyio asks with bytes
            addr = next(answers)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, 0))]
        return real(name, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr("ipaddress.IPv4Address.is_global", property(lambda a: str(a) != "127.0.0.1"))
    port = host.rsplit(":", 1)[1]
    with pytest.raises(InputError) as err:
        fetch(f"http://rebind.example:{port}/bus.jpg", allow_private=False, timeout=1)
    assert err.value.code == "photo_url_unreachable", repr(err.value.__cause__)

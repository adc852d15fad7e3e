"""Fetching a photo_url: only public hosts (unless allowed), no redirects, size and type limits."""
from __future__ import annotations

import asyncio

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
    ("/redirect", {}, "photo_url_redirect"),
    ("/bus.jpg", {"max_bytes": 10_000}, "photo_too_large"),
    ("/page.html", {}, "unsupported_image_type"),
    ("/missing.jpg", {}, "photo_url_unreachable"),
])
def test_bad_photo_urls_fail_with_a_reason(host, path, kw, code):
    with pytest.raises(InputError) as err:
        fetch(f"{host}{path}", **kw)
    assert err.value.code == code


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.jpg", "http://user:pw@example.com/a.jpg",
                                 "http:///nohost"])
def test_urls_of_other_kinds_are_refused_before_any_request(url):
    with pytest.raises(InputError) as err:
        fetch(url, allow_private=False)
    assert err.value.code == "invalid_photo_url"

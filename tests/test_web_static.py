"""The page's files, the limits it checks its form against, and CORS: the app alone (no database,
Redis or worker is reached by these requests, so no server is started)."""
from __future__ import annotations

import re
from typing import get_args

import pytest
from fastapi.testclient import TestClient

from inference.errors import InputError
from inference.types import CLOTHING, WEIGHT_SOURCES, Subject
from service.app import create_app
from service.schemas import Clothing, CreateAvatarIn, WeightSource
from service.settings import Settings
from service.web import STATIC_DIR, limits


def _client(**settings) -> TestClient:
    """The app without its lifespan: these routes reach no database, Redis or storage."""
    return TestClient(create_app(Settings(_env_file=None, **settings)))


def test_the_page_and_every_file_it_loads_are_served_from_the_package():
    c = _client()
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    refs = re.findall(r'(?:src|href)="(web/[^"]+)"', page.text)
    refs += re.findall(r'"(\./web/[^"]+\.js)"', page.text)  # the import map
    assert "web/app.js" in refs and "./web/vendor/three/three.module.min.js" in refs
    for ref in refs:
        assert c.get("/" + ref.removeprefix("./")).status_code == 200, ref
    for addon in ("loaders/GLTFLoader.js", "controls/OrbitControls.js", "utils/BufferGeometryUtils.js"):
        assert c.get(f"/web/vendor/three/addons/{addon}").status_code == 200
    assert c.get("/web/viewer.js").status_code == 200


def test_no_file_of_the_page_comes_from_another_host():
    for path in STATIC_DIR.glob("*.*"):
        text = path.read_text()
        assert not re.search(r'(?:src|href|from|import)\s*=?\s*["\']https?://', text), path.name


def test_the_vendored_three_js_is_the_pinned_version_with_its_licence():
    vendor = STATIC_DIR / "vendor" / "three"
    assert (vendor / "three.module.min.js").read_text()[:400].split("const t=")[1].startswith('"170"')  # REVISION
    assert "MIT License" in (vendor / "LICENSE").read_text()
    assert "0.170.0" in (vendor / "README.md").read_text()


@pytest.mark.parametrize("height", [300.0, 49.5])
def test_the_pages_height_message_is_the_pipelines(height):
    page_says = limits(Settings(_env_file=None)).height_cm.message.replace("{value}", str(height))
    with pytest.raises(InputError) as err:
        Subject(height_cm=height, gender="male").validate()
    assert page_says == str(err.value)


def test_the_pages_scale_without_a_weight_message_is_the_pipelines():
    page_says = limits(Settings(_env_file=None)).weight_source_message
    with pytest.raises(InputError) as err:
        Subject(height_cm=170, gender="male", weight_source="scale").validate()
    assert page_says == str(err.value) and err.value.code == "invalid_weight_source"


def test_limits_follow_the_settings():
    doc = limits(Settings(_env_file=None, max_upload_bytes=5_000_000))
    assert doc.photo_max_bytes == 5_000_000 and "5000000" in doc.photo_size_message
    assert (doc.height_cm.min, doc.height_cm.max, doc.weight_kg.min, doc.weight_kg.max) == (50, 250, 20, 300)
    assert doc.genders == ["male", "female", "other"] and "waist" in doc.measurements
    # the page offers what the API accepts, the default first
    assert doc.clothing == list(CLOTHING) == list(get_args(Clothing)) == ["regular", "fitted"]
    assert CreateAvatarIn.model_fields["clothing"].default == doc.clothing[0]
    assert doc.weight_sources == list(WEIGHT_SOURCES) == list(get_args(WeightSource)) == ["reported", "scale"]
    assert CreateAvatarIn.model_fields["weight_source"].default == doc.weight_sources[0]
    assert re.fullmatch(doc.user_id_pattern.strip("^$"), "walk-in_1") and not re.fullmatch(
        doc.user_id_pattern.strip("^$"), "-bad")


def test_no_cross_origin_access_by_default():
    r = _client().get("/health", headers={"Origin": "https://shop.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_origins_may_call_the_api_and_their_preflight_needs_no_key():
    c = _client(cors_origins="https://shop.example, https://studio.example/")
    r = c.get("/health", headers={"Origin": "https://studio.example"})
    assert r.headers["access-control-allow-origin"] == "https://studio.example"
    pre = c.options("/api/avatar/create", headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://shop.example"
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    other = c.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers

"""Settings: one class, every variable documented in .env.example, bad values refused."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"


def _example_vars() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name] = value
    return out


def test_env_example_lists_every_setting_and_nothing_else():
    assert set(_example_vars()) == {name.upper() for name in Settings.model_fields}


def test_every_variable_in_env_example_has_a_comment():
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert i > 0 and lines[i - 1].startswith("#"), f"{line.split('=')[0]} has no comment above it"


def test_env_example_values_are_valid_settings(monkeypatch):
    for name, value in _example_vars().items():
        monkeypatch.setenv(name, value)
    s = Settings(_env_file=None)
    assert s.storage_url.startswith("file://") and s.database_url.startswith("sqlite+aiosqlite://")


def test_plain_database_urls_get_the_async_driver():
    assert Settings(_env_file=None, database_url="postgresql://u@h/db").database_url == "postgresql+asyncpg://u@h/db"


@pytest.mark.parametrize("field,value", [
    ("storage_url", "ftp://x"), ("storage_url", "s3://"), ("database_url", "mysql://x/y"),
    ("url_expires_seconds", 5),
])
def test_bad_values_are_refused(field, value):
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **{field: value})


@pytest.mark.parametrize("value, in_child", [("true", True), ("false", False)])
def test_the_worker_renders_where_worker_render_process_says(monkeypatch, value, in_child):
    """WORKER_RENDER_PROCESS reaches the worker's pipeline: a child process of its own, or a
    thread of the worker (an operator's way back if the child misbehaves on their machine)."""
    import gpu_worker

    monkeypatch.setenv("WORKER_RENDER_PROCESS", value)
    monkeypatch.setenv("WORKER_DEVICE", "cpu")
    cfg = gpu_worker.pipeline_config(Settings())
    assert cfg.render_process is in_child and cfg.device == "cpu"

"""Every setting of the service and the worker, read from the environment (or a .env file).

One class, one source of truth: ``.env.example`` lists each variable with a comment, and a
test keeps the two in step.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # where things live
    database_url: str = "sqlite+aiosqlite:///./data/avatar.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    queue_name: str = "avatar:queue"
    storage_url: str = "file://./data/storage"
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_region: str = "us-east-1"
    s3_create_bucket: bool = True

    # links handed to clients
    public_base_url: str | None = None
    url_expires_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600)
    secret_key: str | None = None

    # limits at the edge
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    photo_fetch_timeout_seconds: float = Field(20.0, gt=0)
    allow_private_photo_urls: bool = False
    max_event_bytes: int = Field(16 * 1024, ge=256)
    max_request_bytes: int = Field(64 * 1024, ge=1024)
    rate_limit_per_minute: int = Field(600, ge=0)

    # the worker
    worker_device: str = "auto"
    worker_body_model: str = "auto"
    worker_warmup: bool = True
    # render in a child process of the worker (the default: pyrender then does not hold the
    # fit's interpreter lock); false renders on a thread of the worker itself, as before
    worker_render_process: bool = True
    # the pipeline takes whatever CPU it gets; a request to the API on the same machine must not
    # wait behind it (status p99 was 190 ms at 4 users with a busy worker at equal priority)
    worker_nice: int = Field(10, ge=0, le=19)
    # batched fitting: a free worker takes up to WORKER_BATCH waiting jobs and fits them as one
    # batch; a job waits at most WORKER_BATCH_WAIT_MS for the others it took with it (a job
    # taken alone does not wait). 1 = one job at a time
    worker_batch: int = Field(4, ge=1, le=64)
    worker_batch_wait_ms: float = Field(50.0, ge=0, le=5000)
    job_timeout_seconds: int = Field(900, ge=10)
    job_max_tries: int = Field(2, ge=1)
    heartbeat_seconds: float = Field(10.0, gt=0)
    estimated_time_seconds: float = Field(60.0, gt=0)
    # jobs always end: a worker is dead once its heartbeat is this many beats old; the reaper
    # (one per Redis, whatever the number of API processes) sweeps this often; every job fails
    # once this old
    heartbeat_missed_beats: int = Field(3, ge=2)
    reaper_interval_seconds: float = Field(5.0, gt=0)
    job_deadline_seconds: int = Field(3600, ge=30)

    # credits (only for tenants that were granted some: `avatar credits grant`)
    credits_per_job: int = Field(1, ge=0)

    # what runs the jobs: local GPU workers, or a RunPod serverless endpoint (outbound)
    backend: Literal["local", "runpod"] = "local"
    runpod_base_url: str = "https://api.runpod.ai/v2"
    runpod_endpoint_id: str | None = None
    runpod_api_key: str | None = None
    runpod_poll_seconds: float = Field(1.0, gt=0)
    runpod_max_jobs: int = Field(20, ge=1)

    # the RunPod-compatible /v2 surface (inbound)
    v2_endpoints: str = "avatar"
    allow_private_webhook_urls: bool = False
    webhook_timeout_seconds: float = Field(10.0, gt=0)

    # the API process
    auto_migrate: bool = True
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    # browser front ends on other origins that may call the API (comma-separated; none by default)
    cors_origins: str = ""

    @field_validator("storage_url")
    @classmethod
    def _storage_scheme(cls, v: str) -> str:
        scheme = urlparse(v).scheme
        if scheme not in ("file", "s3"):
            raise ValueError(f"STORAGE_URL must start with file:// or s3:// (got {v!r})")
        if scheme == "s3" and not urlparse(v).netloc:
            raise ValueError("STORAGE_URL=s3://BUCKET needs a bucket name")
        return v

    @field_validator("database_url")
    @classmethod
    def _database_driver(cls, v: str) -> str:
        # accept the usual spellings and turn them into the async drivers we ship
        for plain, driver in (("postgresql://", "postgresql+asyncpg://"),
                              ("postgres://", "postgresql+asyncpg://"),
                              ("sqlite://", "sqlite+aiosqlite://")):
            if v.startswith(plain):
                return driver + v[len(plain):]
        if not v.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("DATABASE_URL must be a postgresql:// or sqlite:// URL")
        return v

    @model_validator(mode="after")
    def _runpod_credentials(self) -> "Settings":
        # no silent mock: the RunPod backend without its credentials must not start
        if self.backend == "runpod":
            missing = [n for n in ("runpod_endpoint_id", "runpod_api_key") if not getattr(self, n)]
            if missing:
                raise ValueError(f"BACKEND=runpod needs {' and '.join(n.upper() for n in missing)} "
                                 "(the endpoint id from RunPod's console, an API key from its settings), "
                                 "or set BACKEND=local")
        return self

    @property
    def v2_endpoint_ids(self) -> tuple[str, ...]:
        """The endpoint ids the /v2 routes answer to (``V2_ENDPOINTS``, comma-separated)."""
        return tuple(e.strip() for e in self.v2_endpoints.split(",") if e.strip())

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        """The origins allowed by CORS (``CORS_ORIGINS``, comma-separated)."""
        return tuple(o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip())

    @property
    def heartbeat_ttl_seconds(self) -> float:
        """How long a worker's heartbeat lives: past it, the worker counts as dead."""
        return self.heartbeat_seconds * self.heartbeat_missed_beats

    @property
    def data_dir(self) -> Path:
        """Folder for the embedded defaults' files (SQLite, local storage, the secret key)."""
        return Path("./data")

    def signing_key(self) -> bytes:
        """Key for the local storage's link signatures: SECRET_KEY, else one generated once
        and kept in ``data/secret_key`` (so links survive restarts and work across processes)."""
        if self.secret_key:
            return self.secret_key.encode()
        import secrets

        path = self.data_dir / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_text().strip().encode()


@lru_cache
def get_settings() -> Settings:
    return Settings()

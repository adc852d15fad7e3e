"""Database: the tables and the async engine (SQLAlchemy 2; PostgreSQL or SQLite).

The schema itself is created and changed only by the migrations in ``service/migrations``.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, TypeDecorator,
                        UniqueConstraint, event)
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator):
    """Timestamps come back timezone-aware (UTC) from PostgreSQL and from SQLite alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # every tenant's credits (migration 0004_operator); only the CLI makes such keys
    is_operator: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_tenant_user", "tenant", "user_id"),
                      Index("ix_jobs_tenant_v2_endpoint", "tenant", "v2_endpoint"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    stage: Mapped[str | None] = mapped_column(String(32), nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    photo_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    photo_source_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    height_cm: Mapped[float] = mapped_column(Float)
    weight_kg: Mapped[float | None] = mapped_column(Float, nullable=True)
    gender: Mapped[str] = mapped_column(String(16))
    clothing: Mapped[str] = mapped_column(String(16), default="regular", server_default="regular")  # 0005
    weight_source: Mapped[str] = mapped_column(String(16), default="reported", server_default="reported")  # 0007
    body_model: Mapped[str | None] = mapped_column(String(16), nullable=True)
    files: Mapped[dict[str, Any]] = mapped_column(default=dict)
    measurements: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    fit: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)  # 0006: a completed job's FitSummary
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # RunPod, both ways (migration 0002_runpod): the RunPod job that runs this one (BACKEND=runpod);
    # the /v2 endpoint that created it, its request options (webhook, policy) and webhook delivery
    runpod_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    v2_endpoint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    v2_request: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    webhook_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    retries: Mapped[int] = mapped_column(Integer, default=0)  # times /v2 retry queued it again


class Avatar(Base):
    """The fit passport: per user, the latest avatar and its measurements."""

    __tablename__ = "avatars"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    latest_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    # the newest job that completed: its GLB, measurements and files are what the passport shows
    avatar_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    avatar_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    measurements: Mapped[dict[str, Any]] = mapped_column(default=dict)
    manual_measurements: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pipeline_files: Mapped[dict[str, Any]] = mapped_column(default=dict)
    processing_started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    processing_completed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_tenant_user", "tenant", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    name: Mapped[str] = mapped_column(String(64))
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CreditMove(Base):
    """One movement of a tenant's credits. ``amount`` is signed (grant +N, reserve -cost, release
    +cost, commit 0); one row per (job, kind), so a job is never charged or refunded twice."""

    __tablename__ = "credit_ledger"
    __table_args__ = (UniqueConstraint("job_id", "kind", name="uq_credit_ledger_job_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def insert_once(session: AsyncSession, model: type[Base], keys: list[str], **values: Any):
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` in the session's dialect: concurrent writers of
    the same row both succeed and one row remains."""
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model).values(**values).on_conflict_do_nothing(index_elements=keys)


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # API and worker share the file: WAL + FKs
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # no pre-ping: SQLAlchemy's asyncpg ping is BEGIN, a query and ROLLBACK, three round trips
    # on every checkout (a status poll's read is one); a connection PostgreSQL closed (a restart,
    # an idle timeout) is known to asyncpg without asking, and replaced here
    engine = create_async_engine(url, pool_pre_ping=False)

    @event.listens_for(engine.sync_engine, "checkout")
    def _replace_closed(dbapi_conn, _record, _proxy):
        inner = getattr(dbapi_conn, "_connection", None)  # the asyncpg connection under the adapter
        if inner is not None and inner.is_closed():
            raise DisconnectionError("the database closed this connection")

    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def read_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for a single read (a status poll): autocommit, so the read is one statement on
    the wire, without the BEGIN and ROLLBACK round trips a transaction adds around it."""
    return async_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)


def _ensure_sqlite_dir(url: str) -> None:
    from pathlib import Path

    path = url.split(":///", 1)[-1] if ":///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)

"""In-process pieces for tests of the worker's runner and the reaper: a migrated SQLite database,
a local storage folder and a connection to the session's real Redis, each fresh per test."""
from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from service import jobs, migrate, queue
from service.db import Job, make_engine, new_id, session_factory, utcnow
from service.settings import Settings
from service.storage import FileStorage


@dataclass
class Kit:
    settings: Settings
    sessions: object
    storage: FileStorage
    redis: object

    async def new_job(self, status: str = jobs.QUEUED, **values) -> Job:
        job = Job(id=new_id(), tenant="acme", user_id="u1", status=status, progress=0, message="",
                  height_cm=175, gender="male", weight_kg=75, files={}, measurements={}, timings={},
                  attempts=0, photo_key="photos/acme/p1", created_at=utcnow(), updated_at=utcnow())
        for name, value in values.items():
            setattr(job, name, value)
        async with self.sessions() as s:
            s.add(job)
            await jobs.register_new(s, job)
            await s.commit()
        return job

    async def job(self, job_id: str) -> Job:
        async with self.sessions() as s:
            return await s.get(Job, job_id)


@contextlib.asynccontextmanager
async def kit(tmp: Path, redis_url: str, **settings) -> AsyncIterator[Kit]:
    db_url = f"sqlite+aiosqlite:///{tmp / 'avatar.db'}"
    await migrate.upgrade_async(db_url)
    cfg = Settings(_env_file=None, database_url=db_url, redis_url=redis_url,
                   queue_name=f"avatar:test:{uuid.uuid4().hex[:8]}", storage_url=f"file://{tmp}/storage",
                   secret_key="test")
    cfg = cfg.model_copy(update=settings)  # test-only values below the production minimums
    engine = make_engine(db_url)
    redis = await queue.connect(redis_url)
    try:
        yield Kit(cfg, session_factory(engine), FileStorage(tmp / "storage", b"k", 3600), redis)
    finally:
        await redis.aclose()
        await engine.dispose()

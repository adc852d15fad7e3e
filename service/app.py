"""The FastAPI app: connects to the database, Redis and storage at start-up (and refuses to
start, with the fix, when one is missing), then serves the routes."""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text

from service import errors, migrate, queue
from service.errors import DependencyError
from service.db import make_engine, read_factory, session_factory
from service.deps import Services
from service.edge import Edge
from service.reaper import Reaper
from service.routes import avatars as avatar_routes
from service.routes import credits as credit_routes
from service.routes import ops, runpod_v2
from service.routes import web as web_routes
from service.settings import Settings, get_settings
from service.storage import make_storage
from service.web import STATIC_DIR

log = logging.getLogger("avatar.api")


async def connect(settings: Settings) -> Services:
    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        await engine.dispose()
        raise DependencyError(f"cannot reach the database ({exc.__class__.__name__}: {exc}); start it or fix "
                           "DATABASE_URL") from exc
    if settings.auto_migrate:
        await migrate.upgrade_async(settings.database_url)
    elif await migrate.current_revision(settings.database_url) != migrate.head_revision():
        await engine.dispose()
        raise DependencyError("the database schema is not up to date: run `avatar db upgrade`")
    try:
        storage = make_storage(settings)
        await storage.check()
        redis = await queue.connect(settings.redis_url)
    except DependencyError:
        await engine.dispose()
        raise
    return Services(settings, engine, session_factory(engine), storage, redis, read_factory(engine))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            app.state.services = await connect(settings)
        except DependencyError as exc:
            log.error("start-up failed: %s", exc)
            raise
        log.info("API ready; jobs run on the %s backend", settings.backend)
        svc = app.state.services
        reaper = asyncio.create_task(Reaper(settings, svc.sessions, svc.redis, svc.storage).forever())
        yield
        reaper.cancel()
        await asyncio.gather(reaper, return_exceptions=True)
        await app.state.services.redis.aclose()
        await app.state.services.engine.dispose()

    app = FastAPI(title="Avatar service", version=_version(), lifespan=lifespan,
                  description="One full-body photo + height, weight, gender → a 3D body avatar.")
    errors.install(app)
    app.add_middleware(Edge, settings=settings)
    if settings.cors_origin_list:  # outside the edge: a preflight carries no key and must not get 401
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origin_list), allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    app.include_router(ops.router)
    app.include_router(avatar_routes.router)
    app.include_router(credit_routes.router)
    app.include_router(runpod_v2.router)
    app.include_router(web_routes.router)
    app.mount("/web", StaticFiles(directory=STATIC_DIR), name="web")
    return app


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("avatar-service")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"

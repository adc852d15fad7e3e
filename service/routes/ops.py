"""Liveness, readiness, signed file links (local storage), client events and API keys."""
from __future__ import annotations

import json
import logging

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from sqlalchemy import text

from service import auth, metrics, queue
from service.db import Event
from service.deps import AdminDep, PrincipalDep, SvcDep
from service.errors import ApiError, documented, not_found
from service.queueview import queue_view
from service.schemas import EventIn, EventOut, KeyIn, KeyOut, QueueOut
from service.storage import FileStorage, content_type_for

router = APIRouter()
log = logging.getLogger("avatar.api")


@router.get("/health")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "not ready: `checks` says which dependency"}})
async def ready(svc: SvcDep) -> JSONResponse:
    checks: dict[str, dict] = {}
    try:
        async with svc.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except Exception as exc:
        log.warning("ready: database check failed: %s", exc)
        checks["database"] = {"ok": False, "error": "the database is not reachable"}
    try:
        await svc.redis.ping()
        checks["redis"] = {"ok": True}
        workers = await queue.live_workers(svc.redis, svc.settings.queue_name)
        checks["workers"] = {"ok": bool(workers), "count": len(workers),
                             "devices": sorted({w.get("device", "?") for w in workers})}
        if not workers:
            checks["workers"]["error"] = "no worker heartbeat: start `avatar worker`"
    except Exception as exc:
        log.warning("ready: Redis check failed: %s", exc)
        checks["redis"] = {"ok": False, "error": "Redis is not reachable"}
        checks["workers"] = {"ok": False, "error": "unknown (Redis is down)"}
    try:
        await svc.storage.check()
        checks["storage"] = {"ok": True}
    except Exception as exc:
        log.warning("ready: storage check failed: %s", exc)
        checks["storage"] = {"ok": False, "error": "storage is not reachable or not writable"}
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse({"status": "ready" if ok else "not_ready", "backend": svc.settings.backend, "checks": checks},
                        status_code=200 if ok else 503)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(svc: SvcDep) -> Response:
    body = await metrics.scrape(svc.sessions, svc.redis, svc.settings.queue_name)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/admin/queue", response_model=QueueOut, responses={**documented(401, 403, 429, 503)})
async def admin_queue(svc: SvcDep, who: AdminDep) -> QueueOut:
    """Counts, the oldest waiting job and recent failures of the key's tenant; every live worker."""
    try:
        return await queue_view(svc.sessions, svc.redis, svc.settings.queue_name, tenant=who.tenant)
    except RedisError as exc:
        raise ApiError(503, "queue_unavailable", "the job queue (Redis) is not reachable") from exc


@router.get("/files/{key:path}", include_in_schema=False)
async def signed_file(key: str, expires: int, signature: str, svc: SvcDep) -> FileResponse:
    storage = svc.storage
    if not isinstance(storage, FileStorage):
        raise not_found("file")
    try:
        ok = storage.verify(key, expires, signature)
        path = storage.local_path(key)
    except ValueError:
        ok = False
    if not ok:
        raise ApiError(403, "invalid_signature", "this link is invalid or has expired; ask the API for a fresh one")
    if not path.is_file():
        raise not_found("file")
    return FileResponse(path, media_type=content_type_for(key), filename=path.name)


KEYED = documented(401, 413, 422, 429, 503)


@router.post("/api/events", response_model=EventOut, status_code=202, responses=KEYED)
async def post_event(body: EventIn, svc: SvcDep, who: PrincipalDep) -> EventOut:
    try:
        size = len(json.dumps(body.properties, allow_nan=False))
    except ValueError as exc:  # NaN and Infinity are not JSON; PostgreSQL refuses them
        raise ApiError(422, "invalid_request", "properties: numbers must be finite") from exc
    if size > svc.settings.max_event_bytes:
        raise ApiError(413, "event_too_large", f"event properties are over {svc.settings.max_event_bytes} bytes")
    async with svc.sessions() as s:
        ev = Event(tenant=who.tenant, user_id=body.user_id, name=body.name, properties=body.properties)
        s.add(ev)
        await s.commit()
        return EventOut(event_id=ev.id)


def _key_out(row, token: str | None = None) -> KeyOut:
    return KeyOut(id=row.id, tenant=row.tenant, name=row.name, prefix=row.prefix, admin=row.is_admin,
                  created_at=row.created_at, revoked_at=row.revoked_at, key=token)


@router.post("/api/keys", response_model=KeyOut, status_code=201, responses={**KEYED, **documented(403)})
async def create_key(body: KeyIn, svc: SvcDep, who: AdminDep) -> KeyOut:
    try:
        auth.check_tenant(body.tenant)
    except ValueError as exc:
        raise ApiError(422, "invalid_tenant", str(exc)) from exc
    if body.tenant != who.tenant:
        raise ApiError(403, "forbidden", "an admin key creates keys for its own tenant only; the operator "
                       "manages other tenants with `avatar keys create --tenant NAME`")
    async with svc.sessions() as s:
        row, token = await auth.create_key(s, body.tenant, body.name, body.admin)
    return _key_out(row, token)


@router.get("/api/keys", response_model=list[KeyOut], responses={**KEYED, **documented(403)})
async def list_keys(svc: SvcDep, who: AdminDep) -> list[KeyOut]:
    async with svc.sessions() as s:
        return [_key_out(r) for r in await auth.list_keys(s, tenant=who.tenant)]


@router.delete("/api/keys/{key_id}", status_code=204, responses={**KEYED, **documented(403, 404)})
async def revoke_key(key_id: str, svc: SvcDep, who: AdminDep) -> None:
    async with svc.sessions() as s:
        if not await auth.revoke_key(s, key_id, tenant=who.tenant):
            raise not_found("active key")
    try:
        await auth.announce_revocation(svc.redis)
    except RedisError as exc:  # the database says revoked; other processes stop at their cache's end
        log.warning("key %s revoked, but Redis did not hear of it (%s): other API processes may accept it for "
                    "up to %.0f s", key_id, exc.__class__.__name__, auth.recent.ttl)

"""The web page: ``/`` and its static files, and the public limits its form is checked against."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from service import web
from service.deps import SvcDep
from service.schemas import LimitsOut

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(web.INDEX, media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/limits", response_model=LimitsOut)
async def limits(svc: SvcDep) -> LimitsOut:
    """Ranges, patterns and messages of a create request (no key needed: nothing here is secret)."""
    return web.limits(svc.settings)

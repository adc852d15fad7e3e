"""Photos, avatar jobs, fit passports and measurement corrections."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, UploadFile
from fastapi.responses import RedirectResponse
from sse_starlette import EventSourceResponse

from service import avatars, events
from service.deps import PrincipalDep, SvcDep
from service.errors import ApiError, documented
from service.schemas import USER_ID, CreateAvatarIn, CreateAvatarOut, JobStatusOut, MeasurementsPatch, PassportOut, PhotoOut

router = APIRouter(prefix="/api", responses=documented(401, 413, 422, 429, 503))
UserId = Annotated[str, Path(pattern=USER_ID, description="your id for the person")]


@router.post("/photos", response_model=PhotoOut, status_code=201, responses=documented(415))
async def upload_photo(request: Request, file: UploadFile, svc: SvcDep, who: PrincipalDep) -> PhotoOut:
    limit = svc.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "photo_too_large", avatars.PHOTO_SIZE_MESSAGE.format(limit=limit))
    if not data:
        raise ApiError(422, "invalid_image", "the uploaded file is empty")
    photo_id, content_type = await avatars.store_photo(svc, who, data)
    return PhotoOut(photo_id=photo_id, photo_url=f"{svc.base_url(request)}/api/photos/{photo_id}",
                    content_type=content_type, size_bytes=len(data))


@router.get("/photos/{photo_id}", status_code=307,
            responses={307: {"description": "link to the photo"}, **documented(404)})
async def get_photo(photo_id: str, request: Request, svc: SvcDep, who: PrincipalDep) -> RedirectResponse:
    key, _ = await avatars.resolve_photo(svc, who, request, f"/api/photos/{photo_id}")
    if key is None:
        raise ApiError(404, "photo_not_found", "photo not found")
    return RedirectResponse(svc.link(request, key), status_code=307)


@router.post("/avatar/create", response_model=CreateAvatarOut, status_code=202, responses=documented(402, 404))
async def create_avatar(body: CreateAvatarIn, request: Request, svc: SvcDep, who: PrincipalDep) -> CreateAvatarOut:
    return await avatars.create_job(svc, who, request, body)


@router.get("/avatar/status/{job_id}", response_model=JobStatusOut, responses=documented(404))
async def avatar_status(job_id: str, request: Request, svc: SvcDep, who: PrincipalDep) -> JobStatusOut:
    job = await avatars.get_job(svc, who, job_id)
    return avatars.job_status(svc, request, job, await avatars.waiting_message(svc, job))


@router.get("/avatar/events/{job_id}", response_class=EventSourceResponse, responses={
    200: {"description": "server-sent events: one `status` event (data: the status route's JSON) now and on "
                         "every change of status, progress, stage or message; the stream ends after a final "
                         "status. Comment lines (`: ping`) keep it open.",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    **documented(404)})
async def avatar_events(job_id: str, request: Request, svc: SvcDep, who: PrincipalDep) -> EventSourceResponse:
    """The status route's document pushed as it changes (within ~100 ms of the worker's write)."""
    job = await avatars.get_job(svc, who, job_id)  # a 404 before the stream starts

    async def stream():
        async for row, newer in events.follow(svc.redis, svc.sessions, job.id):
            doc = avatars.job_status(svc, request, row, await avatars.waiting_message(svc, row))
            yield {"event": "status", "data": doc.model_copy(update=newer).model_dump_json()}

    return EventSourceResponse(stream(), ping=15, headers={"Cache-Control": "no-store"})


@router.post("/avatar/cancel/{job_id}", response_model=JobStatusOut, responses=documented(404, 409))
async def cancel_avatar(job_id: str, request: Request, svc: SvcDep, who: PrincipalDep) -> JobStatusOut:
    return avatars.job_status(svc, request, await avatars.cancel_job(svc, who, job_id))


@router.get("/avatars", response_model=list[PassportOut])
async def list_passports(request: Request, svc: SvcDep, who: PrincipalDep) -> list[PassportOut]:
    """This tenant's people (one passport each), the most recently changed first, at most 50."""
    return [avatars.passport_out(svc, request, p) for p in await avatars.list_passports(svc, who)]


@router.get("/avatar/{user_id}", response_model=PassportOut, responses=documented(404))
async def passport(user_id: UserId, request: Request, svc: SvcDep, who: PrincipalDep) -> PassportOut:
    return avatars.passport_out(svc, request, await avatars.get_passport(svc, who, user_id))


@router.patch("/measurements/{user_id}", response_model=PassportOut, responses=documented(404))
async def correct_measurements(user_id: UserId, body: MeasurementsPatch, request: Request, svc: SvcDep,
                               who: PrincipalDep) -> PassportOut:
    p = await avatars.correct_measurements(svc, who, user_id, dict(body.measurements))
    return avatars.passport_out(svc, request, p)

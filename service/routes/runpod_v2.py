"""RunPod's serverless API on our service: code written for RunPod (the official SDK with
``RUNPOD_ENDPOINT_BASE_URL`` pointed here, or a plain HTTP client) drives our own workers.
The key goes as ``Authorization: Bearer KEY`` (the SDK) or as the bare key (RunPod's curl
examples); tenant rules are the API's: another tenant's job is 404."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from service import avatars, v2
from service.auth import Principal
from service.deps import SvcDep, check_token
from service.errors import ApiError, documented
from service.runpod_protocol import V2HealthOut, V2JobOut, V2PurgeOut, V2RunIn, V2StreamOut, runpod_status

router = APIRouter(prefix="/v2/{endpoint_id}", tags=["RunPod-compatible"],
                   responses=documented(401, 404, 409, 413, 422, 429, 503))


async def caller(request: Request, endpoint_id: str, svc: SvcDep) -> Principal:
    scheme, _, rest = request.headers.get("authorization", "").strip().partition(" ")
    token = rest.strip() if scheme.lower() == "bearer" else scheme
    who = None
    if token:
        who = await check_token(svc, token)
    if who is None:
        raise ApiError(401, "unauthorized", "send an API key as 'Authorization: Bearer KEY' (or the bare key)",
                       {"WWW-Authenticate": 'Bearer realm="avatar"'})
    v2.check_endpoint(svc, endpoint_id)
    return who


CallerDep = Annotated[Principal, Depends(caller)]
_OUT = {"response_model_exclude_none": True}


@router.post("/run", response_model=V2JobOut, **_OUT)
async def run(endpoint_id: str, body: V2RunIn, request: Request, svc: SvcDep, who: CallerDep) -> V2JobOut:
    job = await v2.submit(svc, who, request, endpoint_id, body)
    return V2JobOut(id=job.id, status="IN_QUEUE")


@router.post("/runsync", response_model=V2JobOut, **_OUT)
async def runsync(endpoint_id: str, body: V2RunIn, request: Request, svc: SvcDep, who: CallerDep,
                  wait: Annotated[int, Query(ge=1000, le=300_000, description="ms")] = v2.RUNSYNC_DEFAULT_WAIT_MS,
                  ) -> V2JobOut:
    job = await v2.submit(svc, who, request, endpoint_id, body)
    job = await v2.wait_final(svc, who, job.id, wait)
    return await v2.describe(svc.storage, job, svc.base_url(request))


@router.get("/status/{job_id}", response_model=V2JobOut, **_OUT)
@router.post("/status/{job_id}", response_model=V2JobOut, include_in_schema=False, **_OUT)
async def status(job_id: str, request: Request, svc: SvcDep, who: CallerDep) -> V2JobOut:
    job = await avatars.get_job(svc, who, job_id)
    return await v2.describe(svc.storage, job, svc.base_url(request))


@router.get("/stream/{job_id}", response_model=V2StreamOut)
@router.post("/stream/{job_id}", response_model=V2StreamOut, include_in_schema=False)
async def stream(job_id: str, request: Request, svc: SvcDep, who: CallerDep) -> V2StreamOut:
    """The job's progress while it runs (our handler streams no partial outputs); empty once final."""
    doc = await status(job_id, request, svc, who)
    running = doc.status == "IN_PROGRESS" and doc.output is not None
    return V2StreamOut(id=doc.id, status=doc.status, stream=[{"output": doc.output.model_dump()}] if running else [])


@router.post("/cancel/{job_id}", response_model=V2JobOut, **_OUT)
async def cancel(job_id: str, svc: SvcDep, who: CallerDep) -> V2JobOut:
    job = await v2.cancel(svc, who, job_id)
    return V2JobOut(id=job.id, status=runpod_status(job.status, job.error_code))


@router.post("/retry/{job_id}", response_model=V2JobOut, **_OUT)
async def retry(job_id: str, svc: SvcDep, who: CallerDep) -> V2JobOut:
    job = await v2.retry(svc, who, job_id)
    return V2JobOut(id=job.id, status=runpod_status(job.status, job.error_code))


@router.post("/purge-queue", response_model=V2PurgeOut)
async def purge_queue(endpoint_id: str, svc: SvcDep, who: CallerDep) -> V2PurgeOut:
    return V2PurgeOut(removed=await v2.purge_queue(svc, who, endpoint_id))


@router.get("/health", response_model=V2HealthOut)
async def health(endpoint_id: str, svc: SvcDep, who: CallerDep) -> V2HealthOut:
    return await v2.health(svc, who, endpoint_id)

"""RunPod's serverless wire protocol, in one place: the job input that our handler and our /v2
routes accept (the API's own rules), the output shape the old backend decodes
(``files_base64`` + ``measurements``), RunPod's states and how ours map onto them, and the
``"code: message"`` error text that carries our error codes through RunPod."""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas import USER_ID, CreateAvatarIn, Strict

IN_QUEUE, IN_PROGRESS, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"
FAILED, CANCELLED, TIMED_OUT = "FAILED", "CANCELLED", "TIMED_OUT"
FINAL_STATES = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})
RunpodStatus = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]
TIMEOUT_CODE = "timeout"  # our error code for a job past its deadline: RunPod's TIMED_OUT

_OURS_TO_RUNPOD = {"queued": IN_QUEUE, "processing": IN_PROGRESS, "completed": COMPLETED,
                   "failed": FAILED, "cancelled": CANCELLED}
_ERROR_TEXT = re.compile(r"^([a-z][a-z0-9_]{0,63}): (.*)$", re.S)


def runpod_status(status: str, error_code: str | None) -> str:
    """Our job status as RunPod names it (a job failed for its deadline is TIMED_OUT)."""
    if status == "failed" and error_code == TIMEOUT_CODE:
        return TIMED_OUT
    return _OURS_TO_RUNPOD[status]


def error_text(code: str, message: str) -> str:
    return f"{code}: {message}"


def split_error(text: Any, default_code: str) -> tuple[str, str]:
    """(code, message) from a RunPod error: ours are ``"code: message"``; anything else (a
    handler's traceback JSON, a plain string) keeps ``default_code``."""
    text = text if isinstance(text, str) else str(text)
    m = _ERROR_TEXT.match(text)
    return (m.group(1), m.group(2)) if m else (default_code, text[:2000])


class AvatarInput(CreateAvatarIn):
    """A RunPod job's ``input``: the same fields and limits as ``POST /api/avatar/create``;
    ``user_id`` may be left out (the job is then filed under an id of its own)."""

    user_id: str | None = Field(None, pattern=USER_ID)


class BucketTarget(Strict):
    """S3 settings the handler uploads the files to (``prefix`` + file name)."""

    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = Field("", max_length=512)
    endpoint_url: str | None = None
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"


class UploadTarget(Strict):
    """Where the handler puts the files instead of returning them in base64: presigned PUT
    URLs per file name (every file needs one), or bucket settings."""

    urls: dict[str, str] | None = None
    bucket: BucketTarget | None = None


class HandlerInput(AvatarInput):
    upload: UploadTarget | None = None


class V2Input(AvatarInput):
    return_files: Literal["base64", "links"] = Field(
        "base64", description="files in the output as base64 (the old backend's shape) or as expiring links")


class Policy(BaseModel):
    """RunPod's per-job policy; times in ms. Other keys RunPod knows are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    executionTimeout: int | None = Field(None, ge=1000, le=7 * 24 * 3600 * 1000)
    ttl: int | None = Field(None, ge=10_000, le=7 * 24 * 3600 * 1000)


class V2RunIn(BaseModel):
    model_config = ConfigDict(extra="ignore")  # s3Config and other RunPod options: not used here
    input: V2Input
    webhook: str | None = Field(None, max_length=4096)
    policy: Policy | None = None


class AvatarOutput(BaseModel):
    """What a completed job returns: the handler's output, and ``output`` on our /v2 routes."""

    files_base64: dict[str, str] | None = None
    files: dict[str, str] | None = Field(None, description="uploaded object keys, or download links")
    measurements: dict[str, float]
    timings: dict[str, Any]
    body_model: str | None
    fit: dict[str, Any] | None = Field(None, description="the handler: the pipeline's whole fit summary "
                                       "(diagnostics included); our /v2: the job's FitSummary")


class Progress(BaseModel):
    """What ``progress_update`` sends while a job runs; /status shows it as ``output``."""

    progress: int
    stage: str | None
    message: str


class V2JobOut(BaseModel):
    id: str
    status: RunpodStatus
    delayTime: int | None = None
    executionTime: int | None = None
    output: AvatarOutput | Progress | None = None
    error: str | None = None


class V2StreamOut(BaseModel):
    id: str
    status: RunpodStatus
    stream: list[dict[str, Any]]


class V2HealthJobs(BaseModel):
    completed: int
    failed: int
    inProgress: int
    inQueue: int
    retried: int


class V2HealthWorkers(BaseModel):
    idle: int
    running: int


class V2HealthOut(BaseModel):
    jobs: V2HealthJobs
    workers: V2HealthWorkers


class V2PurgeOut(BaseModel):
    removed: int
    status: Literal["completed"] = "completed"

"""Request and response bodies of the API."""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from inference.types import CLOTHING, HEIGHT_RANGE_CM, MEASUREMENTS, WEIGHT_RANGE_KG, WEIGHT_SOURCES

USER_ID = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
Gender = Literal["male", "female", "other"]
Clothing = Literal["regular", "fitted"]  # inference.types.CLOTHING
WeightSource = Literal["reported", "scale"]  # inference.types.WEIGHT_SOURCES
JobStatus = Literal["queued", "processing", "completed", "failed", "cancelled"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable (e.g. unauthorized, photo_too_large)")
    message: str = Field(description="for people; never internal details")


class ErrorOut(BaseModel):
    """Every error answer of the API has this shape."""

    error: ErrorDetail


class PhotoOut(BaseModel):
    photo_id: str
    photo_url: str
    content_type: str
    size_bytes: int


class CreateAvatarIn(Strict):
    user_id: str = Field(pattern=USER_ID, description="your id for the person (letters, digits, . _ @ -)")
    photo_url: str = Field(max_length=4096)
    height: float = Field(ge=HEIGHT_RANGE_CM[0], le=HEIGHT_RANGE_CM[1], description="cm")
    weight: float | None = Field(None, ge=WEIGHT_RANGE_KG[0], le=WEIGHT_RANGE_KG[1], description="kg")
    gender: Gender
    clothing: Clothing = Field("regular", description="regular: everyday clothes (the fit expects them to "
                               "stand a little off the body, unless the photo's silhouette shows they "
                               "follow it); fitted: skin-tight (sportswear, a scan suit)")
    weight_source: WeightSource = Field("reported", description="where the weight comes from: reported (the "
                                        "person's own figure; the photo may pull the body's mass against "
                                        "it) or scale (weighed for this photo, in light clothes; the mass "
                                        "is held to it within ~2 %); scale needs a weight")


class CreateAvatarOut(BaseModel):
    job_id: str
    user_id: str
    status: JobStatus
    message: str
    estimated_time_seconds: float


class JobError(BaseModel):
    code: str
    message: str


class JobInputs(BaseModel):
    """What the create request said about the person, as the job was run with it."""

    height: float
    weight: float | None
    gender: str
    clothing: str
    weight_source: str


class ClothOffset(BaseModel):
    hips: float = Field(description="cm the clothes stand off the body on each side at the hips")
    under_arms: float = Field(description="cm the clothes stand off the body on each side under the arms")


class FitSummary(BaseModel):
    """What the fit made of the person beside what the request said (a completed job's; null before)."""

    body_model: str | None = Field(None, description="the body model fitted (anny or smpl)")
    mass_kg: float | None = Field(None, description="the fitted body's mass from its volume, kg: the photo's "
                                  "reading, pulled towards the typed weight when one was given")
    weight_kg_typed: float | None = Field(None, description="the weight the request gave, kg (null: none given)")
    weight_source: WeightSource | None = Field(None, description="where that weight came from, as the fit took "
                                               "it: reported (the photo may pull the mass against it) or scale "
                                               "(the mass held to it within ~2 %)")
    clothing_said: Clothing | None = Field(None, description="the clothing the request gave")
    clothing_read: Clothing | None = Field(None, description="what the fit took the clothes for: fitted when "
                                           "the silhouette shows they follow the body, else what was said; "
                                           "null when the fit did not read them (SMPL has no learned prior; "
                                           "a photo's widths may give it too little to read)")
    cloth_offset_cm: ClothOffset | None = Field(None, description="how far the fit predicted the clothes to "
                                                "stand off the body (null without a prediction)")

    @classmethod
    def of(cls, fit: Any, *, weight_kg: float | None, clothing: str | None,
           weight_source: str | None) -> FitSummary | None:
        """The summary of a pipeline's ``Result.fit`` (or of a summary, as our /v2 returns it) with the
        typed inputs. ``fit`` may come from a RunPod worker: a malformed value is left out, never an
        error; None when nothing of the fit is usable. The weight source is the one the fit says it
        ran with, the request's where it says none (a worker from before the field)."""
        if not isinstance(fit, Mapping):
            return None
        cloth = fit.get("cloth_predicted_cm", fit.get("cloth_offset_cm"))  # the pipeline's: [hips, under arms]
        if isinstance(cloth, Mapping):  # a summary's
            cloth = [cloth.get("hips"), cloth.get("under_arms")]
        offsets = [_cm(c) for c in cloth] if isinstance(cloth, list) and len(cloth) == 2 else [None]
        read = {"body_model": fit.get("body_model") if _is_name(fit.get("body_model")) else None,
                "mass_kg": _kg(fit.get("mass_kg")),
                "clothing_read": fit.get("clothing_read") if fit.get("clothing_read") in CLOTHING else None,
                "cloth_offset_cm": ClothOffset(hips=offsets[0], under_arms=offsets[1])
                if None not in offsets else None}
        if all(v is None for v in read.values()):
            return None
        source = fit.get("weight_source") if fit.get("weight_source") in WEIGHT_SOURCES else weight_source
        return cls(weight_kg_typed=weight_kg, weight_source=source if source in WEIGHT_SOURCES else None,
                   clothing_said=clothing if clothing in CLOTHING else None, **read)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        v = float(v)
    except OverflowError:  # an int past any float
        return None
    return v if math.isfinite(v) else None


def _kg(v: Any) -> float | None:
    v = _number(v)
    return round(v, 2) if v is not None and 0 < v < 1000 else None


def _cm(v: Any) -> float | None:
    v = _number(v)
    return round(v, 2) if v is not None and 0 <= v < 100 else None


def _is_name(v: Any) -> bool:
    return isinstance(v, str) and re.fullmatch(r"[a-z][a-z0-9_-]{0,15}", v) is not None


class JobStatusOut(BaseModel):
    job_id: str
    user_id: str
    status: JobStatus
    inputs: JobInputs
    progress: int
    stage: str | None
    message: str
    avatar_url: str | None
    files: dict[str, str]
    measurements: dict[str, float]
    error: JobError | None
    timings: dict[str, Any]
    fit: FitSummary | None = Field(None, description="a completed job's fit beside the typed inputs")
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class PassportOut(BaseModel):
    user_id: str
    status: JobStatus
    latest_job_id: str | None
    avatar_job_id: str | None
    avatar_url: str | None
    measurements: dict[str, float]
    manual_measurements: dict[str, float]
    effective_measurements: dict[str, float] = Field(description="fitted values with manual corrections on top")
    pipeline_files: dict[str, str]
    processing_started_at: datetime | None
    processing_completed_at: datetime | None
    updated_at: datetime


MeasurementName = Literal[MEASUREMENTS]  # type: ignore[valid-type]


class MeasurementsPatch(Strict):
    measurements: dict[MeasurementName, float | None] = Field(  # type: ignore[valid-type]
        description="cm; null removes a manual correction", min_length=1)


class EventIn(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_.:-]{0,63}$")
    user_id: str | None = Field(None, pattern=USER_ID)
    properties: dict[str, Any] = Field(default_factory=dict)


class EventOut(BaseModel):
    event_id: int
    status: Literal["accepted"] = "accepted"


class KeyIn(Strict):
    tenant: str
    name: str = Field("", max_length=128)
    admin: bool = False


class KeyOut(BaseModel):
    id: str
    tenant: str
    name: str
    prefix: str
    admin: bool
    created_at: datetime
    revoked_at: datetime | None = None
    key: str | None = Field(None, description="the secret token; shown only when the key is created")


class CreditMoveOut(BaseModel):
    kind: Literal["grant", "reserve", "commit", "release"]
    amount: int = Field(description="signed: grant +N, reserve -cost, release +cost, commit 0")
    job_id: str | None
    note: str
    created_at: datetime


class CreditsOut(BaseModel):
    metered: bool = Field(description="false: this tenant was never granted credits and is not metered")
    balance: int = Field(description="credits left to spend (the ledger's sum)")
    reserved: int = Field(description="held by jobs that are not final yet")
    movements: list[CreditMoveOut] = Field(description="the newest 100, newest first")


class GrantIn(Strict):
    tenant: str = Field(description="the tenant whose balance grows (its jobs are metered from then on)")
    amount: int = Field(ge=1, le=1_000_000)
    note: str = Field("", max_length=200)


class TenantCreditsOut(CreditsOut):
    tenant: str


class WorkerOut(BaseModel):
    name: str
    device: str
    last_beat_seconds_ago: float
    current_job: str | None  # the first of current_jobs (kept for clients that read one)
    current_jobs: list[str] = []  # every job it holds: a batching worker fits several at once
    jobs_done: int
    gpu_memory_bytes: int | None = None


class WaitingJobOut(BaseModel):
    job_id: str
    tenant: str
    waiting_seconds: float


class FailureOut(BaseModel):
    job_id: str
    tenant: str
    error_code: str | None
    error_message: str | None
    completed_at: datetime | None


class QueueOut(BaseModel):
    """What an operator needs to see at a glance: is work waiting, who is working, what failed."""

    counts: dict[str, int] = Field(description="waiting, active, completed, failed, cancelled")
    queue_depth: int = Field(description="deliveries waiting in the Redis queue (all tenants)")
    oldest_waiting: WaitingJobOut | None
    workers: list[WorkerOut] = Field(description="live workers (all tenants share them)")
    recent_failures: list[FailureOut]


class RangeOut(BaseModel):
    min: float
    max: float
    message: str = Field(description="the API's message for a value outside; {value} stands for the value")


class LimitsOut(BaseModel):
    """What a create request must satisfy, so a client (the web page) checks it before sending."""

    height_cm: RangeOut
    weight_kg: RangeOut
    genders: list[str]
    clothing: list[str] = Field(description="what the person in the photo may be said to wear; the first "
                                "is the default")
    weight_sources: list[str] = Field(description="where the weight may be said to come from; the first is "
                                      "the default")
    weight_source_message: str = Field(description="the API's message for a weight source that needs a "
                                       "weight (scale) given without one")
    user_id_pattern: str
    user_id_message: str
    photo_types: list[str]
    photo_max_bytes: int
    photo_type_message: str
    photo_size_message: str
    measurements: list[str] = Field(description="the measurement names a correction may name")
    measurement_cm: RangeOut = Field(description="{name} in the message stands for the measurement's name")

"""The web page's side of the API: where its static files live and the limits it checks a form
against before sending it (the API's own ranges and messages, so the page and the API agree)."""
from __future__ import annotations

from pathlib import Path

from inference.types import (CLOTHING, GENDERS, HEIGHT_MESSAGE, HEIGHT_RANGE_CM, MEASUREMENTS,
                             SCALE_WEIGHT_MESSAGE, WEIGHT_MESSAGE, WEIGHT_RANGE_KG, WEIGHT_SOURCES)
from service import avatars
from service.schemas import USER_ID, LimitsOut, RangeOut
from service.settings import Settings

STATIC_DIR = Path(__file__).parent / "web"
INDEX = STATIC_DIR / "index.html"
USER_ID_MESSAGE = "use letters, digits and . _ @ - (up to 128, starting with a letter or digit)"


def _range(bounds: tuple[float, float], message: str, **names: str) -> RangeOut:
    lo, hi = bounds
    return RangeOut(min=lo, max=hi, message=message.format(value="{value}", lo=lo, hi=hi, **names))


def limits(settings: Settings) -> LimitsOut:
    return LimitsOut(
        height_cm=_range(HEIGHT_RANGE_CM, HEIGHT_MESSAGE),
        weight_kg=_range(WEIGHT_RANGE_KG, WEIGHT_MESSAGE),
        genders=list(GENDERS), clothing=list(CLOTHING), weight_sources=list(WEIGHT_SOURCES),
        weight_source_message=SCALE_WEIGHT_MESSAGE, user_id_pattern=USER_ID,
        user_id_message=USER_ID_MESSAGE,
        photo_types=list(avatars.PHOTO_TYPES), photo_max_bytes=settings.max_upload_bytes,
        photo_type_message=avatars.PHOTO_TYPE_MESSAGE,
        photo_size_message=avatars.PHOTO_SIZE_MESSAGE.format(limit=settings.max_upload_bytes),
        measurements=list(MEASUREMENTS),
        measurement_cm=_range(avatars.MEASUREMENT_RANGE_CM, avatars.MEASUREMENT_MESSAGE, name="{name}"))

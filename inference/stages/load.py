"""Stage 1, load: decode an untrusted photo into RGB pixels we can trust.

Only JPEG, PNG and WebP are accepted; the pixel count is checked *before* decoding (a
decompression bomb never reaches memory); EXIF orientation is applied so the person stands
upright as the phone showed them; big photos are downscaled to a working size.
"""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from inference.errors import InputError
from inference.types import Photo

ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP"}
DEFAULT_MAX_PIXELS = 50_000_000  # refuse above this (a 50 MP photo is already generous)
DEFAULT_WORK_SIZE = 1280  # longest side the pipeline works at
MIN_SIDE = 64
_EXIF_IFD = 0x8769
_FOCAL_35MM = 0xA405


def load_photo(
    source: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    work_size: int = DEFAULT_WORK_SIZE,
) -> Photo:
    """Decode ``source`` (a path or the file's bytes) → :class:`Photo` at working resolution."""
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"photo not found: {path}", "photo_not_found")
        data = path.read_bytes()
    img = open_checked(data, name, max_pixels)
    # the working size, from the full size as stored (sides swapped below if EXIF turns it)
    width, height = img.size
    scale = work_size / max(width, height)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            focal = _focal_35mm(img)
            if scale <= 0.5 and img.format == "JPEG":
                # the JPEG decoder scales by 1/2, 1/4 or 1/8 in the DCT (a 12 MP photo decodes
                # ~4x faster at 1/2), never below the working size: LANCZOS does the rest
                img.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
            stored = img.size
            img = ImageOps.exif_transpose(img)
            if img.size != stored:  # turned a quarter
                width, height = height, width
            img = img.convert("RGB")
            img.load()
    except _UNREADABLE as exc:
        raise InputError(f"{name} is not a readable image ({exc})", "invalid_image") from exc
    if scale < 1.0:
        img = img.resize((round(width * scale), round(height * scale)), Image.LANCZOS)
    return Photo(image=np.asarray(img, dtype=np.uint8).copy(), focal_35mm=focal, source=name)


# ImportError: Ultralytics patches Image.open to try HEIF plugins on unknown data
_UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
               Image.DecompressionBombWarning, ImportError)


def open_checked(data: bytes, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open the image without decoding its pixels and check its type and size from the header:
    cheap enough for the API's edge (a 50 MP PNG costs kilobytes here, hundreds of MB decoded)."""
    if not data:
        raise InputError(f"{name} is empty", "invalid_image")
    kind = sniff_format(data)
    if kind is None:
        raise InputError(f"{name} is not a readable image (not JPEG, PNG or WebP data)", "invalid_image")
    if kind not in ALLOWED_FORMATS:
        raise InputError(f"{name} is a {kind} image; send a JPEG, PNG or WebP photo", "unsupported_image_type")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except _UNREADABLE as exc:
        raise InputError(f"{name} is not a readable image ({exc})", "invalid_image") from exc
    width, height = img.size
    if img.format not in ALLOWED_FORMATS:
        raise InputError(f"{name} is a {img.format or 'unknown'} image; send a JPEG, PNG or WebP photo",
                         "unsupported_image_type")
    if width * height > max_pixels:
        raise InputError(f"{name} has {width}x{height} = {width * height / 1e6:.1f} MP, over the "
                         f"{max_pixels / 1e6:.0f} MP limit; send a smaller photo", "image_too_large")
    if min(width, height) < MIN_SIDE:
        raise InputError(f"{name} is only {width}x{height} pixels; a full-body photo needs more", "image_too_small")
    return img


def sniff_format(data: bytes) -> str | None:
    """The image format by its magic bytes, checked before any decoder sees the data."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[4:8] == b"ftyp":
        return "HEIF/AVIF"
    return None


def _focal_35mm(img: Image.Image) -> float | None:
    try:
        value = img.getexif().get_ifd(_EXIF_IFD).get(_FOCAL_35MM)
        value = float(value) if value else None
    except Exception:  # malformed EXIF is common and never fatal
        return None
    return value if value and 8.0 <= value <= 600.0 else None

import io

import numpy as np
import pytest
from PIL import Image

from inference.errors import InputError
from inference.stages.load import load_photo


def _jpeg(w=120, h=80, orientation=None, focal35=None) -> bytes:
    img = Image.new("RGB", (w, h), (200, 10, 10))
    img.paste((10, 10, 200), (0, 0, w // 2, h))  # left half blue
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    if focal35:
        exif.get_ifd(0x8769)[0xA405] = focal35
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def test_exif_orientation_is_applied():
    photo = load_photo(_jpeg(120, 80, orientation=6))  # 6 = rotate 90° clockwise to display
    assert photo.image.shape == (120, 80, 3)
    # after the rotation the blue (former left) half is on top
    assert photo.image[10, 40, 2] > 150 and photo.image[110, 40, 0] > 150


def test_focal_length_is_read_from_exif():
    assert load_photo(_jpeg(focal35=26)).focal_35mm == 26.0
    assert load_photo(_jpeg()).focal_35mm is None


def test_big_photos_are_downscaled_to_the_work_size():
    photo = load_photo(_jpeg(2000, 1000), work_size=640)
    assert max(photo.image.shape[:2]) == 640


def test_big_jpegs_decode_scaled_and_keep_their_exif(monkeypatch):
    """A photo over twice the working size is decoded by the JPEG decoder at 1/2, 1/4 or 1/8 (a
    12 MP photo loads ~4x faster), with its orientation and focal length read as before and
    the pixels of a full decode then downscaled, within a few levels."""
    from PIL import ImageOps, JpegImagePlugin

    data = _jpeg(4000, 3000, orientation=6, focal35=28)
    drafts = []
    draft = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda self, mode, size: drafts.append(size) or draft(self, mode, size))
    photo = load_photo(data, work_size=1280)
    assert drafts == [(1280, 960)]  # decoded at 1/2 (2000x1500), never below the working size
    assert photo.focal_35mm == 28.0
    assert photo.image.shape == (1280, 960, 3)  # turned upright, as the full decode
    assert photo.image[10, 480, 2] > 150 and photo.image[1270, 480, 0] > 150  # blue on top
    full = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    full = np.asarray(full.resize((960, 1280), Image.LANCZOS), dtype=np.int16)
    assert np.abs(photo.image.astype(np.int16) - full).mean() < 2.0


def test_photos_under_twice_the_working_size_decode_in_full(monkeypatch):
    from PIL import JpegImagePlugin

    drafts = []
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", lambda self, *a: drafts.append(a))
    assert load_photo(_jpeg(2000, 1000), work_size=1280).image.shape == (640, 1280, 3)
    assert drafts == []


@pytest.mark.parametrize("data", [b"", b"not an image at all", _jpeg()[:200]])
def test_corrupt_files_are_refused(data):
    with pytest.raises(InputError) as err:
        load_photo(data)
    assert err.value.code == "invalid_image"


def test_other_image_types_are_refused():
    buf = io.BytesIO()
    Image.new("RGB", (100, 100)).save(buf, "GIF")
    with pytest.raises(InputError) as err:
        load_photo(buf.getvalue())
    assert err.value.code == "unsupported_image_type"


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(InputError) as err:
        load_photo(_jpeg(400, 300), max_pixels=100_000)
    assert err.value.code == "image_too_large" and "MP" in str(err.value)


def test_missing_file():
    with pytest.raises(InputError) as err:
        load_photo("/nonexistent/photo.jpg")
    assert err.value.code == "photo_not_found"


def test_png_and_webp_are_accepted():
    for fmt in ("PNG", "WEBP"):
        buf = io.BytesIO()
        Image.new("RGB", (100, 90), (1, 2, 3)).save(buf, fmt)
        assert load_photo(buf.getvalue()).image.shape == (90, 100, 3)
        assert np.all(load_photo(buf.getvalue()).image[0, 0] <= 5)

"""Plain data passed between stages.

Conventions used everywhere in ``inference``:
- body ("canonical") frame: metres, +Y up, the body faces +Z, the person's left is +X,
  the soles rest on y = 0 in the rest pose;
- camera frame: OpenCV (x right, y down, z forward); ``x_cam = R @ x_body + t``;
- images: ``uint8`` RGB arrays (H, W, 3); keypoints in pixels (x, y, confidence), COCO-17 order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

GENDERS = ("male", "female", "other")
# what the person wears in the photo: "regular" everyday clothes (the default; the fit expects them to
# stand a little off the body), "fitted" skin-tight ones (sportswear, a scan suit: the outline is the
# body's)
CLOTHING = ("regular", "fitted")
# where the weight comes from: "reported" (the default: the person's own figure; people misreport
# theirs by a few kg, so the fit lets the photo pull against it) or "scale" (weighed for this photo,
# in light clothes: the fit holds the body's mass to it closely)
WEIGHT_SOURCES = ("reported", "scale")
HEIGHT_RANGE_CM = (50.0, 250.0)
WEIGHT_RANGE_KG = (20.0, 300.0)
# the messages for values outside those ranges (the CLI, the worker and the web page say the same)
HEIGHT_MESSAGE = "height {value} cm is outside {lo:.0f}-{hi:.0f} cm"
WEIGHT_MESSAGE = "weight {value} kg is outside {lo:.0f}-{hi:.0f} kg"
SCALE_WEIGHT_MESSAGE = "weight source 'scale' needs a weight"

# what `measure` reports, in cm (definitions in inference/stages/measure.py and the README)
MEASUREMENTS = (
    "height", "chest", "waist", "hip", "neck", "shoulder_width", "arm_length", "inseam",
    "thigh", "upper_arm",
)

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# +1 for the body's left, -1 for its right, 0 on the mid-line (left is +X in the body frame)
COCO_SIDE = tuple(1.0 if n.startswith("left_") else -1.0 if n.startswith("right_") else 0.0
                  for n in COCO_KEYPOINTS)


@dataclass(frozen=True)
class Subject:
    """What the user typed about the person in the photo."""

    height_cm: float
    gender: str = "other"
    weight_kg: float | None = None
    clothing: str = "regular"
    weight_source: str = "reported"

    def validate(self) -> "Subject":
        from inference.errors import InputError

        lo, hi = HEIGHT_RANGE_CM
        if not (lo <= float(self.height_cm) <= hi):
            raise InputError(HEIGHT_MESSAGE.format(value=self.height_cm, lo=lo, hi=hi), "invalid_height")
        if self.weight_kg is not None:
            lo, hi = WEIGHT_RANGE_KG
            if not (lo <= float(self.weight_kg) <= hi):
                raise InputError(WEIGHT_MESSAGE.format(value=self.weight_kg, lo=lo, hi=hi), "invalid_weight")
        if self.gender not in GENDERS:
            raise InputError(
                f"gender {self.gender!r} is not one of {', '.join(GENDERS)}", "invalid_gender"
            )
        if self.clothing not in CLOTHING:
            raise InputError(
                f"clothing {self.clothing!r} is not one of {', '.join(CLOTHING)}", "invalid_clothing"
            )
        if self.weight_source not in WEIGHT_SOURCES:
            raise InputError(f"weight source {self.weight_source!r} is not one of {', '.join(WEIGHT_SOURCES)}",
                             "invalid_weight_source")
        if self.weight_source == "scale" and self.weight_kg is None:
            raise InputError(SCALE_WEIGHT_MESSAGE, "invalid_weight_source")
        return self


def focal_px_from_35mm(focal_35mm: float, width: int, height: int) -> float:
    """35 mm-equivalent focal length → pixels (the 36×24 mm frame's 43.27 mm diagonal)."""
    return float(focal_35mm) * float(np.hypot(width, height)) / float(np.hypot(36.0, 24.0))


@dataclass
class Camera:
    """Pinhole camera; ``R``, ``t`` map body-frame points into the OpenCV camera frame."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    R: np.ndarray = field(default_factory=lambda: np.diag([1.0, -1.0, -1.0]))
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) body-frame points → (N, 2) pixels."""
        p = points @ self.R.T + self.t
        return np.stack(
            [self.fx * p[:, 0] / p[:, 2] + self.cx, self.fy * p[:, 1] / p[:, 2] + self.cy], axis=1
        )

    def to_dict(self) -> dict:
        return {
            "fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy,
            "width": self.width, "height": self.height,
            "R": np.asarray(self.R).tolist(), "t": np.asarray(self.t).tolist(),
        }


@dataclass
class Detection:
    """One person found by the detector."""

    box: np.ndarray  # (4,) x1, y1, x2, y2 pixels
    score: float
    keypoints: np.ndarray  # (17, 3) x, y, confidence


@dataclass
class Photo:
    """A decoded photo: RGB pixels plus what EXIF says about the lens (if anything)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, EXIF orientation applied
    focal_35mm: float | None = None  # 35 mm-equivalent focal length from EXIF
    source: str = ""

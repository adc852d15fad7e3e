"""Stage 2, detect: people and their 17 COCO keypoints with Ultralytics YOLO pose.

The subject is the largest confident person. A photo whose subject is cut off (no head or no
ankles inside the frame) is refused: a body model fitted to half a body invents the rest.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from inference.errors import InputError
from inference.types import Detection

PERSON_SCORE = 0.4  # a detection below this is not "a person"
KEYPOINT_SEEN = 0.5  # a keypoint at or above this confidence is in the photo
HEAD = (0, 1, 2, 3, 4)
ANKLES = (15, 16)


class Detector:
    """YOLO pose model, loaded once."""

    def __init__(self, weights: Path, device: str = "cpu"):
        from inference.compat import ensure_torchvision_nms

        ensure_torchvision_nms()
        from ultralytics import YOLO

        self.weights = Path(weights)
        self.device = device
        self.model = YOLO(str(self.weights), task="pose")
        self.name = self.weights.stem

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """RGB images → for each, every person found (unsorted)."""
        bgr = [np.ascontiguousarray(img[:, :, ::-1]) for img in images]
        results = self.model.predict(bgr, verbose=False, device=self.device, conf=0.25)
        out: list[list[Detection]] = []
        for res in results:
            people: list[Detection] = []
            if res.boxes is not None and res.keypoints is not None and len(res.boxes):
                boxes = res.boxes.xyxy.cpu().numpy()
                scores = res.boxes.conf.cpu().numpy()
                kps = res.keypoints.data.cpu().numpy()
                for box, score, kp in zip(boxes, scores, kps):
                    people.append(Detection(box=box.astype(np.float64), score=float(score),
                                            keypoints=kp.astype(np.float64)))
            out.append(people)
        return out


# (left, right) COCO pairs whose order across the image a frontal photo fixes: knees, ankles,
# elbows, wrists
SIDE_PAIRS = ((13, 14), (15, 16), (7, 8), (9, 10))


def crossed_sides(keypoints: np.ndarray, tolerance_px: float, min_conf: float = 0.3) -> list[int]:
    """Indices of the keypoint pairs a frontal photo cannot show: the person's left on the
    image's left of their right by more than ``tolerance_px``. A small pose detector swaps or
    merges the legs on busy backgrounds; legs or arms really crossed in a photo for an avatar
    are rarer than that, so both keypoints of such a pair are better not trusted."""
    out = []
    for left, right in SIDE_PAIRS:
        if keypoints[left, 2] >= min_conf and keypoints[right, 2] >= min_conf \
                and keypoints[left, 0] < keypoints[right, 0] - tolerance_px:
            out += [left, right]
    return out


def choose_subject(people: list[Detection], image_shape: tuple[int, ...]) -> Detection:
    """The largest confident person, refused if no one is found or the body is cut off."""
    confident = [p for p in people if p.score >= PERSON_SCORE]
    if not confident:
        raise InputError("no person found in the photo; send a full-body photo of one person",
                         "no_person")
    subject = max(confident, key=lambda p: (p.box[2] - p.box[0]) * (p.box[3] - p.box[1]))
    check_full_body(subject, image_shape)
    return subject


def check_full_body(person: Detection, image_shape: tuple[int, ...]) -> None:
    h, w = image_shape[:2]
    kp = person.keypoints
    margin = 0.005 * max(h, w)

    def seen(i: int) -> bool:
        x, y, c = kp[i]
        return c >= KEYPOINT_SEEN and margin <= x <= w - margin and margin <= y <= h - margin

    missing = []
    if not any(seen(i) for i in HEAD):
        missing.append("head")
    if not all(seen(i) for i in ANKLES) and not (
        any(seen(i) for i in ANKLES) and min(kp[i][2] for i in ANKLES) >= 0.2
    ):
        missing.append("feet")
    if person.box[3] >= h - 1:
        # the box touches the bottom edge: feet are at or past the frame
        if "feet" not in missing:
            missing.append("feet")
    if missing:
        raise InputError(
            f"the body is cut off: {' and '.join(missing)} not in the photo; send a full-body "
            "photo showing the person from head to feet", "body_truncated",
        )

"""Stage 2, detect: people and their 17 COCO keypoints with Ultralytics YOLO pose.

The subject is the largest confident person. A photo whose subject is cut off (no head or no
ankles inside the frame) is refused: a body model fitted to half a body invents the rest.
A photo whose subject's legs are read close together (or crossed) is read again mirrored:
where the mirrored reading has the legs clearly further apart, its legs are taken
(``merge_mirrored``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from inference.errors import InputError
from inference.types import COCO_KEYPOINTS, Detection

PERSON_SCORE = 0.4  # a detection below this is not "a person"
KEYPOINT_SEEN = 0.5  # a keypoint at or above this confidence is in the photo
HEAD = (0, 1, 2, 3, 4)
ANKLES = (15, 16)
# COCO keypoints of the mirrored image: left and right swap
MIRROR = tuple(COCO_KEYPOINTS.index(n.replace("left_", "@").replace("right_", "left_").replace("@", "right_"))
               for n in COCO_KEYPOINTS)
MIRROR_MIN_IOU = 0.5  # a detection in the mirrored photo is the same person's above this box IoU
LEGS = [13, 14, 15, 16]  # knees, ankles
LEGS_WIDER = 0.3  # torso lengths (knees' and ankles' spreads summed) for the mirrored legs to win
# a subject's legs this far apart (torso lengths, ``legs_spread``) are not read again mirrored: on
# 96 wide dev photos the readings whose legs the mirrored one replaced had -0.6 to 1.1, the others
# 1.34-2.42 (or crossed in both readings)
LEGS_APART = 1.5


class Detector:
    """YOLO pose model, loaded once."""

    def __init__(self, weights: Path, device: str = "cpu", mirror: bool = True):
        from inference.compat import ensure_torchvision_nms

        ensure_torchvision_nms()
        from ultralytics import YOLO

        self.weights = Path(weights)
        self.device = device
        self.model = YOLO(str(self.weights), task="pose")
        self.name = self.weights.stem
        self.mirror = mirror

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """RGB images → for each, every person found (unsorted). With ``mirror``, a photo whose
        subject (the largest confident person) has the legs read close together
        (``LEGS_APART``) is read again mirrored, and a person's legs may come from that reading
        (``merge_mirrored``)."""
        bgr = [np.ascontiguousarray(img[:, :, ::-1]) for img in images]
        out = self._read(bgr)
        if not self.mirror:
            return out
        again = [i for i, people in enumerate(out) if (s := largest_confident(people)) and legs_close(s)]
        if again:
            for i, mirrored in zip(again, self._read([np.ascontiguousarray(bgr[i][:, ::-1]) for i in again])):
                out[i] = merge_mirrored(out[i], mirrored, images[i].shape[1])
        return out

    def _read(self, bgr: list[np.ndarray]) -> list[list[Detection]]:
        return self._people(self.model.predict(bgr, verbose=False, device=self.device, conf=0.25))

    @staticmethod
    def _people(results) -> list[list[Detection]]:
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


def unmirror(person: Detection, width: int) -> Detection:
    """A detection in the mirrored photo (``width`` pixels wide) in the photo's coordinates."""
    x1, y1, x2, y2 = person.box
    kp = person.keypoints[list(MIRROR)].copy()
    kp[:, 0] = width - kp[:, 0]
    return Detection(box=np.array([width - x2, y1, width - x1, y2], dtype=np.float64),
                     score=person.score, keypoints=kp)


def merge_mirrored(people: list[Detection], mirrored: list[Detection], width: int) -> list[Detection]:
    """Each person of the photo with the legs of the same person as read in the mirrored photo
    where that reading has them clearly further apart (``LEGS_WIDER``). A small pose detector's
    errors are not mirror-symmetric: on a busy background it puts both legs in the gap between
    them (or swaps them) in one reading and not in the other, and it does not invent a spread
    that is not there (on 120 dev photos the two readings differed that much on 5, and the wider
    one was nearer the truth on all 5). Both readings must see the shoulders, hips, knees and
    ankles (``KEYPOINT_SEEN``). Everything else is the photo's own reading."""
    import torch

    from inference.compat import box_iou

    back = [unmirror(m, width) for m in mirrored]
    if not people or not back:
        return list(people)
    iou = box_iou(torch.as_tensor(np.stack([p.box for p in people])),
                  torch.as_tensor(np.stack([m.box for m in back]))).numpy()
    out = []
    for p, row in zip(people, iou):
        best = back[int(row.argmax())]
        if row.max() < MIRROR_MIN_IOU:
            out.append(p)
            continue
        ours, theirs = legs_spread(p.keypoints), legs_spread(best.keypoints)
        if np.isfinite(ours) and np.isfinite(theirs) and theirs > ours + LEGS_WIDER:
            kp = p.keypoints.copy()
            kp[LEGS] = best.keypoints[LEGS]
            p = Detection(box=p.box, score=p.score, keypoints=kp)
        out.append(p)
    return out


def legs_close(person: Detection) -> bool:
    """Whether a person's legs are read close together or crossed, so a mirrored reading could
    place them better (``merge_mirrored`` takes its legs only where both readings see them all)."""
    spread = legs_spread(person.keypoints)
    return bool(np.isfinite(spread) and spread < LEGS_APART)


def legs_spread(kp: np.ndarray) -> float:
    """How far apart the knees and the ankles are across the image (the person's left minus
    their right, so negative when crossed), in torso lengths; -inf when not all seen."""
    need = [5, 6, 11, 12, *LEGS]
    if min(kp[need, 2]) < KEYPOINT_SEEN:
        return float("-inf")
    torso = abs(0.5 * (kp[11, 1] + kp[12, 1]) - 0.5 * (kp[5, 1] + kp[6, 1]))
    return float((kp[13, 0] - kp[14, 0] + kp[15, 0] - kp[16, 0]) / max(torso, 1.0))


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
    subject = largest_confident(people)
    if subject is None:
        raise InputError("no person found in the photo; send a full-body photo of one person",
                         "no_person")
    check_full_body(subject, image_shape)
    return subject


def largest_confident(people: list[Detection]) -> Detection | None:
    confident = [p for p in people if p.score >= PERSON_SCORE]
    return max(confident, key=lambda p: (p.box[2] - p.box[0]) * (p.box[3] - p.box[1])) if confident else None


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

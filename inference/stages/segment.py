"""Stage 3, segment: the subject's silhouette (H, W) bool.

With a YOLO segmentation weight (``weights/*-seg.pt``) the person mask that best overlaps the
subject's box is used. Otherwise OpenCV GrabCut runs on a crop around the subject, seeded by the
person mask of MediaPipe's pose landmark model (``PersonMask``: inside its outline surely person,
beyond a band around it surely background, GrabCut's colours decide the band), or, where that
model finds no person, by the box (outside = background) and the skeleton drawn from the
keypoints (= surely person).
"""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from inference.stages.detect import crossed_sides, legs_spread
from inference.types import Detection

SKELETON = (
    (5, 7), (7, 9), (6, 8), (8, 10), (11, 12),
    (11, 13), (13, 15), (12, 14), (14, 16),
)
GRABCUT_SIDE = 540  # GrabCut works on a crop scaled to this longest side (speed vs edge accuracy)
GRABCUT_ITERS = 4
# of the person's box height: nothing of the person lies further from the skeleton (a hand
# beyond the wrist ~0.11 of the stature, a heavy hip beyond the hip joint ~0.09, loose clothes)
ENVELOPE = 0.14
# below the hips less than this share of the person's area above them: GrabCut lost the legs
LEGS_LOST = 0.35
THIN_LINE = 0.005  # of the person's box height: thinner foreground is dropped (~5 px at 1000)
# GrabCut's colour models can go wrong as a whole: a background colour that the fat skeleton's
# lines also cover (beside thin legs and arms) is learnt as the person's, and then all of it
# within the envelope is taken (a blob around the person, or a background object joined to the
# trunk). Above the knees and away from the hands, nothing of a person lies further than RING
# (of the box height) from the skeleton: where more than RING_MAX of that ring came out as
# foreground, GrabCut runs again seeded by the thin skeleton alone, and the run that took less
# of the ring is kept
RING = 0.10
RING_MAX = 0.05
# above the shoulders a person is the head and the neck (and raised arms): what lies above the
# shoulders' line by more than SHOULDER_TOP (of the box height; the trapezius rises above the
# shoulder joints toward the neck) and further than ABOVE_ROOM from the head's oval, the neck
# and the arms is surely background (a dark wall beside the head was learnt as a dark top's
# colour and taken down the trunk's side)
SHOULDER_TOP = 0.05
ABOVE_ROOM = 0.06
# between the legs, below the crotch (CROTCH of the way from the hips down to the ankles):
# further than LEG_ROOM (of the box height, by the share of that way) from both legs' lines is
# surely background. GrabCut took the gap between legs apart for trousers where the background
# there had a colour the person's seeds also covered. On 144 dev renders (clothes on) a leg's
# inner half-width from its line was within 0.08 at the thigh and 0.04 at the ankle in 95 % of
# rows (0.10 and 0.05 at the worst, a keypoint off the leg's middle); these values moved 15 of
# those masks, each to a better IoU with the true silhouette (0.6 of them moved more, some worse)
LEG_ROOM = ((0.0, 0.09), (0.4, 0.09), (0.7, 0.075), (1.0, 0.0525))
CROTCH = 0.12
HAND = 0.13  # of the box height around each wrist: the hand, not the ring
LEGS_TOGETHER = 0.8  # torso lengths (``legs_spread``): legs read closer are not drawn as seeds
# the person mask (``PersonMask``): the landmark model reads a square of PERSON_ROI times the
# box's longer side around the box's centre, at 256 px (a pixel there ~0.5 % of the person's
# height); within PERSON_BAND (of the box height) either side of its outline GrabCut decides by
# the colours (in a prototype on 72 full-size dev photos, bands of 0.01-0.03 gave the masks the
# same mean IoU to 0.0003); a model that finds no person (presence below PERSON_PRESENT) or less
# than PERSON_MIN_AREA of the box leaves the mask to the keypoints' seeds
PERSON_ROI = 1.35
PERSON_BAND = 0.02
PERSON_PRESENT = 0.5
PERSON_MIN_AREA = 0.15


class PersonMask:
    """The segmentation output of MediaPipe Pose's landmark model (BlazePose GHUM, "full",
    ``pose_landmark_full.tflite``) run on a square around the subject's box with LiteRT: a
    person-probability map of 256 x 256 over that square."""

    SIDE = 256

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self._it = Interpreter(model_path=str(path), num_threads=1)
        self._it.allocate_tensors()
        self._input = self._it.get_input_details()[0]["index"]
        outs = {tuple(d["shape"]): d["index"] for d in self._it.get_output_details()}
        self._seg = outs[(1, self.SIDE, self.SIDE, 1)]
        self._presence = outs[(1, 1)]
        self._lock = threading.Lock()  # one interpreter: one invocation at a time

    def __call__(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(probability (256, 256) float32, the (2, 3) affine from the image (RGB, as the
        pipeline holds photos) to that square), or None where the model finds no person there."""
        x1, y1, x2, y2 = (float(v) for v in box)
        side = PERSON_ROI * max(x2 - x1, y2 - y1, 1.0)
        a = self.SIDE / side
        m = np.array([[a, 0.0, self.SIDE / 2 - a * 0.5 * (x1 + x2)],
                      [0.0, a, self.SIDE / 2 - a * 0.5 * (y1 + y2)]], np.float32)
        square = cv2.warpAffine(np.ascontiguousarray(image), m, (self.SIDE, self.SIDE),
                                flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT)
        with self._lock:
            self._it.set_tensor(self._input, (square.astype(np.float32) / 255.0)[None])
            self._it.invoke()
            logits = self._it.get_tensor(self._seg)[0, :, :, 0].copy()
            presence = float(self._it.get_tensor(self._presence)[0, 0])
        if presence < PERSON_PRESENT:
            return None
        prob = 1.0 / (1.0 + np.exp(-np.clip(logits, -50.0, 50.0)))
        return prob.astype(np.float32), m


def legs_together(kp: np.ndarray) -> bool:
    """Knees and ankles read (all seen, not crossed) closer than ``LEGS_TOGETHER``."""
    return bool(0.0 <= legs_spread(kp) < LEGS_TOGETHER)


def legs_from_mask(kp: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """Keypoints (17, 3) with the knees and the ankles moved across to the middles of the two
    legs the silhouette shows at their rows, where the detector read them together
    (``legs_together``) but the mask has the legs apart there; None where it does not (feet
    really together, or no clear pair of legs at a row). The detector put both legs in the gap
    between them in the photo's reading and the mirrored one: the fit, started and pulled there
    by those keypoints, sat its legs in the gap while the person's showed on both sides."""
    if not legs_together(kp):
        return None
    out = kp.copy()
    h = mask.shape[0]
    hip_y = 0.5 * (kp[11, 1] + kp[12, 1])
    for left, right in ((13, 14), (15, 16)):
        y = int(round(0.5 * (kp[left, 1] + kp[right, 1])))
        if not hip_y < y < h:
            return None
        band = mask[max(0, y - 2):min(h, y + 3)].mean(0) >= 0.5  # a few rows: a ragged edge is not a gap
        edges = np.flatnonzero(np.diff(np.concatenate([[0], band.astype(np.int8), [0]])))
        runs = sorted(zip(edges[::2], edges[1::2]), key=lambda r: r[1] - r[0], reverse=True)[:2]
        if len(runs) < 2 or min(b - a for a, b in runs) < 3:
            return None
        (a0, b0), (a1, b1) = sorted(runs)
        # a frontal photo: the person's right leg on the image's left
        out[right, 0], out[left, 0] = 0.5 * (a0 + b0 - 1), 0.5 * (a1 + b1 - 1)
    return out if legs_spread(out) >= LEGS_TOGETHER else None


class Segmenter:
    def __init__(self, seg_weights: Path | None = None, device: str = "cpu", person_weights: Path | None = None):
        self.model = None
        self.device = device
        self.person = PersonMask(person_weights) if person_weights is not None else None
        self.name = "grabcut+blazepose" if self.person is not None else "grabcut"
        if seg_weights is not None:
            from inference.compat import ensure_torchvision_nms

            ensure_torchvision_nms()
            from ultralytics import YOLO

            self.model = YOLO(str(seg_weights), task="segment")
            self.name = Path(seg_weights).stem

    def segment(self, image: np.ndarray, subject: Detection) -> np.ndarray:
        if self.model is not None:
            mask = self._yolo(image, subject)
            if mask is not None:
                return mask
        return grabcut_person(image, subject, self.person)

    def _yolo(self, image: np.ndarray, subject: Detection) -> np.ndarray | None:
        res = self.model.predict(np.ascontiguousarray(image[:, :, ::-1]), verbose=False,
                                 device=self.device, classes=[0], retina_masks=True)[0]
        if res.masks is None or not len(res.masks):
            return None
        masks = res.masks.data.cpu().numpy() > 0.5
        x1, y1, x2, y2 = subject.box.astype(int)
        box = np.zeros(image.shape[:2], bool)
        box[max(y1, 0):y2, max(x1, 0):x2] = True
        iou = [(m & box).sum() / max((m | box).sum(), 1) for m in masks]
        return masks[int(np.argmax(iou))]


def grabcut_person(image: np.ndarray, subject: Detection, person: PersonMask | None = None) -> np.ndarray:
    """``image`` RGB."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = subject.box
    pad_x, pad_y = 0.12 * (x2 - x1), 0.06 * (y2 - y1)
    cx1, cy1 = int(max(0, x1 - pad_x)), int(max(0, y1 - pad_y))
    cx2, cy2 = int(min(w, x2 + pad_x)), int(min(h, y2 + pad_y))
    crop = image[cy1:cy2, cx1:cx2]
    s = min(1.0, GRABCUT_SIDE / max(crop.shape[:2]))
    small = cv2.resize(crop, (max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s))),
                       interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    if person is not None:
        seeds = _person_seeds(person(image, subject.box), s, (cx1, cy1), (sw, sh), ((x2 - x1) * s, (y2 - y1) * s))
        if seeds is not None:
            fg = cv2.morphologyEx(_grabcut(small, seeds), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
            up = cv2.resize(fg * 255, (cx2 - cx1, cy2 - cy1), interpolation=cv2.INTER_LINEAR)
            full = np.zeros((h, w), np.uint8)
            full[cy1:cy2, cx1:cx2] = up > 127
            return _largest_component(full) > 0
    mask = np.full((sh, sw), cv2.GC_BGD, np.uint8)
    bx1, by1 = round((x1 - cx1) * s), round((y1 - cy1) * s)
    bx2, by2 = round((x2 - cx1) * s), round((y2 - cy1) * s)
    mask[max(by1, 0):by2, max(bx1, 0):bx2] = cv2.GC_PR_BGD
    kp = subject.keypoints.copy()
    kp[:, 0] = (kp[:, 0] - cx1) * s
    kp[:, 1] = (kp[:, 1] - cy1) * s
    body_h = max(by2 - by1, 1)
    # limbs the detector got the wrong way round are not drawn: their lines would claim the
    # background between the legs as surely person
    crossed = crossed_sides(kp, 0.02 * body_h)
    if legs_together(kp):
        # knees and ankles read almost on one line: both legs put in the gap between them (in
        # the photo's reading and the mirrored one), or feet really together, where GrabCut
        # finds the legs by their colours without the lines
        crossed = sorted(set(crossed) | {13, 14, 15, 16})
    seen = kp.copy()
    kp[crossed, 2] = 0.0
    # what lies further from the whole skeleton than any part of a person can (a hand beyond
    # the wrist, a belly, loose clothes) is surely background: a background object behind the
    # person then teaches GrabCut its colour where it shows beside the body, and is not taken
    # for the person where it fills the gap between an arm and the trunk
    dist = _skeleton_distance(kp, mask.shape, legs=seen)
    far = None if dist is None or ENVELOPE * body_h < 2 else dist > ENVELOPE * body_h
    if far is not None:
        far |= _above_shoulders(kp, mask.shape, body_h) | _between_legs(kp, mask.shape, body_h)
    box_seeds = mask.copy()
    seeds = _seeds(box_seeds, kp, body_h, far, fat=True)
    mask = seeds.copy()
    fg = _grabcut(small, mask)
    if dist is not None and (kp[13:17, 2] >= 0.3).all():
        # (legs not drawn: too little is surely person for a run seeded by the thin skeleton)
        ring = _ring(dist, kp, body_h) & (seeds != cv2.GC_BGD)
        taken = fg[ring].mean() if ring.any() else 0.0
        if taken > RING_MAX:
            thin = _seeds(box_seeds, kp, body_h, far, fat=False)
            fg_thin = _grabcut(small, thin.copy())
            if fg_thin[ring].mean() < taken:
                seeds, fg = thin, fg_thin
    if {13, 15} & set(crossed) and min(kp[11, 2], kp[12, 2]) >= 0.3:
        # the legs were not drawn (the detector put them in the gap between them): where GrabCut
        # then lost them to a background of similar colours, it runs again with the box below
        # the hips as probably person, so it learns the trousers' colours
        hips = kp[[11, 12], :2]
        top = int(round(hips[:, 1].mean()))
        if fg[top:].sum() < LEGS_LOST * fg[:top].sum():
            mid, half = hips[:, 0].mean(), max(abs(hips[0, 0] - hips[1, 0]), 0.08 * body_h)
            legs = np.array([[mid - half, top], [mid + half, top], [bx2, by2], [bx1, by2]])
            region = np.zeros_like(seeds)
            cv2.fillConvexPoly(region, np.round(legs).astype(np.int32), 1)
            seeds[(region > 0) & (seeds == cv2.GC_PR_BGD)] = cv2.GC_PR_FGD
            fg = _grabcut(small, seeds)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    # thin lines of background that match the person's colours (a wall's edge against the
    # floor, a pole) would join the body and bend the fit's outline toward them: opened away at
    # full resolution, with a kernel that follows the person's size in the photo (fingers are
    # thicker); on the crop with a kernel's margin of zeros, as on the whole photo, but cheaper
    k = max(3, int(round(THIN_LINE * (y2 - y1))) | 1)
    ox1, oy1, ox2, oy2 = max(0, cx1 - k), max(0, cy1 - k), min(w, cx2 + k), min(h, cy2 + k)
    region = np.zeros((oy2 - oy1, ox2 - ox1), np.uint8)
    up = cv2.resize(fg * 255, (cx2 - cx1, cy2 - cy1), interpolation=cv2.INTER_LINEAR)
    region[cy1 - oy1:cy2 - oy1, cx1 - ox1:cx2 - ox1] = up > 127
    region = cv2.morphologyEx(region, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    full = np.zeros((h, w), bool)
    full[oy1:oy2, ox1:ox2] = _largest_component(region) > 0
    return full


ARMS = {(5, 7), (7, 9), (6, 8), (8, 10)}


def _person_seeds(found: tuple[np.ndarray, np.ndarray] | None, s: float, origin: tuple[int, int],
                  size: tuple[int, int], box: tuple[float, float]) -> np.ndarray | None:
    """GrabCut's seeds on the crop (scale ``s``, top-left ``origin`` in the photo, ``size`` (w, h))
    from the person mask: surely person inside its outline by ``PERSON_BAND``, surely background
    beyond it by as much, probably either side between; None where the mask is missing or too
    small for the subject's ``box`` ((w, h) on the crop; ``PERSON_MIN_AREA``)."""
    if found is None:
        return None
    prob, m = found
    # crop pixel → photo (x / s + origin) → the model's square (m)
    a = m[:, :2] / s
    b = m[:, :2] @ np.asarray(origin, np.float32) + m[:, 2]
    to_square = np.hstack([a, b[:, None]]).astype(np.float32)
    p = cv2.warpAffine(prob, to_square, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    fg = (p >= 0.5).astype(np.uint8)
    if fg.sum() < PERSON_MIN_AREA * box[0] * box[1]:
        return None
    k = max(1, int(round(PERSON_BAND * box[1])))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    seeds = np.full(fg.shape, cv2.GC_BGD, np.uint8)
    seeds[cv2.dilate(fg, disc) > 0] = cv2.GC_PR_BGD
    seeds[fg > 0] = cv2.GC_PR_FGD
    seeds[cv2.erode(fg, disc) > 0] = cv2.GC_FGD
    return seeds


def _seeds(box_seeds: np.ndarray, kp: np.ndarray, body_h: int, far: np.ndarray | None, fat: bool) -> np.ndarray:
    """GrabCut's seeds: ``box_seeds`` (background outside the box, probably background in it),
    the head's oval and a fat skeleton as probably person (with ``fat``), a thin one as surely
    person, and ``far`` (beyond the envelope) as surely background."""
    mask = box_seeds.copy()
    # a fat skeleton = probably person, a thin one = surely person; limbs as thick as limbs are
    # (a fatter arm line would claim the background between the arm and the torso), and the
    # head's oval (else dark hair can go to the background, and the top of the head with it)
    if fat:
        _draw_skeleton(mask, kp, max(2, int(0.05 * body_h)), max(2, int(0.03 * body_h)), cv2.GC_PR_FGD)
    _draw_head(mask, kp, 0.075 * body_h, cv2.GC_PR_FGD)
    _draw_skeleton(mask, kp, max(1, int(0.015 * body_h)), max(1, int(0.012 * body_h)), cv2.GC_FGD)
    if far is not None:
        mask[far & (mask == cv2.GC_PR_BGD)] = cv2.GC_BGD
    return mask


def _above_shoulders(kp: np.ndarray, shape: tuple[int, int], body_h: int) -> np.ndarray:
    """(H, W) bool: above the shoulders' line by more than ``SHOULDER_TOP`` and further than
    ``ABOVE_ROOM`` from the head's oval, the neck and the arms (of the box height)."""
    h, w = shape
    upper = np.zeros(shape, np.uint8)
    _draw_head(upper, kp, 0.075 * body_h, 1)
    mid = kp[[5, 6], :2].mean(0)
    face = kp[:5][kp[:5, 2] >= 0.3, :2].mean(0)
    cv2.line(upper, (int(round(mid[0])), int(round(mid[1]))), (int(round(face[0])), int(round(face[1]))), 1, 1)
    for a, b in ARMS:
        cv2.line(upper, (int(round(kp[a, 0])), int(round(kp[a, 1]))), (int(round(kp[b, 0])), int(round(kp[b, 1]))), 1, 1)
    room = cv2.distanceTransform((upper == 0).astype(np.uint8), cv2.DIST_L2, 5) > ABOVE_ROOM * body_h
    (x5, y5), (x6, y6) = kp[5, :2], kp[6, :2]
    xs = np.arange(w, dtype=np.float64)
    slope = (y6 - y5) / (x6 - x5) if abs(x6 - x5) > 1e-6 else 0.0
    line = y5 + slope * (xs - x5) - SHOULDER_TOP * body_h  # (W,) the line's row at each column
    above = np.arange(h, dtype=np.float64)[:, None] < line[None, :]
    return above & room


def _between_legs(kp: np.ndarray, shape: tuple[int, int], body_h: int) -> np.ndarray:
    """(H, W) bool: below the crotch, between the legs' lines (hip, knee, ankle) and further
    than ``LEG_ROOM`` from both, away from the hands."""
    out = np.zeros(shape, bool)
    left, right = kp[[11, 13, 15], :2], kp[[12, 14, 16], :2]
    hip_y, ankle_y = 0.5 * (left[0, 1] + right[0, 1]), 0.5 * (left[2, 1] + right[2, 1])
    if not (np.diff(left[:, 1]) > 0).all() or not (np.diff(right[:, 1]) > 0).all() or ankle_y - hip_y < 4:
        return out  # not standing legs
    y0 = int(np.ceil(hip_y + CROTCH * (ankle_y - hip_y)))
    ys = np.arange(max(y0, 0), min(int(ankle_y) + 1, shape[0]))
    if not len(ys):
        return out
    xl, xr = np.interp(ys, left[:, 1], left[:, 0]), np.interp(ys, right[:, 1], right[:, 0])
    lo, hi = np.minimum(xl, xr), np.maximum(xl, xr)
    t = (ys - hip_y) / (ankle_y - hip_y)
    room = np.interp(t, *zip(*LEG_ROOM)) * body_h
    xs = np.arange(shape[1])[None, :]
    out[ys] = (xs > (lo + room)[:, None]) & (xs < (hi - room)[:, None])
    return out & ~_hands(kp, shape, body_h)


def _ring(dist: np.ndarray, kp: np.ndarray, body_h: int) -> np.ndarray:
    """(H, W) bool: where no person lies (``RING``): far from the skeleton, above the knees, away
    from the hands."""
    ring = dist > RING * body_h
    ring[max(0, int(min(kp[13, 1], kp[14, 1]))):] = False
    return ring & ~_hands(kp, ring.shape, body_h)


def _hands(kp: np.ndarray, shape: tuple[int, int], body_h: int) -> np.ndarray:
    """(H, W) bool: within ``HAND`` (of the box height) of either wrist."""
    hands = np.zeros(shape, np.uint8)
    for w in (9, 10):
        cv2.circle(hands, (int(round(kp[w, 0])), int(round(kp[w, 1]))), int(HAND * body_h), 1, -1)
    return hands > 0


def _grabcut(small: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """GrabCut from the seeded ``mask`` (changed in place) → (h, w) uint8 foreground."""
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(np.ascontiguousarray(small[:, :, ::-1]), mask, None, bgd, fgd, GRABCUT_ITERS,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        pass  # degenerate colour models: keep the seeded mask
    return np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)


def _skeleton_distance(kp: np.ndarray, shape: tuple[int, int], legs: np.ndarray | None = None) -> np.ndarray | None:
    """(H, W) float: each pixel's distance from the skeleton (limbs, the torso's quadrilateral,
    the face); None unless every limb and torso keypoint and a face keypoint was seen (a limb
    not drawn would be cut off). ``legs``: the keypoints as read, before knees and ankles read
    with their sides swapped or together were taken out of ``kp``: such legs count by the
    polygon around the hips, knees and ankles (whichever side is which, the legs lie in it)."""
    hidden = [i for i in range(13, 17) if kp[i, 2] < 0.3]
    if hidden and legs is not None and (legs[11:17, 2] >= 0.3).all():
        kp = kp.copy()
        kp[hidden, 2] = legs[hidden, 2]
        hull = cv2.convexHull(np.round(legs[11:17, :2]).astype(np.int32))
    else:
        hull = None
    if not (kp[5:17, 2] >= 0.3).all() or not (kp[:5, 2] >= 0.3).any():
        return None
    drawn = np.zeros(shape, np.uint8)
    if hull is not None:
        cv2.fillConvexPoly(drawn, hull, 1)
        kp = kp.copy()
        kp[hidden, 2] = 0.0  # the polygon stands for them
    _draw_skeleton(drawn, kp, 1, 1, 1)
    _draw_head(drawn, kp, 1.0, 1)
    face = kp[:5][kp[:5, 2] >= 0.3, :2].mean(0)
    cv2.circle(drawn, (int(round(face[0])), int(round(face[1]))), 1, 1, -1)
    return cv2.distanceTransform((drawn == 0).astype(np.uint8), cv2.DIST_L2, 5)


def _draw_skeleton(mask: np.ndarray, kp: np.ndarray, thickness: int, arm_thickness: int, value: int) -> None:
    for a, b in SKELETON:
        if kp[a, 2] >= 0.3 and kp[b, 2] >= 0.3:
            pa = (int(round(kp[a, 0])), int(round(kp[a, 1])))
            pb = (int(round(kp[b, 0])), int(round(kp[b, 1])))
            cv2.line(mask, pa, pb, value, arm_thickness if (a, b) in ARMS else thickness)
    torso = [i for i in (5, 6, 12, 11) if kp[i, 2] >= 0.3]
    if len(torso) == 4:
        # the shoulder joints stand out beyond the chest: pull them in, or the polygon's sides
        # would claim the background beside the waist
        quad = kp[[5, 6, 12, 11], :2].copy()
        mid = quad[:2].mean(0)
        quad[:2] = mid + 0.7 * (quad[:2] - mid)
        cv2.fillConvexPoly(mask, np.round(quad).astype(np.int32), value)
        if kp[0, 2] >= 0.3:  # the neck: shoulders' middle to the nose
            cv2.line(mask, (int(round(mid[0])), int(round(mid[1]))),
                     (int(round(kp[0, 0])), int(round(kp[0, 1]))), value, arm_thickness)


def _draw_head(mask: np.ndarray, kp: np.ndarray, radius: float, value: int) -> None:
    """An oval of the head's size around the face keypoints (the eyes sit mid-height)."""
    face = kp[:5][kp[:5, 2] >= 0.3]
    if len(face) == 0 or radius < 1:
        return
    cx, cy = face[:, 0].mean(), face[:, 1].mean()
    cv2.ellipse(mask, (int(round(cx)), int(round(cy - 0.15 * radius))), (max(1, int(0.7 * radius)), max(1, int(radius))),
                0.0, 0.0, 360.0, value, -1)


def _largest_component(fg: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return fg
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == best).astype(np.uint8)

"""GrabCut segmentation (the default when no segmentation weight is placed)."""
import cv2
import numpy as np

from inference.stages.segment import grabcut_person
from inference.types import Detection

BODY = (40, 60, 160)  # RGB of the figure's clothes


def _figure_with_a_line() -> tuple[np.ndarray, Detection]:
    """A 1200 x 800 grey photo of a dark blue figure (head, trunk, legs) about 1000 px tall and a
    3-pixel line of the same blue across it at knee height (a wall's edge against the floor)."""
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(150, 6, (1200, 800, 3)), 0, 255).astype(np.uint8)
    cv2.circle(img, (400, 180), 60, BODY, -1)
    cv2.rectangle(img, (330, 240), (470, 660), BODY, -1)
    cv2.rectangle(img, (336, 660), (392, 1120), BODY, -1)
    cv2.rectangle(img, (408, 660), (464, 1120), BODY, -1)
    img[859:862, 180:620] = BODY
    kp = np.array([
        (400, 170), (384, 160), (416, 160), (370, 170), (430, 170),  # face
        (350, 260), (450, 260), (344, 400), (456, 400), (344, 520), (456, 520),  # arms down the sides
        (364, 640), (436, 640), (364, 880), (436, 880), (364, 1100), (436, 1100),  # legs
    ], np.float64)
    keypoints = np.concatenate([kp, np.ones((17, 1))], 1)
    return img, Detection(box=np.array([300.0, 110.0, 500.0, 1130.0]), score=0.9, keypoints=keypoints)


def test_a_thin_line_of_the_persons_colour_does_not_join_the_mask():
    img, det = _figure_with_a_line()
    mask = grabcut_person(img, det)
    assert mask[400, 400] and mask[900, 364] and mask[900, 436]  # trunk and both legs
    # the line beside the legs (inside the box, outside the figure) stays background
    assert not mask[856:865, 304:330].any() and not mask[856:865, 470:496].any()

"""GrabCut segmentation (the default when no segmentation weight is placed)."""
import cv2
import numpy as np

from inference.stages.segment import grabcut_person
from inference.types import Detection

BODY = (40, 60, 160)  # RGB of the figure's clothes


def _figure_with_a_line() -> tuple[np.ndarray, Detection]:
    """A 600 x 400 grey photo of a dark blue figure (head, trunk, legs) and a thin line of the
    same blue across it at knee height (a wall's edge against the floor): 3 pixels here, about
    2 on the scale GrabCut works at."""
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(150, 6, (600, 400, 3)), 0, 255).astype(np.uint8)
    cv2.circle(img, (200, 90), 30, BODY, -1)
    cv2.rectangle(img, (165, 120), (235, 330), BODY, -1)
    cv2.rectangle(img, (168, 330), (196, 560), BODY, -1)
    cv2.rectangle(img, (204, 330), (232, 560), BODY, -1)
    img[429:432, 90:310] = BODY
    kp = np.array([
        (200, 85), (192, 80), (208, 80), (185, 85), (215, 85),  # face
        (175, 130), (225, 130), (172, 200), (228, 200), (172, 260), (228, 260),  # arms down the sides
        (182, 320), (218, 320), (182, 440), (218, 440), (182, 550), (218, 550),  # legs
    ], np.float64)
    keypoints = np.concatenate([kp, np.ones((17, 1))], 1)
    return img, Detection(box=np.array([150.0, 55.0, 250.0, 565.0]), score=0.9, keypoints=keypoints)


def test_a_thin_line_of_the_persons_colour_does_not_join_the_mask():
    img, det = _figure_with_a_line()
    mask = grabcut_person(img, det)
    assert mask[200, 200] and mask[450, 182] and mask[450, 218]  # trunk and both legs
    # the line beside the legs (inside the box, outside the figure) stays background
    assert not mask[428:433, 152:163].any() and not mask[428:433, 237:248].any()

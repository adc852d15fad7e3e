"""Detections that contradict a frontal photo or the silhouette are not trusted."""
import numpy as np
import torch

from inference.stages.detect import crossed_sides
from inference.stages.fit import FitTarget, _PhotoTerms, keypoint_trust
from inference.types import Subject


def frontal_keypoints() -> np.ndarray:
    """A person facing the camera: their left (odd COCO indices) on the image's right."""
    kp = np.zeros((17, 3))
    kp[:, 2] = 0.9
    for left, right, x, y in ((5, 6, 30, 40), (7, 8, 40, 60), (9, 10, 45, 80), (11, 12, 15, 100),
                              (13, 14, 18, 150), (15, 16, 20, 200)):
        kp[left, :2] = (100 + x, y)
        kp[right, :2] = (100 - x, y)
    kp[:5, :2] = (100, 20)
    return kp


def test_a_frontal_pose_has_no_crossed_sides():
    assert crossed_sides(frontal_keypoints(), 4.0) == []


def test_crossed_knees_are_both_dropped_and_nothing_else():
    kp = frontal_keypoints()
    kp[13, 0], kp[14, 0] = 90.0, 110.0  # the detector swapped the knees
    assert sorted(crossed_sides(kp, 4.0)) == [13, 14]
    kp[13, 2] = 0.1  # an unseen keypoint is not a contradiction
    assert crossed_sides(kp, 4.0) == []


def test_a_keypoint_off_the_silhouette_loses_its_trust():
    kp = frontal_keypoints()
    mask = np.zeros((240, 200), bool)
    for i in range(17):  # a silhouette around every keypoint...
        x, y = kp[i, :2].astype(int)
        mask[max(y - 6, 0):y + 6, x - 6:x + 6] = True
    mask[10:210, 85:115] = True
    kp[15, :2] = (160, 200)  # ...but the left ankle detected far outside it
    term = _PhotoTerms(FitTarget(Subject(170, "male"), (200, 240), kp, mask), "cpu", torch.float32)
    trust = keypoint_trust(torch.tensor(kp[:, 2], dtype=torch.float32), torch.tensor(kp[:, :2], dtype=torch.float32),
                           term, 190.0)
    assert float(trust[15]) < 0.01
    assert float(trust[16]) > 0.85 and float(trust[5]) > 0.85

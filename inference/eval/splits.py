"""The eval sets by name: the fit is tuned on ``dev`` only; ``test`` is frozen (its seed, size and
preset never change, and nothing is tuned on it) and reported beside ``dev`` in the README.
``studio`` is the narrow set the earlier figures were measured on (no regression there);
``calib`` is where calibration tables (``avatar eval keypoint-offsets``) are measured.

``avatar eval make-set DIR --split test`` makes the frozen test set.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Split:
    preset: str
    seed: int
    n: int
    purpose: str


SPLITS: dict[str, Split] = {
    "dev": Split("wide", seed=11, n=24, purpose="tune here"),
    "test": Split("wide", seed=20261202, n=48, purpose="frozen: report only, never tune on it"),
    "studio": Split("studio", seed=0, n=24, purpose="the narrow studio set (regression check)"),
    "calib": Split("wide", seed=100, n=32, purpose="the keypoint-offsets table is measured here"),
    "prior-train": Split("wide", seed=7000, n=736, purpose="the learned shape prior is trained here"),
}

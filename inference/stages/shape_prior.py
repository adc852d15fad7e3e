"""A learned prior on the body's shape from what one photo shows (part of stage 4, fit).

Optimisation alone reads the silhouette as the body's outline; on a clothed person it is the
clothes'. How much wider than the body clothes usually are, and how muscle, fat, age and
proportions show in a front silhouette, is learned here from the wide eval generator's renders
(``avatar eval train-prior``; training seeds are disjoint from the dev, test, studio and calib
splits): a ridge regression per gender from the photo's features (below) to the body model's
free shape parameters, with the spread of its cross-validated errors ("other": both models).
The fitter's stage C then pulls the shape toward the prediction by that spread instead of
toward the population's middle. A second
regression from the same features predicts how far the clothes stand off the body (cm, each side)
at the hips and under the arms: a silhouette shows whether the clothes hang loose (trousers wider
than the legs inside them would be, a top that flares toward its hem) or follow the body, and
a photo whose clothes follow the body is fitted as one said to wear fitted clothes.

Features of one photo, read after stage B (pose and camera fitted), all scale-free or in cm:
- the typed height (m), the body-mass index (with a weight; a second model has none) and gender;
- the trunk's width in each of ``widths.N_BANDS`` bands (``widths.mask_widths``, in cm against the
  silhouette's height and the typed height); an untrusted band takes the stage-B body's own
  width there plus the median mask-minus-body offset of the trusted ones;
- the detector's shoulder and hip spans and the torso and leg lengths against the silhouette's
  height;
- stage B's shape (its free parameters);
- the silhouette's width across the upper arms, forearms, thighs and calves, the neck and the
  shoulders (``widths.limb_widths``, cm: at a fixed mass muscle shows in the limbs and the neck,
  which clothes cover less than the trunk or not at all, and the proportions in the shoulders);
  a site the mask does not read takes the body's own width there plus the read sites' median
  offset, one neither reads the training mean.
The model is a small JSON file (``inference/bodies/anny_shape_prior.json``) the project trains.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference.bodies.base import L_ANKLE, L_HIP, L_SHOULDER, R_ANKLE, R_HIP, R_SHOULDER
from inference.stages import widths as W

PRIOR_FILE = Path(__file__).resolve().parents[1] / "bodies" / "anny_shape_prior.json"
GENDER_VALUE = {"male": 0.0, "female": 1.0, "other": 0.5}
GENDER_NAME = {v: k for k, v in GENDER_VALUE.items() if k != "other"}  # the models' genders
GENDER_COLUMN = 1  # in ``photo_features``


def photo_features(height_cm: float, weight_kg: float | None, gender: str, mask_w: W.WidthTarget,
                   own_w: W.WidthTarget, keypoints: np.ndarray, stage_b_shape: np.ndarray,
                   extra_cm: float = 0.0) -> np.ndarray | None:
    """→ (F,) features (see the module's docstring), or None when the silhouette gives too few
    trusted bands (then there is no learned prior for this photo). ``own_w``: the same reading on
    the stage-B body's own rasterised silhouette; ``keypoints``: (17, 3) detector pixels +
    confidence; ``stage_b_shape``: the free shape parameters after stage B; ``extra_cm``: added to
    every band the mask shows and to every limb width but the neck's (a photo in skin-tight
    clothes read as the clothed photos the prior was trained on)."""
    valid = mask_w.valid & own_w.valid
    if valid.sum() < 3 or not np.isfinite(mask_w.height_px) or mask_w.height_px <= 0:
        return None
    cm = height_cm / mask_w.height_px
    mask_cm = mask_w.width_px * cm + extra_cm
    own_cm = own_w.width_px * (height_cm / own_w.height_px)
    offset = float(np.median((mask_cm - own_cm)[valid]))
    filled = np.where(valid, mask_cm, own_cm + offset)
    if not np.all(np.isfinite(filled)):  # a band the body does not reach either: nearest trusted
        idx = np.flatnonzero(np.isfinite(filled))
        filled = np.interp(np.arange(len(filled)), idx, filled[idx])
    kp = keypoints
    ph = mask_w.height_px
    span = lambda a, b: abs(kp[a, 0] - kp[b, 0]) / ph  # noqa: E731
    mid = lambda a, b: 0.5 * (kp[a, 1] + kp[b, 1])  # noqa: E731
    geometry = [span(L_SHOULDER, R_SHOULDER), span(L_HIP, R_HIP),
                (mid(L_HIP, R_HIP) - mid(L_SHOULDER, R_SHOULDER)) / ph,
                (mid(L_ANKLE, R_ANKLE) - mid(L_HIP, R_HIP)) / ph]
    typed = [height_cm / 100.0, GENDER_VALUE.get(gender, 0.5)]
    if weight_kg is not None:
        typed.append(weight_kg / (height_cm / 100.0) ** 2)
    limbs = []
    if mask_w.limb_px is not None and own_w.limb_px is not None:
        m_l = mask_w.limb_px * cm
        o_l = own_w.limb_px * (height_cm / own_w.height_px)
        ok = np.isfinite(m_l) & np.isfinite(o_l)
        off_l = float(np.median((m_l - o_l)[ok])) if ok.any() else 0.0
        limbs = np.where(ok, m_l, o_l + off_l)  # nan where the body's own does not read either
        covered = np.ones(len(limbs), bool)
        covered[len(W.LIMB_SITES)] = False  # the neck, which clothes do not cover
        limbs = limbs + extra_cm * covered
    return np.concatenate([typed, filled, geometry, stage_b_shape, limbs]).astype(np.float64)


@dataclass
class RidgeModel:
    """y = ((x - x_mean) / x_std) @ coef + intercept, per output; ``sigma``: cross-validated
    error spread per output."""

    x_mean: np.ndarray
    x_std: np.ndarray
    coef: np.ndarray  # (F, P)
    intercept: np.ndarray  # (P,)
    sigma: np.ndarray  # (P,)
    alpha: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = x[..., :len(self.x_mean)]  # a model trained before features were appended reads its own
        x = np.where(np.isfinite(x), x, self.x_mean)  # a feature not read: the training mean
        return ((x - self.x_mean) / self.x_std) @ self.coef + self.intercept

    def to_json(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: dict) -> "RidgeModel":
        return cls(**{k: (np.asarray(v, np.float64) if isinstance(v, list) else v) for k, v in d.items()})


def fit_ridge(X: np.ndarray, Y: np.ndarray, alphas=(0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0),
              folds: int = 5, seed: int = 0) -> tuple[RidgeModel, dict]:
    """Ridge regression (N, F) → (N, P) with the penalty chosen by ``folds``-fold cross-validation;
    the returned model is refitted on all rows, its ``sigma`` the chosen penalty's CV RMSE."""
    n = len(X)
    with warnings.catch_warnings():  # a column no row read: numpy warns of an empty mean
        warnings.simplefilter("ignore", RuntimeWarning)
        fill = np.nan_to_num(np.nanmean(np.where(np.isfinite(X), X, np.nan), 0))
    X = np.where(np.isfinite(X), X, fill)  # a feature not read: the column's mean (0 where none read)
    order = np.random.default_rng(seed).permutation(n)
    fold = np.empty(n, int)
    fold[order] = np.arange(n) % folds

    def solve(Xa, Ya, alpha):
        mu, sd = Xa.mean(0), Xa.std(0) + 1e-9
        sd[sd < 1e-6] = 1.0  # a constant column (the gender in a model per gender): no scaling
        Z = (Xa - mu) / sd
        ym = Ya.mean(0)
        coef = np.linalg.solve(Z.T @ Z + alpha * np.eye(Z.shape[1]), Z.T @ (Ya - ym))
        return mu, sd, coef, ym

    scores = {}
    for alpha in alphas:
        err = np.zeros_like(Y)
        for k in range(folds):
            tr, te = fold != k, fold == k
            mu, sd, coef, ym = solve(X[tr], Y[tr], alpha)
            err[te] = ((X[te] - mu) / sd) @ coef + ym - Y[te]
        scores[alpha] = np.sqrt((err**2).mean(0))
    best = min(alphas, key=lambda a: float(scores[a].mean()))
    mu, sd, coef, ym = solve(X, Y, best)
    model = RidgeModel(mu, sd, coef, ym, scores[best], float(best))
    return model, {"alpha": best, "cv_rmse": scores[best].round(4).tolist(),
                   "cv_rmse_by_alpha": {str(a): round(float(s.mean()), 4) for a, s in scores.items()}}


class ShapePrior:
    """The trained models for one body model: with and without a typed weight."""

    def __init__(self, doc: dict):
        self.doc = doc
        self.outputs: list[str] = doc["outputs"]  # shape parameter names, in the model's order
        self.models = {k: RidgeModel.from_json(v) for k, v in doc["models"].items()}
        self.cloth_outputs: list[str] = doc.get("cloth_outputs", [])
        self.cloth_models = {k: RidgeModel.from_json(v) for k, v in doc.get("cloth_models", {}).items()}

    @classmethod
    def load(cls, path: Path = PRIOR_FILE) -> "ShapePrior | None":
        return cls(json.loads(Path(path).read_text())) if Path(path).is_file() else None

    def predict(self, features: np.ndarray, with_weight: bool) -> tuple[np.ndarray, np.ndarray]:
        """→ (mean, sigma) of the ``outputs`` shape parameters. A file with a model per gender
        (``weight:male``, ``weight:female``, ...) answers "other" with the two models' average
        and a spread that covers both."""
        models = self.models
        key = "weight" if with_weight else "no_weight"
        gender = GENDER_NAME.get(float(features[GENDER_COLUMN]))
        own = models.get(f"{key}:{gender}")
        if own is not None:
            return own.predict(features[None])[0], own.sigma
        if f"{key}:male" in models:
            m, f = models[f"{key}:male"], models[f"{key}:female"]
            pm, pf = m.predict(features[None])[0], f.predict(features[None])[0]
            return 0.5 * (pm + pf), np.sqrt(0.5 * (m.sigma ** 2 + f.sigma ** 2) + 0.25 * (pm - pf) ** 2)
        m = models[key]
        return m.predict(features[None])[0], m.sigma

    def predict_cloth(self, features: np.ndarray, with_weight: bool) -> tuple[np.ndarray, np.ndarray] | None:
        """→ (mean, sigma) of how far the clothes stand off the body on each side (cm) at the
        hips and under the arms (``cloth_outputs``), or None for a prior trained without them."""
        m = self.cloth_models.get("weight" if with_weight else "no_weight")
        if m is None:
            return None
        return np.clip(m.predict(features[None])[0], 0.0, None), m.sigma

"""The learned shape prior: its regression, its features, the packaged model the fitter loads."""
import json
import subprocess
import sys

import numpy as np
import pytest

from inference.stages import widths as W
from inference.stages.shape_prior import (GENDER_COLUMN, PRIOR_FILE, RidgeModel, ShapePrior, fit_ridge,
                                          photo_features)


def test_ridge_recovers_a_linear_map_and_states_its_error_spread():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6)) * [1, 10, 0.1, 1, 1, 1]  # features on very different scales
    true = rng.normal(size=(6, 2))
    Y = (X / [1, 10, 0.1, 1, 1, 1]) @ true + [0.5, -0.2] + rng.normal(scale=[0.05, 0.2], size=(400, 2))
    model, info = fit_ridge(X, Y)
    X_new = rng.normal(size=(50, 6)) * [1, 10, 0.1, 1, 1, 1]
    want = (X_new / [1, 10, 0.1, 1, 1, 1]) @ true + [0.5, -0.2]
    assert np.abs(model.predict(X_new) - want).max() < 0.1
    assert model.sigma == pytest.approx([0.05, 0.2], rel=0.25)
    assert info["alpha"] in (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
    again = RidgeModel.from_json(json.loads(json.dumps(model.to_json())))
    assert np.allclose(again.predict(X_new), model.predict(X_new))


def _widths(width_px, valid, height_px=1000.0):
    return W.WidthTarget(edges=np.arange(W.N_BANDS + 1, dtype=float), width_px=np.asarray(width_px, float),
                         valid=np.asarray(valid), height_px=height_px)


def _keypoints():
    kp = np.zeros((17, 3))
    kp[:, 2] = 1.0
    kp[5, :2], kp[6, :2] = (620, 300), (380, 300)  # shoulders
    kp[11, :2], kp[12, :2] = (570, 600), (430, 600)  # hips
    kp[15, :2], kp[16, :2] = (560, 1050), (440, 1050)  # ankles
    return kp


def test_features_are_in_cm_and_fill_untrusted_bands_from_the_body():
    n = W.N_BANDS
    mask_px = np.full(n, 200.0)
    own_px = np.full(n, 180.0)
    valid = np.ones(n, bool)
    valid[:5] = False
    mask_px[:5] = np.nan  # the arm touched the trunk there
    own_px[:5] = 150.0
    f = photo_features(180.0, 80.0, "male", _widths(mask_px, valid), _widths(own_px, np.ones(n, bool)),
                       _keypoints(), np.array([0.8, 0.5, 0.5, 0.5, 0.5]))
    assert f.shape == (3 + n + 4 + 5,)
    assert f[:3] == pytest.approx([1.8, 0.0, 80 / 1.8**2])
    widths = f[3:3 + n]
    assert widths[5:] == pytest.approx(200.0 * 0.18)  # 200 px of a 1000 px tall 180 cm person
    # untrusted: the body's own width plus the trusted bands' median offset (20 px)
    assert widths[:5] == pytest.approx((150.0 + 20.0) * 0.18)
    assert f[3 + n:3 + n + 4] == pytest.approx([0.24, 0.14, 0.3, 0.45])
    without = photo_features(180.0, None, "male", _widths(mask_px, valid), _widths(own_px, np.ones(n, bool)),
                             _keypoints(), np.array([0.8, 0.5, 0.5, 0.5, 0.5]))
    assert np.allclose(np.delete(f, 2), without)


def test_limb_features_are_in_cm_and_fall_back_on_the_body():
    """The widths across the limbs, the neck and the shoulders come last, in cm against the
    silhouette's height; a site the mask does not read takes the body's own width plus the read
    sites' median offset, one neither reads stays nan (the model reads its training mean there).
    A photo read as in fitted clothes gets ``extra_cm`` on every limb but the neck."""
    n, k, neck = W.N_BANDS, W.N_LIMB_FEATURES, len(W.LIMB_SITES)
    mask_w, own_w = _widths(np.full(n, 200.0), np.ones(n, bool)), _widths(np.full(n, 180.0), np.ones(n, bool))
    mask_w.limb_px = np.full(k, 60.0)
    own_w.limb_px = np.full(k, 58.0)  # 2 px narrower where both read
    mask_w.limb_px[[1, 4]] = np.nan  # the mask does not read there
    own_w.limb_px[4] = np.nan  # nor the body there
    args = (180.0, 80.0, "male", mask_w, own_w, _keypoints(), np.array([0.8, 0.5, 0.5, 0.5, 0.5]))
    f = photo_features(*args)
    assert f.shape == (3 + n + 4 + 5 + k,)
    limbs = f[-k:]
    read = np.ones(k, bool)
    read[[1, 4]] = False
    assert limbs[read] == pytest.approx(60.0 * 0.18)
    assert limbs[1] == pytest.approx((58.0 + 2.0) * 0.18)
    assert np.isnan(limbs[4])
    wider = photo_features(*args, extra_cm=2.0)[-k:]
    covered = np.arange(k) != neck
    assert wider[covered & read] == pytest.approx(limbs[covered & read] + 2.0)
    assert wider[neck] == pytest.approx(limbs[neck])
    rows = np.r_[f[None], f[None] + 1.0, f[None] - 1.0]
    model, _ = fit_ridge(rows, np.array([[0.0], [1.0], [-1.0]]))
    assert np.isfinite(model.x_mean).all() and np.isfinite(model.predict(f[None])).all()
    # a model trained on the features before the limbs' reads its own columns only
    short, _ = fit_ridge(rows[:, :-k], np.array([[0.0], [1.0], [-1.0]]))
    assert short.predict(f[None]) == pytest.approx(short.predict(f[None, :-k]))


def test_fitted_clothes_read_every_band_as_if_clothed():
    n = W.N_BANDS
    valid = np.ones(n, bool)
    valid[:5] = False
    args = (180.0, 80.0, "male", _widths(np.full(n, 200.0), valid), _widths(np.full(n, 180.0), np.ones(n, bool)),
            _keypoints(), np.array([0.8, 0.5, 0.5, 0.5, 0.5]))
    plain, wider = photo_features(*args), photo_features(*args, extra_cm=3.0)
    assert wider[3:3 + n] == pytest.approx(plain[3:3 + n] + 3.0)  # trusted bands and filled ones
    assert np.array_equal(np.delete(wider, np.s_[3:3 + n]), np.delete(plain, np.s_[3:3 + n]))


def test_no_features_without_enough_trusted_bands():
    n = W.N_BANDS
    valid = np.zeros(n, bool)
    valid[:2] = True
    assert photo_features(170.0, 60.0, "female", _widths(np.full(n, 100.0), valid),
                          _widths(np.full(n, 100.0), np.ones(n, bool)), _keypoints(), np.zeros(5)) is None


def test_the_packaged_prior_matches_the_body_model_and_the_features():
    from inference.bodies.anny_body import PHENOTYPES

    prior = ShapePrior.load()
    assert prior is not None, f"{PRIOR_FILE} is missing: `avatar eval train-prior WORK_DIR` makes it"
    assert set(prior.outputs) <= set(PHENOTYPES) and "gender" not in prior.outputs
    n_feat = 3 + W.N_BANDS + 4 + 5 + W.N_LIMB_FEATURES  # ... and the widths across limbs, neck, shoulders
    # a model per gender
    models = prior.models
    assert set(models) == {f"{k}:{g}" for k in ("weight", "no_weight") for g in ("male", "female")}
    for g in ("male", "female"):
        assert len(models[f"weight:{g}"].x_mean) == n_feat
        assert len(models[f"no_weight:{g}"].x_mean) == n_feat - 1
        assert np.all(models[f"weight:{g}"].sigma > 0) and np.all(models[f"weight:{g}"].sigma < 0.5)
    assert PRIOR_FILE.stat().st_size < 2_000_000
    # the clothes' offsets at the hips and under the arms, from the same features
    assert prior.cloth_outputs == ["hips_cm", "under_arms_cm"]
    assert len(prior.cloth_models["weight"].x_mean) == n_feat
    assert len(prior.cloth_models["no_weight"].x_mean) == n_feat - 1
    assert np.all(prior.cloth_models["weight"].sigma > 0) and np.all(prior.cloth_models["weight"].sigma < 1.5)
    # the training set is none of the eval splits
    from inference.eval.splits import SPLITS

    seed = prior.doc["trained_on"]["seed"]
    assert seed == SPLITS["prior-train"].seed
    assert all(s.seed != seed for name, s in SPLITS.items() if name != "prior-train")


def _features(prior, gender_value):
    m = prior.models["weight:male"]
    x = np.asarray(m.x_mean).copy()
    x[GENDER_COLUMN] = gender_value
    return x


def test_each_gender_gets_its_own_model_and_other_both():
    prior = ShapePrior.load()
    male, s_m = prior.predict(_features(prior, 0.0), with_weight=True)
    female, s_f = prior.predict(_features(prior, 1.0), with_weight=True)
    other, s_o = prior.predict(_features(prior, 0.5), with_weight=True)
    m = prior.models["weight:male"]
    assert male == pytest.approx(m.predict(_features(prior, 0.0)[None])[0]) and np.array_equal(s_m, m.sigma)
    f = prior.models["weight:female"]
    assert female == pytest.approx(f.predict(_features(prior, 1.0)[None])[0]) and np.array_equal(s_f, f.sigma)
    # "other": between the two models' answers, with a spread that covers both
    mo = prior.models["weight:male"].predict(_features(prior, 0.5)[None])[0]
    fo = prior.models["weight:female"].predict(_features(prior, 0.5)[None])[0]
    assert other == pytest.approx(0.5 * (mo + fo))
    assert np.all(s_o >= np.minimum(s_m, s_f)) and np.all(s_o >= np.abs(mo - fo) / 2 - 1e-12)
    assert not np.allclose(male, female)
    # a file of one model for both genders (before the models per gender) still answers
    pooled = ShapePrior({**prior.doc, "models": {"weight": prior.doc["models"]["weight:male"],
                                                 "no_weight": prior.doc["models"]["no_weight:male"]}})
    assert pooled.predict(_features(prior, 1.0), with_weight=True)[0] == pytest.approx(
        m.predict(_features(prior, 1.0)[None])[0])


def test_cloth_targets_follow_the_generators_garments():
    from inference.eval.train_prior import cloth_targets

    hips, arms = cloth_targets({"top": 0.01, "bottom": 0.03})
    assert hips == pytest.approx(3.0)  # the looser trousers are the outline at the hips
    assert 0.3 < arms < 0.5  # a top hangs from the shoulders: little offset under the arms
    assert cloth_targets({"top": 0.0, "bottom": 0.0}) == [0.0, 0.0]


def test_predicted_cloth_is_never_negative_and_absent_from_an_older_prior():
    prior = ShapePrior.load()
    m = prior.cloth_models["weight"]
    far = m.x_mean - 50 * m.x_std * np.sign(m.coef[:, 0])  # features that push the hips' offset below 0
    mean, sigma = prior.predict_cloth(far, with_weight=True)
    assert mean.shape == sigma.shape == (2,) and np.all(mean >= 0.0)
    older = ShapePrior({k: v for k, v in prior.doc.items() if not k.startswith("cloth")})
    assert older.predict_cloth(m.x_mean, with_weight=True) is None


@pytest.mark.slow
def test_train_prior_is_one_command(tmp_path):
    out = tmp_path / "prior.json"
    r = subprocess.run([sys.executable, "-m", "inference.cli", "eval", "train-prior", tmp_path / "work",
                        "--n", "8", "--out", out], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    prior = ShapePrior.load(out)
    assert prior.doc["trained_on"]["photos"] >= 6
    x = np.asarray(prior.models["weight:male"].x_mean)
    mean, sigma = prior.predict(x, with_weight=True)
    assert mean.shape == sigma.shape == (len(prior.outputs),) and np.all(np.isfinite(mean))
    cloth, cloth_sigma = prior.predict_cloth(x, with_weight=True)
    assert cloth.shape == cloth_sigma.shape == (2,)


def test_the_fitter_loads_another_prior_file_and_refuses_a_missing_one(anny_body, tmp_path):
    from inference.stages.fit import FitConfig, Fitter

    doc = json.loads(PRIOR_FILE.read_text())
    other = tmp_path / "prior.json"
    doc["trained_on"] = {**doc["trained_on"], "photos": 1}  # any change tells the two apart
    other.write_text(json.dumps(doc))
    assert Fitter(anny_body, FitConfig(prior_file=str(other))).prior.doc["trained_on"]["photos"] == 1
    assert Fitter(anny_body, FitConfig()).prior.doc["trained_on"]["photos"] > 1
    with pytest.raises(FileNotFoundError, match="prior_file"):
        Fitter(anny_body, FitConfig(prior_file=str(tmp_path / "missing.json")))


def test_ridge_keeps_a_constant_column_finite_once_written():
    from inference.eval.train_prior import _rounded  # what train-prior writes: 6 decimals

    rng = np.random.default_rng(1)
    X = np.hstack([rng.normal(size=(60, 3)), np.ones((60, 1))])  # the last column never varies
    Y = X[:, :1] * 2.0 + 0.1 * rng.normal(size=(60, 1))
    model, _ = fit_ridge(X, Y)
    again = RidgeModel.from_json(json.loads(json.dumps(_rounded(model.to_json()))))
    assert np.all(np.isfinite(again.predict(X))) and np.abs(again.predict(X) - Y).max() < 0.5


def test_train_prior_gives_each_gender_the_same_share_of_inputs_off():
    """The generator alternates the genders case by case; the training inputs must not follow
    them (until session 23 every man got the true inputs and every woman the inputs off)."""
    from collections import Counter

    from inference.eval.generate import GENDERS
    from inference.eval.train_prior import typed_exactly

    n = 64
    counts = Counter((GENDERS[i % 2], typed_exactly(i)) for i in range(n))
    for gender in GENDERS:
        assert counts[(gender, True)] == 3 * counts[(gender, False)] == 3 * n // 8


def test_train_prior_makes_again_the_features_a_case_got_with_other_inputs(tmp_path):
    from inference.eval.train_prior import cached_for, typed_inputs

    truth = {"height_cm": 170.3, "weight_kg": 64.0, "perturbed_input": {"height_cm": 168.3, "weight_kg": 69.0}}
    assert typed_inputs(0, truth) is truth and typed_inputs(6, truth) is truth["perturbed_input"]
    f = tmp_path / "case_006.json"
    assert not cached_for(f, truth)  # none yet
    f.write_text(json.dumps([1.703, 0.0, 22.1]))  # made with the true inputs (the rule before session 23)
    assert cached_for(f, truth) and not cached_for(f, typed_inputs(6, truth))
    f.write_text(json.dumps(None))  # too few bands: nothing to make again
    assert cached_for(f, typed_inputs(6, truth))

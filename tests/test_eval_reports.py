"""The eval reports say where the fitted mass ended: the girths follow it, so a regression is
traced from there first."""
from inference.eval.fitonly import format_fit_only, mass_summary
from inference.eval.report import _worst
from inference.types import MEASUREMENTS


def case(name, mass, typed, true, chest=0.0):
    errs = {m: 0.0 for m in MEASUREMENTS}
    errs["chest"] = chest
    return {"case": name, "error_cm": errs, "mass_kg": mass, "typed_weight_kg": typed,
            "true_weight_kg": true, "mask_iou": 0.97, "scene": "arms 40/40°", "clothing_read": "regular"}


def report(cases, inputs):
    zeros = {m: 0.0 for m in MEASUREMENTS}
    return {"cases": len(cases), "inputs": inputs, "mean": zeros, "max": zeros, "bias": zeros,
            "baseline": {"mean": zeros, "max": zeros}, "mask_iou": {"mean": 0.97, "min": 0.97},
            "mass": mass_summary(cases), "per_case": cases}


def test_exact_inputs_report_the_mass_error_and_no_share_taken_back():
    cases = [case("case_000", 71.0, 70.0, 70.0), case("case_001", 56.0, 60.0, 60.0, chest=-3.0)]
    m = mass_summary(cases)
    assert m == {"abs_error_kg_mean": 2.5, "abs_error_kg_max": 4.0, "typed_error_taken_back": None}
    text = format_fit_only(report(cases, "exact"))
    assert "fitted mass - true weight: mean 2.5 kg, worst 4.0 kg" in text
    assert "took back" not in text
    # the worst photo first, with its mass against the true weight (the typed one was right)
    lines = text.splitlines()
    worst = lines[[line.startswith("worst photos") for line in lines].index(True) + 1]
    assert worst.startswith("  case_001: chest -3.0") and "mass 56.0 kg (true 60.0)" in worst


def test_inputs_off_report_the_share_of_the_typed_error_the_photo_took_back():
    # typed 5 kg over: the fit came back 2 kg of it; typed 5 kg under: it went 1 kg further off
    cases = [case("case_000", 73.0, 75.0, 70.0), case("case_001", 54.0, 55.0, 60.0)]
    m = mass_summary(cases)
    assert m["typed_error_taken_back"] == (0.4 - 0.2) / 2
    assert m["abs_error_kg_max"] == 6.0
    text = format_fit_only(report(cases, "perturbed"))
    assert "the photo took back 10 % of the typed weight's error" in text
    assert "mass 54.0 kg (typed 55.0, true 60.0)" in text


def test_the_full_runs_worst_photos_show_the_fitted_mass_and_a_failure_first():
    truth = {"chest": 100.0, "waist": 80.0, "hip": 100.0}
    per_case = [
        {"case": "case_000", "truth": truth, "true_weight_kg": 70.0, "fitted_mass_kg": 67.5,
         "pipeline": {"chest": 96.0, "waist": 80.5, "hip": 101.0}, "scene": "leaning"},
        {"case": "case_001", "truth": truth, "true_weight_kg": 60.0, "fitted_mass_kg": 60.2,
         "pipeline": {"chest": 100.5, "waist": 80.0, "hip": 100.0}, "scene": ""},
        {"case": "case_002", "truth": truth, "pipeline": {"error": "no person found"}, "scene": ""},
    ]
    worst = _worst(per_case, k=2)
    assert [w["case"] for w in worst] == ["case_002", "case_000"]
    assert worst[0]["errors"].startswith("failed: no person found")
    assert worst[1]["errors"] == "chest -4.0 waist +0.5 hip +1.0; mass 67.5 kg (true 70.0)"


def test_fit_overrides_parse_tuples_and_refuse_what_is_not_a_number():
    import pytest

    from inference.errors import InputError
    from inference.eval.report import fit_config

    cfg = fit_config(["pose_axis_weights=1,0.5,0.05", "iterations=40", "cloth_gap=false"])
    assert cfg.pose_axis_weights == (1.0, 0.5, 0.05)  # was ('1', ',', '0', ...): one string's characters
    assert cfg.iterations == 40 and cfg.cloth_gap is False
    with pytest.raises(InputError, match="pose_axis_weights"):
        fit_config(["pose_axis_weights=1,x,0.05"])
    with pytest.raises(InputError, match="expected 3 comma-separated numbers"):
        fit_config(["pose_axis_weights=1,0.5"])
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        fit_config(["no_such_field=1"])

"""The fit-only report says where the fitted mass ended: the girths follow it, so a regression
is traced from there first."""
from inference.eval.fitonly import format_fit_only, mass_summary
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

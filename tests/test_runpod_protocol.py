"""RunPod's protocol in our terms: states, "code: message" errors, a /v2 policy's time left, and the
fit summary read from a RunPod worker's output."""
from __future__ import annotations

from datetime import timedelta

import pytest

from service.db import Job, utcnow
from service.job_hooks import seconds_left
from service.runpod_protocol import V2Input, error_text, runpod_status, split_error
from service.schemas import FitSummary


@pytest.mark.parametrize("status,code,expected", [
    ("queued", None, "IN_QUEUE"), ("processing", None, "IN_PROGRESS"), ("completed", None, "COMPLETED"),
    ("failed", "no_person", "FAILED"), ("failed", "timeout", "TIMED_OUT"), ("cancelled", None, "CANCELLED"),
])
def test_our_states_as_runpod_names_them(status, code, expected):
    assert runpod_status(status, code) == expected


def test_error_codes_travel_through_runpod_errors():
    assert split_error(error_text("body_truncated", "the body is cut: a: b"), "x") == ("body_truncated",
                                                                                        "the body is cut: a: b")
    assert split_error('{"error_type": "<class \'KeyError\'>"}', "runpod_failed")[0] == "runpod_failed"


def _job(age_s: float, **policy) -> Job:
    return Job(id="j", created_at=utcnow() - timedelta(seconds=age_s), v2_request=policy or None)


def test_a_policy_gives_the_time_left_from_now():
    assert seconds_left(_job(5)) is None  # no policy: the worker's own limits only
    assert seconds_left(_job(5, executionTimeout=3000)) == 3.0  # counted from the start, which is now
    assert seconds_left(_job(5, ttl=20_000)) == pytest.approx(15.0, abs=0.5)  # counted from submission
    assert seconds_left(_job(30, ttl=20_000, executionTimeout=3000)) < 0  # expired while queued


def test_v2_input_has_the_apis_limits_and_an_optional_user():
    ok = V2Input(photo_url="https://example.com/a.jpg", height=170, gender="female")
    assert ok.user_id is None and ok.return_files == "base64"
    with pytest.raises(ValueError):
        V2Input(photo_url="https://example.com/a.jpg", height=300, gender="female")
    assert ok.weight_source == "reported"
    assert V2Input(photo_url="https://example.com/a.jpg", height=170, weight=60, gender="female",
                   weight_source="scale").weight_source == "scale"
    with pytest.raises(ValueError):
        V2Input(photo_url="https://example.com/a.jpg", height=170, gender="female", weight_source="kitchen")


HANDLER_FIT = {"body_model": "anny", "shape": {"a": 0.1}, "scale": 1.01, "mass_kg": 76.43, "volume_l": 77.6,
               "keypoint_error_rel": 0.02, "cloth_predicted_cm": [0.71, 1.3], "clothing_read": "fitted",
               "prior_mean": [0.1, 0.2], "typed_weight_kg": 80.0, "clothing": "regular", "weight_source": "scale"}


def test_the_fit_summary_keeps_what_a_client_reads_of_the_handlers_fit():
    summary = FitSummary.of(HANDLER_FIT, weight_kg=80.0, clothing="regular", weight_source="scale")
    assert summary.model_dump() == {
        "body_model": "anny", "mass_kg": 76.43, "weight_kg_typed": 80.0, "weight_source": "scale",
        "clothing_said": "regular", "clothing_read": "fitted", "cloth_offset_cm": {"hips": 0.71, "under_arms": 1.3}}
    # our /v2 returns the summary: a service forwarding to it (BACKEND=runpod) reads the same
    assert FitSummary.of(summary.model_dump(), weight_kg=80.0, clothing="regular", weight_source="scale") == summary


def test_the_weight_source_is_the_one_the_fit_ran_with_else_the_requests():
    def source(fit, said):
        return FitSummary.of(fit, weight_kg=80.0, clothing="regular", weight_source=said).weight_source

    older = {k: v for k, v in HANDLER_FIT.items() if k != "weight_source"}  # a worker from before the field
    assert source(HANDLER_FIT, "reported") == "scale"  # what the fit says it ran with
    assert source(older, "scale") == "scale" and source(older, "reported") == "reported"
    assert source({**HANDLER_FIT, "weight_source": "kitchen"}, "reported") == "reported"
    assert source({**HANDLER_FIT, "weight_source": ["scale"]}, "reported") == "reported"
    assert source(older, "kitchen") is None and source(older, None) is None


@pytest.mark.parametrize("bad", [
    {"mass_kg": float("nan")}, {"mass_kg": float("inf")}, {"mass_kg": -3}, {"mass_kg": "76"}, {"mass_kg": True},
    {"mass_kg": 10**400}, {"clothing_read": "baggy"}, {"clothing_read": ["fitted"]},
    {"cloth_predicted_cm": [1.0]}, {"cloth_predicted_cm": [1.0, float("nan")]}, {"cloth_predicted_cm": "wide"},
    {"cloth_predicted_cm": None, "cloth_offset_cm": {"hips": 1.0}}, {"body_model": "<b>anny</b>"},
])
def test_a_malformed_value_in_a_runpod_fit_is_left_out(bad):
    fit = {**HANDLER_FIT, **bad}
    summary = FitSummary.of(fit, weight_kg=80.0, clothing="regular", weight_source="scale")
    good = FitSummary.of(HANDLER_FIT, weight_kg=80.0, clothing="regular", weight_source="scale").model_dump()
    left_out = {"cloth_predicted_cm": "cloth_offset_cm"}.get(next(iter(bad)), next(iter(bad)))
    assert summary.model_dump() == {**good, left_out: None}


@pytest.mark.parametrize("fit", [None, "fit", [1, 2], {}, {"mass_kg": float("nan"), "clothing_read": 3}])
def test_a_fit_with_nothing_usable_is_no_summary(fit):
    assert FitSummary.of(fit, weight_kg=80.0, clothing="regular", weight_source="scale") is None

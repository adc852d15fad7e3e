"""RunPod's protocol in our terms: states, "code: message" errors, and a /v2 policy's time left."""
from __future__ import annotations

from datetime import timedelta

import pytest

from service.db import Job, utcnow
from service.job_hooks import seconds_left
from service.runpod_protocol import V2Input, error_text, runpod_status, split_error


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

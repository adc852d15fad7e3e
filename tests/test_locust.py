"""A short load test in the suite (locust, headless, a few seconds): concurrent create, status and
passport calls against a real `avatar serve`; not one failed request. The README's figures come
from the same locustfile run for 60 s with a busy worker."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stack import api_stack, service_env

LOCUSTFILE = Path(__file__).resolve().parents[1] / "scripts" / "locustfile.py"


@pytest.fixture(scope="module")
def load_stack(postgres, s3, redis_url, weights_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("load")
    env = service_env(postgres, s3, redis_url, weights_dir, RATE_LIMIT_PER_MINUTE="0")
    with api_stack(env, cwd, load=("load",)) as st:
        yield st


def test_concurrent_create_status_and_passport_calls_never_fail(load_stack, bus_jpg, tmp_path):
    env = {**os.environ, "LOAD_API_KEY": load_stack.keys["load"], "LOAD_PHOTO": str(bus_jpg)}
    r = subprocess.run([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "10", "-r", "10",
                        "-t", "4s", "--host", load_stack.base, "--csv", str(tmp_path / "load"), "--only-summary"],
                       env=env, capture_output=True, text=True, timeout=120)
    rows = {row["Name"]: row for row in csv.DictReader((tmp_path / "load_stats.csv").open())}
    total = rows["Aggregated"]
    assert int(total["Failure Count"]) == 0, r.stderr[-3000:]
    assert int(rows["/api/avatar/create"]["Request Count"]) >= 5
    assert int(rows["/api/avatar/status/[job_id]"]["Request Count"]) >= 20

"""Faults, with real processes: a worker SIGKILLed mid-job, a worker stopped by SIGTERM (a deploy),
no worker at all. Every job ends completed with all its artefacts, and no try's leftovers."""
from __future__ import annotations

import os
import signal
import time

import pytest

from inference import artefacts
from service_procs import api_server, run_avatar, worker
from stack import Stack, assert_charged_once, create, follow, objects, service_env, upload, wait_status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(postgres, s3, redis_url, weights_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("faults")
    env = service_env(postgres, s3, redis_url, weights_dir, REAPER_INTERVAL_SECONDS="0.5",
                      WORKER_WARMUP="false", JOB_MAX_TRIES="2")
    with api_server(env, cwd) as base:
        st = Stack(base, env, cwd)
        st.keys = {"acme": st.key("acme")}
        assert run_avatar(env, cwd, "credits", "grant", "--tenant", "acme", "10").returncode == 0
        yield st


def assert_only_try(stack, user: str, job: dict, try_no: int) -> None:
    assert set(job["files"]) == set(artefacts.expected("anny"))
    stored = objects(stack, f"avatars/{user}/{job['job_id']}/")
    assert sorted(stored) == sorted(f"avatars/{user}/{job['job_id']}/t{try_no}/{n}" for n in job["files"])


def test_a_killed_workers_job_is_taken_by_the_next_worker_at_once(stack, bus_jpg):
    acme = stack.client("acme")
    job_id = create(acme, "u-kill", upload(acme, bus_jpg)["photo_url"]).json()["job_id"]
    assert "none is running" in acme.get(f"/api/avatar/status/{job_id}").json()["message"]
    with worker(stack.env, stack.cwd, stack.base) as first:
        wait_status(acme, job_id, {"processing"})
        os.killpg(first.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        first.wait()
    requeued = wait_status(acme, job_id, {"queued", "failed", "completed"})
    recovered_s = time.monotonic() - killed_at
    with worker(stack.env, stack.cwd, stack.base):
        done = follow(acme, job_id)[-1]
    assert requeued["status"] == "queued" and recovered_s < 3 * 1 + 0.5 + 5  # heartbeat TTL + a sweep + slack
    assert done["status"] == "completed", done
    assert_only_try(stack, "u-kill", done, 2)
    assert_charged_once(acme, job_id)


def test_a_worker_stopped_by_sigterm_hands_its_job_back(stack, bus_jpg):
    acme = stack.client("acme")
    job_id = create(acme, "u-term", upload(acme, bus_jpg)["photo_url"]).json()["job_id"]
    with worker(stack.env, stack.cwd, stack.base) as first:
        wait_status(acme, job_id, {"processing"})
        os.killpg(first.pid, signal.SIGTERM)
        assert first.wait(timeout=60) == 0
    back = acme.get(f"/api/avatar/status/{job_id}").json()
    assert back["status"] == "queued" and back["error"] is None, back
    with worker(stack.env, stack.cwd, stack.base):
        done = follow(acme, job_id)[-1]
    assert done["status"] == "completed", done
    assert_only_try(stack, "u-term", done, 1)  # a deploy does not use up a try
    assert_charged_once(acme, job_id)

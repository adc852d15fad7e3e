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


def test_a_job_outlives_a_killed_worker_and_a_stopped_one(stack, bus_jpg):
    """No worker, then one SIGKILLed mid-job (the job is queued again within the heartbeat's
    TTL and a sweep), then one stopped by SIGTERM (a deploy: the job goes back untried), then one
    that finishes it: completed, only its own try's files in storage, charged once."""
    acme = stack.client("acme")
    job_id = create(acme, "u-faults", upload(acme, bus_jpg)["photo_url"]).json()["job_id"]
    assert "none is running" in acme.get(f"/api/avatar/status/{job_id}").json()["message"]
    with worker(stack.env, stack.cwd, stack.base) as killed:
        wait_status(acme, job_id, {"processing"})
        os.killpg(killed.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        killed.wait()
    requeued = wait_status(acme, job_id, {"queued", "failed", "completed"})
    recovered_s = time.monotonic() - killed_at
    assert requeued["status"] == "queued" and recovered_s < 3 * 1 + 0.5 + 5  # heartbeat TTL + a sweep + slack
    with worker(stack.env, stack.cwd, stack.base) as stopped:
        wait_status(acme, job_id, {"processing"})
        os.killpg(stopped.pid, signal.SIGTERM)
        assert stopped.wait(timeout=60) == 0
    back = acme.get(f"/api/avatar/status/{job_id}").json()
    assert back["status"] == "queued" and back["error"] is None, back
    with worker(stack.env, stack.cwd, stack.base):
        done = follow(acme, job_id)[-1]
    assert done["status"] == "completed", done
    assert_only_try(stack, "u-faults", done, 2)  # the kill used up try 1; the deploy did not use up try 2
    assert_charged_once(acme, job_id)

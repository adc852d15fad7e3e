"""Faults, with real processes: a worker SIGKILLed mid-job, a worker stopped by SIGTERM (a deploy),
no worker at all, a queue filled faster than the worker drains it. Every job ends final, the
completed ones with all their artefacts and no try's leftovers, and the ledger balances."""
from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

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


def test_a_queue_filled_faster_than_the_worker_drains_it_ends_every_job_with_a_balanced_ledger(stack, bus_jpg,
                                                                                             zidane_jpg):
    """A burst of concurrent creates against one busy worker: a photo to fit first, then photos
    the pipeline refuses (they need no fit to show the queue draining), one create more than the
    tenant's credits cover (402), two cancelled while they wait (their credits come back, and pay
    for one more). Every accepted job ends final with one reservation and exactly one commit
    (completed) or release (any other end), the completed job has all its artefacts, and the
    balance is the grant less the completed jobs."""
    key = stack.key("flood")
    assert run_avatar(stack.env, stack.cwd, "credits", "grant", "--tenant", "flood", "6").returncode == 0
    c = stack.client(key=key)
    bus, cut = upload(c, bus_jpg)["photo_url"], upload(c, zidane_jpg)["photo_url"]
    with worker(stack.env, stack.cwd, stack.base):
        first = create(c, "u-flood-first", bus).json()["job_id"]
        with ThreadPoolExecutor(6) as pool:  # six creates at once for five credits left
            burst = list(pool.map(lambda n: create(c, f"u-flood-{n}", cut), range(6)))
        assert sorted(r.status_code for r in burst) == [202] * 5 + [402], [r.text for r in burst]
        refused = [r.json()["job_id"] for r in burst if r.status_code == 202]
        depth = metric(stack, "avatar_queue_depth")
        assert depth >= 4, depth  # filled faster than it drains: the worker is still on the first job
        cancelled = refused[:2]
        for job_id in cancelled:
            assert c.post(f"/api/avatar/cancel/{job_id}").json()["status"] == "cancelled"
        last = create(c, "u-flood-last", cut)
        assert last.status_code == 202, last.text  # the cancelled jobs' credits came back
        last = last.json()["job_id"]
        ends = {job_id: follow(c, job_id, timeout=600)[-1] for job_id in [first, *refused, last]}
    failed = [*refused[2:], last]
    assert {j: d["status"] for j, d in ends.items()} == {
        first: "completed", **{j: "cancelled" for j in cancelled}, **{j: "failed" for j in failed}}
    assert {ends[j]["error"]["code"] for j in failed} == {"body_truncated"}
    assert_only_try(stack, "u-flood-first", ends[first], 1)
    ledger = c.get("/api/credits").json()
    for job_id, doc in ends.items():
        kinds = sorted(m["kind"] for m in ledger["movements"] if m["job_id"] == job_id)
        assert kinds == (["commit", "reserve"] if doc["status"] == "completed" else ["release", "reserve"]), \
            (job_id, doc["status"], kinds)
    assert (ledger["balance"], ledger["reserved"]) == (6 - 1, 0)
    assert metric(stack, "avatar_stage_seconds_count", stage="fit") >= 1  # the completed job's stages counted
    assert metric(stack, "avatar_job_failures_total", code="body_truncated") >= 4


def metric(stack, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = stack.client().get("/metrics").text
    return next(s.value for family in text_string_to_metric_families(text) for s in family.samples
                if s.name == name and s.labels == labels)

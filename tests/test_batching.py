"""Batched fitting, with real processes (`avatar serve` + `avatar worker` over the session's
PostgreSQL, S3 server and Redis): jobs waiting together are fitted as one batch, each still with
its own progress, its own cancel and its own outcome. The jobs are queued while no worker runs,
so the worker finds them all waiting when it starts."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service_procs import api_server, run_avatar, worker
from stack import (FINAL, Stack, assert_charged_once, assert_released, create, nobody_jpeg, objects, polled,
                   service_env, upload, wait_status)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(postgres, s3, redis_url, weights_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("batching")
    env = service_env(postgres, s3, redis_url, weights_dir, WORKER_WARMUP="false", WORKER_BATCH="3")
    with api_server(env, cwd) as base:
        st = Stack(base, env, cwd)
        st.keys = {"acme": st.key("acme")}
        assert run_avatar(env, cwd, "credits", "grant", "--tenant", "acme", "10").returncode == 0
        yield st


def watch(c, job_ids: list[str], timeout: float = 600, on_doc=None) -> dict[str, list[dict]]:
    """Every status document of each job until all are final, polled side by side."""
    seen: dict[str, list[dict]] = {j: [] for j in job_ids}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job_id in job_ids:
            if seen[job_id] and seen[job_id][-1]["status"] in FINAL:
                continue
            doc = polled(c, f"/api/avatar/status/{job_id}")
            seen[job_id].append(doc)
            if on_doc:
                on_doc(job_id, doc)
        if all(docs and docs[-1]["status"] in FINAL for docs in seen.values()):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"not all final after {timeout} s: { {j: d[-1] for j, d in seen.items()} }")


def test_jobs_waiting_together_are_fitted_as_one_batch_and_one_of_them_can_be_cancelled(stack, bus_jpg):
    c = stack.client("acme")
    photo = upload(c, bus_jpg)["photo_url"]
    with ThreadPoolExecutor(3) as pool:
        ids = [r.json()["job_id"] for r in pool.map(lambda n: create(c, f"u-batch-{n}", photo), range(3))]
    kept, dropped = ids[:2], ids[2]
    cancelled_during = []

    def cancel_in_fit(job_id: str, doc: dict) -> None:
        if job_id == dropped and not cancelled_during and doc["status"] == "processing" and doc["stage"] == "fit":
            cancelled_during.append(c.post(f"/api/avatar/cancel/{job_id}").json()["status"])

    with worker(stack.env, stack.cwd, stack.base):
        seen = watch(c, ids, on_doc=cancel_in_fit)
    ends = {j: docs[-1] for j, docs in seen.items()}
    assert cancelled_during == ["cancelled"]
    assert [ends[j]["status"] for j in ids] == ["completed", "completed", "cancelled"]
    # one batch: both completed jobs ran in a batch of three, in the same run (the same stage times)
    assert [ends[j]["timings"]["batch_size"] for j in kept] == [3, 3]
    assert ends[kept[0]]["timings"]["stages_ms"] == ends[kept[1]]["timings"]["stages_ms"]
    for job_id in ids:  # each job showed its own progress through the pipeline's stages
        running = [d for d in seen[job_id] if d["status"] == "processing"]
        assert {"fit"} <= {d["stage"] for d in running}, (job_id, running)
        progress = [d["progress"] for d in running]
        assert progress == sorted(progress), (job_id, progress)
    for job_id in kept:
        assert_charged_once(c, job_id)
    assert_released(c, dropped)
    assert objects(stack, f"avatars/u-batch-2/{dropped}/") == []  # the batch's result for it was thrown away


def test_a_photo_that_fails_does_not_fail_the_others_of_its_batch(stack, bus_jpg, tmp_path):
    c = stack.client("acme")
    bad_path = tmp_path / "nobody.jpg"
    bad_path.write_bytes(nobody_jpeg())
    good = create(c, "u-batch-good", upload(c, bus_jpg)["photo_url"]).json()["job_id"]
    bad = create(c, "u-batch-bad", upload(c, bad_path)["photo_url"]).json()["job_id"]
    with worker(stack.env, stack.cwd, stack.base) as proc:
        ends = {j: docs[-1] for j, docs in watch(c, [good, bad]).items()}
        log = proc.log.read_text()
    assert "batch of 2 failed" in log  # they were taken together, and the batch fell back to single runs
    assert (ends[good]["status"], ends[bad]["status"]) == ("completed", "failed")
    assert ends[bad]["error"]["code"] == "no_person"
    assert_charged_once(c, good)
    assert_released(c, bad)
    assert wait_status(c, good, {"completed"})["files"]

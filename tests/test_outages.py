"""Outages, with real processes: Redis restarted mid-job (its data lost, or kept) and PostgreSQL
stopped for a few seconds mid-job. Every job still ends, completed, and is charged once."""
from __future__ import annotations

import time

import pytest

from servers import pause_postgres, postgres_server, restartable_redis
from service_procs import api_server, run_avatar, worker
from stack import Stack, assert_charged_once, create, follow, service_env, upload, wait_status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def outage(s3, weights_dir, tmp_path_factory):
    """API + one worker over a Redis and a PostgreSQL of their own, which the tests may stop."""
    cwd = tmp_path_factory.mktemp("outages")
    with restartable_redis(cwd) as redis, postgres_server(cwd) as pg:
        env = service_env(pg, s3, redis.url, weights_dir, REAPER_INTERVAL_SECONDS="0.5", WORKER_WARMUP="false")
        with api_server(env, cwd) as base:
            st = Stack(base, env, cwd)
            st.keys = {"acme": st.key("acme")}
            assert run_avatar(env, cwd, "credits", "grant", "--tenant", "acme", "10").returncode == 0
            with worker(env, cwd, base):
                st.redis, st.pg = redis, pg
                yield st


@pytest.mark.parametrize("keep_data", [False, True])
def test_a_redis_restart_mid_job_leaves_no_job_unfinished(outage, bus_jpg, keep_data):
    c = outage.client("acme")
    photo = upload(c, bus_jpg)["photo_url"]
    running = create(c, f"u-redis-{keep_data}", photo).json()["job_id"]
    # a job waiting in the queue while its entry is lost (the reaper queues it again); with the
    # data kept, Redis still holds it and the running one is the case
    waiting = [] if keep_data else [create(c, "u-redis-waiting", photo).json()["job_id"]]
    wait_status(c, running, {"processing"})
    outage.redis.stop(keep_data=keep_data)
    time.sleep(2)
    outage.redis.start()
    for job_id in [running, *waiting]:
        done = follow(c, job_id, timeout=300)[-1]
        assert done["status"] == "completed", done
        assert_charged_once(c, job_id)


def test_postgres_stopped_mid_job_leaves_no_job_unfinished(outage, bus_jpg):
    c = outage.client("acme")
    job_id = create(c, "u-pg", upload(c, bus_jpg)["photo_url"]).json()["job_id"]
    wait_status(c, job_id, {"processing"}, timeout=300)  # the worker may still finish an earlier job
    pause_postgres(outage.pg, 4)
    done = follow(c, job_id, timeout=300)[-1]
    assert done["status"] == "completed", done
    assert_charged_once(c, job_id)

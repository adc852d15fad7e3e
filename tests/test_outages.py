"""Outages, with real processes: Redis restarted mid-job (its data lost, or kept) and PostgreSQL
stopped for a few seconds mid-job. Every job still ends, completed, and is charged once."""
from __future__ import annotations

import time

import pytest

from servers import pause_postgres, postgres_server, restartable_redis
from service_procs import api_server, run_avatar, worker
from stack import Stack, assert_charged_once, assert_released, create, follow, service_env, upload, wait_status

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
            with worker(env, cwd, base) as proc:
                st.redis, st.pg, st.worker = redis, pg, proc
                yield st


@pytest.mark.parametrize("keep_data", [False, True])
def test_a_redis_restart_mid_job_leaves_no_job_unfinished(outage, bus_jpg, zidane_jpg, keep_data):
    c = outage.client("acme")
    running = create(c, f"u-redis-{keep_data}", upload(c, bus_jpg)["photo_url"]).json()["job_id"]
    # a job waiting in the queue while its entry is lost (the reaper queues it again; a photo the
    # pipeline refuses at once: what matters is that it ends); with the data kept, Redis still
    # holds it and the running one is the case
    waiting = [] if keep_data else [create(c, "u-redis-waiting", upload(c, zidane_jpg)["photo_url"]).json()["job_id"]]
    wait_status(c, running, {"processing"})
    outage.redis.stop(keep_data=keep_data)
    # down longer than a heartbeat lives (3 beats of 1 s): with the data kept, the worker's beat
    # runs out while Redis is down and comes back expired, the marker of the data's age stays old
    time.sleep(4)
    outage.redis.start()
    done = follow(c, running, timeout=300)[-1]
    assert done["status"] == "completed", done
    # finished by the try that was running: its worker's heartbeat, gone with Redis' data, was not
    # taken for a dead worker (that handed the job to a second try, which fitted it all again)
    assert all(f"/{running}/t1/" in url for url in done["files"].values()), done["files"]
    assert_charged_once(c, running)
    for job_id in waiting:
        done = follow(c, job_id, timeout=300)[-1]
        assert (done["status"], done["error"]["code"]) == ("failed", "body_truncated"), done
        assert_released(c, job_id)
    assert outage.worker.poll() is None, "the worker ended with Redis' restart"


def test_an_idle_worker_outlives_a_redis_restart_and_takes_the_next_job(outage, zidane_jpg):
    """arq's own loop ended a worker whose poll found Redis gone; a job queued after the restart
    then waited for good."""
    c = outage.client("acme")
    photo = upload(c, zidane_jpg)["photo_url"]
    outage.redis.stop(keep_data=True)
    time.sleep(2)  # the idle worker polls every 0.5 s: it meets the outage
    outage.redis.start()
    job_id = create(c, "u-redis-idle", photo).json()["job_id"]
    done = follow(c, job_id, timeout=120)[-1]
    assert (done["status"], done["error"]["code"]) == ("failed", "body_truncated"), done
    assert outage.worker.poll() is None


def test_postgres_stopped_mid_job_leaves_no_job_unfinished(outage, bus_jpg):
    c = outage.client("acme")
    job_id = create(c, "u-pg", upload(c, bus_jpg)["photo_url"]).json()["job_id"]
    wait_status(c, job_id, {"processing"}, timeout=300)  # the worker may still finish an earlier job
    pause_postgres(outage.pg, 4)
    done = follow(c, job_id, timeout=300)[-1]
    assert done["status"] == "completed", done
    assert_charged_once(c, job_id)

"""The reaper ends or re-queues every job nobody else will: a dead worker's job, a job past its
deadline, a queued job Redis lost. Real Redis, SQLite, a local storage folder."""
from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

from jobkit import kit
from service import jobs, queue
from service.db import utcnow
from service.objects import artefact_key
from service.reaper import Reaper


async def mark_redis_age(redis, age_s: float, run_id: str | None = None) -> None:
    """Make the reaper's marker say this Redis (or, given ``run_id``, that run of it) began
    ``age_s`` ago."""
    run_id = run_id or (await redis.info("server"))["run_id"]
    await redis.set(queue.EPOCH_KEY, json.dumps({"run_id": run_id, "since": time.time() - age_s}))


def sweep_once(tmp_path, redis_url, scenario, redis_age_s: float = 3600, **settings):
    """Run ``scenario`` with a reaper over a Redis whose data is ``redis_age_s`` old."""
    async def go():
        async with kit(tmp_path, redis_url, **settings) as k:
            await mark_redis_age(k.redis, redis_age_s)
            return await scenario(k, Reaper(k.settings, k.sessions, k.redis, k.storage))
    return asyncio.run(go())


def test_a_dead_workers_job_is_queued_again_without_its_tries_files(tmp_path, redis_url):
    async def scenario(k, reaper):
        job = await k.new_job(jobs.PROCESSING, worker="gone:1:ab", attempts=1)
        await k.storage.put_bytes(artefact_key("u1", job.id, "a.glb", 1), b"half")
        done = await reaper.sweep()
        in_redis = await queue.known_job_ids(k.redis, k.settings.queue_name)
        left = await k.storage.exists(artefact_key("u1", job.id, "a.glb", 1))
        return job.id, done, await k.job(job.id), in_redis, left
    job_id, done, job, in_redis, left = sweep_once(tmp_path, redis_url, scenario)
    assert done.requeued == [job_id]
    assert job.status == "queued" and job.worker is None and job.attempts == 1
    assert "waiting for a worker" in job.message
    assert job_id in in_redis and not left


def test_a_missing_heartbeat_counts_only_once_redis_is_older_than_a_heartbeat(tmp_path, redis_url):
    """Redis restarted without its data: every live worker's beat is gone until its next one, and
    a job its worker is still running must not be handed to another (its work would be lost)."""
    async def scenario(k, reaper):
        job = await k.new_job(jobs.PROCESSING, worker="w:1:ab", attempts=1)
        fresh = await reaper.sweep()
        await queue.beat(k.redis, "w:1:ab", {"name": "w:1:ab", "queue": k.settings.queue_name, "current_job": job.id}, 30)
        beaten = await reaper.sweep()
        return fresh, beaten, await k.job(job.id)
    fresh, beaten, job = sweep_once(tmp_path, redis_url, scenario, redis_age_s=1)
    assert (fresh.requeued, fresh.failed, beaten.requeued, job.status) == ([], [], [], "processing")


def test_a_redis_restarted_with_its_data_kept_counts_as_new_for_heartbeats(tmp_path, redis_url):
    """Redis down longer than a heartbeat's life, its data kept: the beats ran out while it was
    down and the marker of its data is old, but the server's run is new; a job its worker is still
    running must not be handed to another before that worker could beat again."""
    async def scenario(k, reaper):
        await mark_redis_age(k.redis, 3600, run_id="0" * 40)  # the run before the restart
        job = await k.new_job(jobs.PROCESSING, worker="w:1:ab", attempts=1)
        fresh = await reaper.sweep()
        age = await queue.redis_age(k.redis)
        await mark_redis_age(k.redis, 3600)  # a heartbeat's life later, still no beat: it is lost
        later = await reaper.sweep()
        return job.id, fresh, age, later
    job_id, fresh, age, later = sweep_once(tmp_path, redis_url, scenario)
    assert (fresh.requeued, fresh.failed) == ([], [])
    assert 0 <= age < 60
    assert later.requeued == [job_id]


def test_a_dead_workers_job_fails_once_its_tries_are_used(tmp_path, redis_url):
    async def scenario(k, reaper):
        job = await k.new_job(jobs.PROCESSING, worker="gone:1:ab", attempts=2)
        done = await reaper.sweep()
        return job.id, done, await k.job(job.id)
    job_id, done, job = sweep_once(tmp_path, redis_url, scenario, job_max_tries=2)
    assert done.failed == [job_id]
    assert (job.status, job.error_code) == ("failed", "worker_lost")


def test_a_live_workers_job_is_left_alone(tmp_path, redis_url):
    async def scenario(k, reaper):
        job = await k.new_job(jobs.PROCESSING, worker="w:1:ab", attempts=1)
        await queue.beat(k.redis, "w:1:ab", {"name": "w:1:ab", "queue": k.settings.queue_name, "current_job": job.id}, 30)
        done = await reaper.sweep()
        return done, await k.job(job.id)
    done, job = sweep_once(tmp_path, redis_url, scenario)
    assert (done.requeued, done.failed, job.status) == ([], [], "processing")


def test_a_worker_alive_but_on_another_job_has_lost_this_one(tmp_path, redis_url):
    async def scenario(k, reaper):
        old = utcnow() - timedelta(seconds=120)
        job = await k.new_job(jobs.PROCESSING, worker="w:1:ab", attempts=1, updated_at=old)
        await queue.beat(k.redis, "w:1:ab", {"name": "w:1:ab", "queue": k.settings.queue_name, "current_job": None}, 30)
        return job.id, await reaper.sweep()
    job_id, done = sweep_once(tmp_path, redis_url, scenario)
    assert done.requeued == [job_id]


def test_every_job_of_a_batching_workers_batch_is_its_own_while_it_beats(tmp_path, redis_url):
    """A worker fitting a batch beats with all of its jobs; none of them is taken from it, even
    quiet for minutes (no progress between a long fit's start and end), only one it dropped."""
    async def scenario(k, reaper):
        old = utcnow() - timedelta(seconds=120)
        held = [await k.new_job(jobs.PROCESSING, worker="w:1:ab", attempts=1, updated_at=old) for _ in range(2)]
        dropped = await k.new_job(jobs.PROCESSING, worker="w:1:ab", attempts=1, updated_at=old)
        await queue.beat(k.redis, "w:1:ab", {"name": "w:1:ab", "queue": k.settings.queue_name,
                                             "current_job": held[0].id, "current_jobs": [j.id for j in held]}, 30)
        done = await reaper.sweep()
        return done, [(await k.job(j.id)).status for j in held], dropped.id
    done, statuses, dropped = sweep_once(tmp_path, redis_url, scenario)
    assert statuses == ["processing", "processing"]
    assert done.requeued == [dropped]


def test_every_job_a_runpod_runner_follows_is_its_own_while_it_beats(tmp_path, redis_url):
    """The RunPod backend's worker follows several jobs at once; its own heartbeat lists them
    all, so the reaper takes none of them from it, however quiet."""
    from types import SimpleNamespace

    from service.backends.runpod import RunpodRunner

    async def scenario(k, reaper):
        old = utcnow() - timedelta(seconds=120)
        runner = RunpodRunner(k.settings, k.sessions, k.storage, k.redis,
                              client=SimpleNamespace(endpoint_id="ep1"))
        held = [await k.new_job(jobs.PROCESSING, worker=runner.name, attempts=1, updated_at=old)
                for _ in range(3)]
        runner.current.update(j.id for j in held)
        beating = asyncio.create_task(runner.heartbeat_forever())
        while runner.name not in {w.get("name") for w in await queue.live_workers(k.redis, k.settings.queue_name)}:
            await asyncio.sleep(0.01)
        done = await reaper.sweep()
        beating.cancel()
        return done, [(await k.job(j.id)).status for j in held]
    done, statuses = sweep_once(tmp_path, redis_url, scenario)
    assert statuses == ["processing"] * 3 and done.requeued == []


def test_a_job_past_its_deadline_fails_and_its_worker_is_told_to_stop(tmp_path, redis_url):
    async def scenario(k, reaper):
        created = utcnow() - timedelta(seconds=k.settings.job_deadline_seconds + 1)
        late = await k.new_job(jobs.PROCESSING, worker="w:1:ab", attempts=1, created_at=created)
        waiting = await k.new_job(created_at=created)
        await queue.beat(k.redis, "w:1:ab", {"name": "w:1:ab", "queue": k.settings.queue_name, "current_job": late.id}, 30)
        done = await reaper.sweep()
        told = await queue.cancel_requested(k.redis, late.id)
        return done, await k.job(late.id), await k.job(waiting.id), told
    done, late, waiting, told = sweep_once(tmp_path, redis_url, scenario)
    assert sorted(done.failed) == sorted([late.id, waiting.id])
    assert late.error_code == waiting.error_code == "deadline_exceeded" and told


def test_a_queued_job_redis_lost_is_queued_again_and_a_known_one_is_not(tmp_path, redis_url):
    async def scenario(k, reaper):
        old = utcnow() - timedelta(seconds=120)
        lost = await k.new_job(updated_at=old)
        kept = await k.new_job(updated_at=old)
        await queue.enqueue(k.redis, k.settings.queue_name, kept.id)
        fresh = await k.new_job()  # just created: the API enqueues it a moment after the row
        done = await reaper.sweep()
        return done, lost.id, fresh.id, await queue.known_job_ids(k.redis, k.settings.queue_name)
    done, lost, fresh, known = sweep_once(tmp_path, redis_url, scenario)
    assert done.reenqueued == [lost] and lost in known and fresh not in known


def test_a_queue_entry_whose_data_expired_counts_as_lost(tmp_path, redis_url):
    async def scenario(k, reaper):
        job = await k.new_job(updated_at=utcnow() - timedelta(seconds=120))
        arq_id = await queue.enqueue(k.redis, k.settings.queue_name, job.id)
        await k.redis.delete(f"arq:job:{arq_id}")  # what arq's 1-day expiry does
        return job.id, await reaper.sweep()
    job_id, done = sweep_once(tmp_path, redis_url, scenario)
    assert done.reenqueued == [job_id]


def test_one_reaper_sweeps_however_many_api_processes_run(tmp_path, redis_url):
    async def scenario(k, reaper):
        other = Reaper(k.settings, k.sessions, k.redis, k.storage)
        first = await queue.take_lock(k.redis, "reaper-test", reaper.owner, 5)
        second = await queue.take_lock(k.redis, "reaper-test", other.owner, 5)
        again = await queue.take_lock(k.redis, "reaper-test", reaper.owner, 5)
        await k.redis.delete("avatar:lock:reaper-test")
        return first, second, again
    assert sweep_once(tmp_path, redis_url, scenario) == (True, False, True)


def test_a_worker_of_another_queue_on_the_same_redis_does_not_count(tmp_path, redis_url):
    async def scenario(k, reaper):
        job = await k.new_job(jobs.PROCESSING, worker="w:1:ab", attempts=1)
        await queue.beat(k.redis, "w:1:ab", {"name": "w:1:ab", "queue": "another:service", "current_job": job.id}, 30)
        done = await reaper.sweep()
        await k.redis.delete("avatar:worker:w:1:ab")
        return job.id, done
    job_id, done = sweep_once(tmp_path, redis_url, scenario)
    assert done.requeued == [job_id]


def test_a_redis_that_refuses_info_still_lets_the_reaper_judge_heartbeats(tmp_path, redis_url):
    """Some managed Redis services refuse INFO (where the server's run_id comes from): the
    reaper then goes by the data's age alone, and a dead worker's job is still queued again."""
    import redis as redis_py

    admin = redis_py.Redis.from_url(redis_url)
    admin.acl_setuser("noinfo", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                      commands=["+@all", "-info"])
    try:
        limited = redis_url.replace("redis://", "redis://noinfo:pw@", 1)

        async def scenario(k, reaper):
            with_info = await queue.redis_age(k.redis)  # the default user: the marker names the run
            async with kit(tmp_path / "limited", limited) as lk:
                try:
                    await lk.redis.info("server")
                    refused = False
                except redis_py.exceptions.ResponseError:
                    refused = True
                job = await k.new_job(jobs.PROCESSING, worker="gone:1:ab", attempts=1)
                done = await Reaper(k.settings, k.sessions, lk.redis, k.storage).sweep()
                return refused, with_info, job.id, done
        refused, with_info, job_id, done = sweep_once(tmp_path, redis_url, scenario)
        assert refused and with_info > 3000
        assert done.requeued == [job_id]
    finally:
        admin.acl_deluser("noinfo")
        admin.close()

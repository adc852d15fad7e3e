"""The worker's runner: every try ends the job or hands it back, tries never touch each other's
files, and a pipeline is never run twice at once. A stand-in pipeline (a thread that waits on
events) makes the timing exact; Redis, the database and storage are real."""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from inference.pipeline import Result
from jobkit import kit
from service import jobs
from service.objects import artefact_key, try_prefix
from service.worker import JobRunner


class SlowPipeline:
    """Runs until ``release`` is set, checking the cancel flag like the real stages do."""

    body_model = "anny"

    def __init__(self):
        self.release = threading.Event()
        self.started = threading.Event()
        self.running = 0
        self.most_at_once = 0
        self.ended_at: float | None = None

    def run(self, job, on_stage=None, cancel=None) -> Result:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        self.started.set()
        try:
            while not self.release.wait(0.05):
                if cancel and cancel():
                    time.sleep(0.3)  # the rest of the current stage
                    from inference.errors import CancelledError
                    raise CancelledError("cancelled")
            job.out_dir.mkdir(parents=True)
            (job.out_dir / "avatar_textured.glb").write_bytes(b"glb")
            return Result(job.out_dir, {"avatar_textured.glb": job.out_dir / "avatar_textured.glb"},
                          {"chest": 100.0}, {"fit": 1.0}, 1.0, "anny", {})
        finally:
            self.running -= 1
            self.ended_at = time.monotonic()


async def _started(pipe: SlowPipeline) -> None:
    await asyncio.to_thread(pipe.started.wait, 10)


def run_kit(tmp_path, redis_url, scenario, **settings):
    async def go():
        async with kit(tmp_path, redis_url, **settings) as k:
            await k.storage.put_bytes("photos/acme/p1", b"\xff\xd8\xff fake jpeg")
            return await scenario(k)
    return asyncio.run(go())


def runner(k, pipe, name="w:1:aa") -> JobRunner:
    return JobRunner(k.settings, k.sessions, k.storage, k.redis, pipe, name=name)


def test_a_timed_out_try_frees_the_pipeline_before_the_next_job_starts(tmp_path, redis_url):
    async def scenario(k):
        pipe = SlowPipeline()
        r = runner(k, pipe)
        first, second = await k.new_job(), await k.new_job()
        t1 = asyncio.create_task(r.run(first.id))
        await _started(pipe)
        t2 = asyncio.create_task(r.run(second.id))
        status1 = await t1
        ended, second_started = pipe.ended_at, time.monotonic()
        pipe.release.set()
        status2 = await t2
        return status1, (await k.job(first.id)).error_code, status2, pipe.most_at_once, ended <= second_started
    s1, code, s2, most, in_order = run_kit(tmp_path, redis_url, scenario, job_timeout_seconds=1)
    assert (s1, code, s2) == ("failed", "timeout", "completed")
    assert most == 1 and in_order


def test_a_stopping_worker_hands_its_job_back_untried(tmp_path, redis_url):
    async def scenario(k):
        pipe = SlowPipeline()
        job = await k.new_job()
        task = asyncio.create_task(runner(k, pipe).run(job.id))
        await _started(pipe)
        task.cancel()  # what arq does to a running job on SIGTERM
        try:
            await task
        except asyncio.CancelledError:
            pass
        return await k.job(job.id), pipe.running, await k.storage.exists(artefact_key("u1", job.id, "x", 1))
    job, still_running, files_left = run_kit(tmp_path, redis_url, scenario)
    assert (job.status, job.attempts, job.worker) == ("queued", 0, None)
    assert still_running == 0 and not files_left


def test_a_worker_stopped_while_it_takes_a_job_hands_it_back_untried(tmp_path, redis_url, monkeypatch):
    """A stop (arq cancels the task) that lands after the take counted the try but before the run
    began: the job goes back untried, not left processing for the reaper to fail once the worker
    is gone (here its last try: JOB_MAX_TRIES is 2 and one try was used)."""
    from service import events

    real, hold = events.publish, {}

    async def publish(redis, job_id):  # the real publish; once, the stop arrives while it runs
        await real(redis, job_id)
        if hold.pop("once", None):
            hold["taken"].set()
            await hold["stopped"].wait()

    monkeypatch.setattr(events, "publish", publish)

    async def scenario(k):
        pipe = SlowPipeline()
        job = await k.new_job(attempts=1)
        hold.update(once=True, taken=asyncio.Event(), stopped=asyncio.Event())
        task = asyncio.create_task(runner(k, pipe).run(job.id))
        await asyncio.wait_for(hold["taken"].wait(), 10)
        taken = await k.job(job.id)
        task.cancel()
        await asyncio.sleep(0.1)  # the cancel is delivered while the take's publish runs
        hold["stopped"].set()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return taken, await k.job(job.id), pipe.started.is_set()
    taken, job, ran = run_kit(tmp_path, redis_url, scenario)
    assert (taken.status, taken.attempts) == ("processing", 2)  # the take had counted this try
    assert (job.status, job.attempts, job.worker) == ("queued", 1, None)
    assert not ran


def test_a_late_try_cannot_finish_or_delete_the_job_another_try_completed(tmp_path, redis_url):
    async def scenario(k):
        slow, fast = SlowPipeline(), SlowPipeline()
        fast.release.set()
        job = await k.new_job()
        late = asyncio.create_task(runner(k, slow, "w:1:aa").run(job.id))
        await _started(slow)
        async with k.sessions() as s:  # the reaper gives up on try 1 (its worker looked dead)
            assert await jobs.move(s, job.id, jobs.QUEUED, owner=("w:1:aa", 1), worker=None)
        second = await runner(k, fast, "w:2:bb").run(job.id)
        slow.release.set()
        first = await late
        done = await k.job(job.id)
        return first, second, done, await k.storage.exists(done.files["avatar_textured.glb"])
    first, second, done, present = run_kit(tmp_path, redis_url, scenario)
    assert second == "completed" and first == "completed"  # the status the job has, not the late try's
    assert done.attempts == 2 and done.worker == "w:2:bb"
    assert done.files["avatar_textured.glb"] == artefact_key("u1", done.id, "avatar_textured.glb", 2)
    assert present


def test_storage_refusing_writes_fails_the_job_with_nothing_stored(tmp_path, redis_url):
    async def scenario(k):
        pipe = SlowPipeline()
        pipe.release.set()
        job = await k.new_job()
        (Path(k.storage.root) / "avatars").write_bytes(b"")  # a file where the folder must go
        status = await runner(k, pipe).run(job.id)
        return status, await k.job(job.id), await k.storage.exists(try_prefix("u1", job.id, 1) + "avatar_textured.glb")
    status, job, stored = run_kit(tmp_path, redis_url, scenario)
    assert (status, job.error_code) == ("failed", "internal_error") and not stored
    assert "Error" not in job.error_message and "avatars" not in job.error_message  # no internals to clients


def test_a_job_another_worker_runs_is_not_taken_again(tmp_path, redis_url):
    async def scenario(k):
        pipe = SlowPipeline()
        pipe.release.set()
        job = await k.new_job(jobs.PROCESSING, worker="w:9:zz", attempts=1)
        status = await runner(k, pipe).run(job.id)
        return status, await k.job(job.id), pipe.started.is_set()
    status, job, ran = run_kit(tmp_path, redis_url, scenario)
    assert (status, job.worker, job.attempts, ran) == ("processing", "w:9:zz", 1, False)


class BatchPipeline(SlowPipeline):
    """Records the batches it is given; ``run`` is a batch of one."""

    def __init__(self):
        super().__init__()
        self.release.set()
        self.batches: list[int] = []
        self.first_start: float | None = None

    def run(self, job, on_stage=None, cancel=None) -> Result:
        return self.run_batch([job], on_stage, cancel)[0]

    def run_batch(self, jobs, on_stage=None, cancel=None) -> list[Result]:
        self.first_start = self.first_start or time.monotonic()
        self.batches.append(len(jobs))
        return [SlowPipeline.run(self, job, on_stage, cancel) for job in jobs]


def test_a_job_taken_alone_starts_at_once_whatever_the_batch_window(tmp_path, redis_url):
    async def scenario(k):
        pipe = BatchPipeline()
        job = await k.new_job()
        t0 = time.monotonic()
        status = await runner(k, pipe).run(job.id)
        return status, pipe.first_start - t0, pipe.batches
    status, waited, batches = run_kit(tmp_path, redis_url, scenario, worker_batch=4, worker_batch_wait_ms=3000)
    assert status == "completed" and batches == [1]
    assert waited < 1.5, waited  # nothing else was on its way: no wait for the 3 s window


def test_jobs_taken_together_are_run_as_one_batch(tmp_path, redis_url):
    async def scenario(k):
        pipe = BatchPipeline()
        r = runner(k, pipe)
        made = [await k.new_job() for _ in range(3)]
        statuses = await asyncio.gather(*(r.run(j.id) for j in made))
        return statuses, pipe.batches, [(await k.job(j.id)).timings["batch_size"] for j in made]
    statuses, batches, sizes = run_kit(tmp_path, redis_url, scenario, worker_batch=4, worker_batch_wait_ms=3000)
    assert statuses == ["completed"] * 3
    assert batches == [3] and sizes == [3, 3, 3]

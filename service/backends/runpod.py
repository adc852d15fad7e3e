"""The RunPod backend: a job taken from our queue is submitted to a RunPod serverless endpoint
(``{RUNPOD_BASE_URL}/{RUNPOD_ENDPOINT_ID}/run``, the photo as an expiring link) and followed
on ``/status`` until it ends; its artefacts are stored exactly where a local job stores them.

It runs in a queue worker that needs no GPU (``avatar worker --backend runpod``), never in the
API: the RunPod job id is kept on the job row, so a restarted worker follows the same RunPod job
instead of submitting it again. Every path ends the job: RunPod's answer, a refused key or
endpoint (the message names the setting), or the job's deadline (``JOB_TIMEOUT_SECONDS`` from
its creation), which also cancels the RunPod job."""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update

from service import jobs, queue
from service.db import Job, utcnow
from service.job_hooks import WorkerStores
from service.runpod_protocol import (CANCELLED, COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE, TIMED_OUT,
                                     TIMEOUT_CODE, split_error)
from service.objects import artefact_key, try_prefix
from service.worker import stored_fit, worker_name

log = logging.getLogger("avatar.runpod")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_RUNPOD_SHARE = 0.9  # RunPod's 0-100 progress fills our 0-90; storing the artefacts fills the rest
MAX_BACKOFF_S = 30.0


class RunpodRefused(Exception):
    """RunPod (or its output) makes the job impossible: fail it with this code and message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class RunpodBusy(Exception):
    """429, 5xx or no answer: worth asking again after a pause."""


class DeadlinePassed(Exception):
    pass


class RunpodClient:
    """RunPod's serverless job API for one endpoint (``run``, ``status``, ``cancel``)."""

    def __init__(self, base_url: str, endpoint_id: str, api_key: str, timeout: float = 30.0):
        self.endpoint_url = f"{base_url.rstrip('/')}/{endpoint_id}"
        self.endpoint_id = endpoint_id
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False,
                                       headers={"Authorization": f"Bearer {api_key}"})

    async def aclose(self) -> None:
        await self._http.aclose()

    async def run(self, payload: dict) -> dict:
        return await self._call("POST", "/run", payload)

    async def status(self, runpod_id: str) -> dict:
        return await self._call("GET", f"/status/{runpod_id}")

    async def cancel(self, runpod_id: str) -> dict:
        return await self._call("POST", f"/cancel/{runpod_id}")

    async def _call(self, method: str, path: str, payload: dict | None = None) -> dict:
        try:
            r = await self._http.request(method, self.endpoint_url + path, json=payload)
        except httpx.HTTPError as exc:
            raise RunpodBusy(f"RunPod did not answer {path} ({exc.__class__.__name__})") from exc
        if r.status_code in (401, 403):
            raise RunpodRefused("runpod_unauthorized", f"RunPod refused the API key (HTTP {r.status_code} on "
                                                       f"{path}): check RUNPOD_API_KEY")
        if r.status_code == 404:
            raise RunpodRefused("runpod_not_found", f"RunPod answered 404 for {path} at {self.endpoint_url}: "
                                                    "check RUNPOD_ENDPOINT_ID (and RUNPOD_BASE_URL)")
        if r.status_code == 429 or r.status_code >= 500:
            raise RunpodBusy(f"RunPod answered HTTP {r.status_code} on {path}")
        if not r.is_success:
            raise RunpodRefused("runpod_error", f"RunPod answered HTTP {r.status_code} on {path}: {r.text[:500]}")
        try:
            return r.json()
        except ValueError as exc:
            raise RunpodBusy(f"RunPod answered {path} with something that is not JSON") from exc


@dataclass(kw_only=True)
class RunpodRunner(WorkerStores):
    """Runs one job on RunPod (the same ``run(job_id)`` as the local runner)."""

    client: RunpodClient
    name: str = field(default_factory=worker_name)
    jobs_done: int = 0
    current: set[str] = field(default_factory=set)

    async def run(self, job_id: str, job_try: int = 1) -> str:
        self.current.add(job_id)
        try:
            return await self._run(job_id)
        finally:
            self.current.discard(job_id)
            self.jobs_done += 1

    async def _run(self, job_id: str) -> str:
        job = await self._job(job_id)
        if job is None or job.status in jobs.FINAL:
            return job.status if job else "missing"
        since = utcnow() if job.retries else job.created_at  # a /v2 retry gets a whole run's time again
        deadline = time.time() + (since + timedelta(seconds=self.settings.job_timeout_seconds)
                                  - utcnow()).total_seconds()
        runpod_id = job.runpod_id
        try:
            if runpod_id is None:
                runpod_id = await self._submit(job, deadline)
            else:
                log.info("job %s: following RunPod job %s again", job_id, runpod_id)
            return await self._follow(job_id, runpod_id, deadline)
        except RunpodRefused as exc:
            await self._drop_files(job.id)
            await self._finish(job_id, jobs.FAILED, error_code=exc.code, error_message=str(exc))
            await self._cancel_remote(runpod_id)
            log.warning("job %s: failed: %s", job_id, exc)
            return jobs.FAILED
        except DeadlinePassed:
            await self._cancel_remote(runpod_id)
            await self._finish(job_id, jobs.FAILED, error_code=TIMEOUT_CODE,
                               error_message=f"RunPod did not finish the job within JOB_TIMEOUT_SECONDS="
                                             f"{self.settings.job_timeout_seconds} s of its creation")
            return jobs.FAILED
        except asyncio.CancelledError:  # worker shutdown: the job stays; its RunPod id lets a worker resume
            raise
        except Exception as exc:  # a bug or a storage outage: the job still ends, with the reason
            log.exception("job %s: internal error", job_id)
            await self._cancel_remote(runpod_id)
            await self._drop_files(job.id)
            await self._finish(job_id, jobs.FAILED, error_code="internal_error",
                               error_message=f"{exc.__class__.__name__}: {exc}")
            return jobs.FAILED

    async def _submit(self, job: Job, deadline: float) -> str:
        payload: dict[str, Any] = {
            "input": {"photo_url": self._photo_link(job), "height": job.height_cm, "weight": job.weight_kg,
                      "gender": job.gender, "clothing": job.clothing, "user_id": job.user_id},
            "policy": {"executionTimeout": max(1000, int((deadline - time.time()) * 1000))},
        }
        if job.weight_source != "reported":
            # sent only when it is not the default: a handler image from before the field refuses any
            # input it does not know, so jobs with the default still run on one
            payload["input"]["weight_source"] = job.weight_source
        answer = await self._retrying(lambda: self.client.run(payload), deadline)
        runpod_id = str(answer.get("id") or "")
        if not runpod_id:
            raise RunpodRefused("runpod_error", f"RunPod's /run answer carries no job id: {str(answer)[:300]}")
        async with self.sessions() as s:
            await s.execute(update(Job).where(Job.id == job.id).values(
                runpod_id=runpod_id, message=f"submitted to RunPod endpoint {self.client.endpoint_id}",
                updated_at=utcnow()).execution_options(synchronize_session=False))
            await s.commit()
        log.info("job %s: submitted to RunPod as %s", job.id, runpod_id)
        return runpod_id

    def _photo_link(self, job: Job) -> str:
        if not job.photo_key:
            return job.photo_source_url
        base = self.settings.public_base_url or f"http://{self.settings.host}:{self.settings.port}"
        return self.storage.url(job.photo_key, base)

    async def _follow(self, job_id: str, runpod_id: str, deadline: float) -> str:
        while True:
            job = await self._job(job_id)
            if job.status in jobs.FINAL:  # cancelled through our API, or ended by a /v2 policy
                await self._cancel_remote(runpod_id)
                return job.status
            doc = await self._retrying(lambda: self.client.status(runpod_id), deadline)
            state = doc.get("status")
            if state == IN_PROGRESS:
                await self._progress(job, doc.get("output"))
            elif state == COMPLETED:
                return await self._complete(job, doc)
            elif state == FAILED:
                code, message = split_error(doc.get("error") or "RunPod reported the job FAILED", "runpod_failed")
                await self._finish(job_id, jobs.FAILED, error_code=code, error_message=message)
                return jobs.FAILED
            elif state == TIMED_OUT:
                await self._finish(job_id, jobs.FAILED, error_code=TIMEOUT_CODE,
                                   error_message=f"RunPod timed the job out: {doc.get('error') or 'TIMED_OUT'}")
                return jobs.FAILED
            elif state == CANCELLED:
                await self._finish(job_id, jobs.CANCELLED, message="cancelled on RunPod")
                return jobs.CANCELLED
            elif state != IN_QUEUE:
                log.warning("job %s: RunPod status %r not understood; asking again", job_id, state)
            if time.time() >= deadline:
                raise DeadlinePassed()
            await asyncio.sleep(min(self.settings.runpod_poll_seconds, max(0.0, deadline - time.time())))

    async def _retrying(self, call, deadline: float) -> dict:
        """``call()`` again after 429/5xx/no answer, with doubling pauses, until the deadline."""
        pause = min(1.0, self.settings.runpod_poll_seconds)
        while True:
            try:
                return await call()
            except RunpodBusy as exc:
                if time.time() + pause >= deadline:
                    raise DeadlinePassed() from exc
                log.info("%s; again in %.1f s", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_BACKOFF_S)

    async def _take(self, job: Job, progress: int = 0, stage: str = "runpod",
                    message: str = "running on RunPod") -> bool:
        """queued → processing, once, when RunPod starts the job; True when this call took it."""
        if job.status != jobs.QUEUED:
            return False
        async with self.sessions() as s:
            await jobs.move(s, job.id, jobs.PROCESSING, attempts=job.attempts + 1, worker=self.name,
                            started_at=utcnow(), progress=progress, stage=stage, message=message)
        job.status = jobs.PROCESSING
        return True

    async def _progress(self, job: Job, output: Any) -> None:
        """The stage progress the handler sent (``progress_update``), shown as RunPod shows it."""
        if not (isinstance(output, dict) and isinstance(output.get("progress"), (int, float))):
            await self._take(job)
            return
        pct = int(max(0, min(100, output["progress"])) * _RUNPOD_SHARE)
        stage, message = output.get("stage") or "runpod", str(output.get("message") or "running on RunPod")
        if not await self._take(job, pct, stage, message):
            async with self.sessions() as s:
                await jobs.report_progress(s, job.id, max(pct, job.progress), stage, message)

    async def _complete(self, job: Job, doc: dict) -> str:
        await self._take(job)
        try_no = max((await self._job(job.id)).attempts, 1)  # this try's own prefix (service.objects)
        output = doc.get("output") if isinstance(doc.get("output"), dict) else {}
        blobs = output.get("files_base64")
        if not isinstance(blobs, dict) or not blobs:
            raise RunpodRefused("runpod_bad_output", "RunPod's output has no files_base64: is the endpoint "
                                                     "running runpod_handler.py without an upload target?")
        files, started = {}, time.monotonic()
        for name, data in blobs.items():
            if not _FILE_NAME.match(name):
                raise RunpodRefused("runpod_bad_output", f"RunPod's output names a file {name[:80]!r}")
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, TypeError) as exc:
                raise RunpodRefused("runpod_bad_output", f"{name} in RunPod's output is not base64") from exc
            key = artefact_key(job.user_id, job.id, name, try_no)
            await self.storage.put_bytes(key, raw)
            files[name] = key
        timings = {**(output.get("timings") or {}), "store_ms": round((time.monotonic() - started) * 1000, 1),
                   "runpod": {"id": doc.get("id"), "delayTime": doc.get("delayTime"),
                              "executionTime": doc.get("executionTime")}}
        async with self.sessions() as s:
            done = await jobs.move(s, job.id, jobs.COMPLETED, files=files, measurements=output.get("measurements") or {},
                                   timings=timings, body_model=output.get("body_model"),
                                   fit=stored_fit(job, output.get("fit")), stage="done", message="avatar ready")
        if not done:  # cancelled while we stored: the job says cancelled, so drop the files
            await self._drop_files(job.id)
            return (await self._job(job.id)).status
        log.info("job %s: completed on RunPod", job.id)
        return jobs.COMPLETED

    async def _cancel_remote(self, runpod_id: str | None) -> None:
        if runpod_id:
            try:
                await self.client.cancel(runpod_id)
            except (RunpodBusy, RunpodRefused) as exc:
                log.warning("could not cancel RunPod job %s: %s", runpod_id, exc)

    async def _drop_files(self, job_id: str) -> None:
        """Remove what this try stored (its own prefix; another try's delivered files stay)."""
        job = await self._job(job_id)
        if job is not None:
            await self.storage.delete_prefix(try_prefix(job.user_id, job.id, max(job.attempts, 1)))

    async def _job(self, job_id: str) -> Job | None:
        async with self.sessions() as s:
            return await s.get(Job, job_id)

    async def _finish(self, job_id: str, status: str, **values) -> None:
        values.setdefault("message", status)
        async with self.sessions() as s:
            await jobs.move(s, job_id, status, **values)

    async def heartbeat_forever(self) -> None:
        """The same heartbeat as a GPU worker's, so /ready and /v2 health see this one."""
        started, ttl = time.time(), self.settings.heartbeat_seconds * 3
        try:
            while True:
                await queue.beat(self.redis, self.name, {
                    "name": self.name, "device": f"runpod:{self.client.endpoint_id}", "backend": "runpod",
                    "queue": self.settings.queue_name, "started_at": started, "jobs_done": self.jobs_done,
                    "current_job": next(iter(self.current), None), "current_jobs": sorted(self.current),
                    "running": len(self.current)}, ttl)
                await asyncio.sleep(self.settings.heartbeat_seconds)
        finally:
            await queue.stop_beating(self.redis, self.name)

"""The same Pipeline as a RunPod serverless worker (the other side of ``BACKEND=runpod``).

The Pipeline is loaded once per worker process, before the first job. A job's ``input`` is
checked with the API's own rules (``service.runpod_protocol.HandlerInput``: the fields and limits
of ``POST /api/avatar/create``; ``photo_url`` fetched with the API's size, type and address
rules); each stage is reported with ``runpod.serverless.progress_update``; the output is
``{"files_base64", "measurements", "timings", "body_model", "fit"}``, the shape the old backend
decodes. With ``input.upload`` (presigned PUT URLs per file name, or bucket settings) the files
go there and ``output.files`` lists their keys. Bad input and pipeline errors come back as
``{"error": "code: message"}``.

    python runpod_handler.py                      # on RunPod (the image's CMD)
    python runpod_handler.py --test_input '{"input": {...}}' [--output_file out.json]   # one job, locally
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import runpod
from pydantic import ValidationError

from inference.errors import AvatarError, InputError
from inference.pipeline import Job, Pipeline, PipelineConfig, StageEvent
from inference.types import Subject
from service.errors import validation_message
from service.photos import check_host_public, check_url_shape, fetch_photo
from service.runpod_protocol import AvatarOutput, HandlerInput, Progress, UploadTarget, error_text
from service.settings import get_settings
from service.storage import S3Storage

log = logging.getLogger("avatar.runpod_handler")
_pipeline: Pipeline | None = None


def pipeline() -> Pipeline:
    """The process's one Pipeline (models load once, not per job)."""
    global _pipeline
    if _pipeline is None:
        s = get_settings()
        _pipeline = Pipeline(PipelineConfig(device=s.worker_device, body_model=s.worker_body_model), log.info)
    return _pipeline


def report(job: dict, progress: Progress) -> None:
    """Progress to RunPod (its /status shows it as ``output`` while the job runs); logged when
    the handler runs outside RunPod (``--test_input``), where there is nobody to send it to."""
    if os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        runpod.serverless.progress_update(job, progress.model_dump())
    else:
        log.info("progress %d%% %s", progress.progress, progress.message)


async def handler(job: dict) -> dict:
    try:
        inp = HandlerInput.model_validate(job.get("input") or {})
    except ValidationError as exc:
        return {"error": error_text("invalid_input", validation_message(exc.errors()))}
    try:
        return await _run(job, inp)
    except AvatarError as exc:
        return {"error": error_text(exc.code, str(exc))}
    except Exception as exc:  # never a crash or a hang: the job ends with the reason
        log.exception("job %s: internal error", job.get("id"))
        return {"error": error_text("internal_error", f"{exc.__class__.__name__}: {exc}")}


async def _run(job: dict, inp: HandlerInput) -> dict:
    settings = get_settings()
    # checked before the photo is fetched: the fields' own rules cannot say that a scale weight needs a weight
    subject = Subject(height_cm=inp.height, gender=inp.gender, weight_kg=inp.weight, clothing=inp.clothing,
                      weight_source=inp.weight_source).validate()
    photo = await fetch_photo(inp.photo_url, max_bytes=settings.max_upload_bytes,
                              timeout=settings.photo_fetch_timeout_seconds,
                              allow_private=settings.allow_private_photo_urls)

    def on_stage(ev: StageEvent) -> None:
        verb = "running" if ev.status == "start" else "finished"
        report(job, Progress(progress=int(ev.progress * 100), stage=ev.stage,
                             message=f"{verb} {ev.stage} ({ev.index}/{ev.total})"))

    with tempfile.TemporaryDirectory(prefix="avatar-runpod-") as tmp:
        result = await asyncio.to_thread(pipeline().run, Job(photo, subject, Path(tmp) / "out"), on_stage)
        out = AvatarOutput(measurements=result.measurements, body_model=result.body_model, fit=result.fit,
                           timings={"stages_ms": result.timings_ms, "total_ms": result.total_ms})
        paths = dict(result.files)
        if inp.upload:
            out.files = await upload(paths, inp.upload, settings.allow_private_photo_urls)
            paths = {name: p for name, p in paths.items() if name not in out.files}
        if paths:
            out.files_base64 = {name: base64.b64encode(p.read_bytes()).decode() for name, p in paths.items()}
    return out.model_dump(exclude_none=True)


async def upload(paths: dict[str, Path], target: UploadTarget, allow_private: bool) -> dict[str, str]:
    """Put the files where the input said; returns {name: object key}. A presigned URL per
    file name (files without one come back in base64), or every file into the bucket."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return await _upload(paths, target, allow_private)
    except (BotoCoreError, ClientError, httpx.HTTPError, ValueError) as exc:
        raise InputError(f"uploading the files failed: {exc.__class__.__name__}: {exc}", "upload_failed") from exc


async def _upload(paths: dict[str, Path], target: UploadTarget, allow_private: bool) -> dict[str, str]:
    if target.bucket:
        b = target.bucket
        store = S3Storage(b.bucket, b.endpoint_url, None, b.access_key_id, b.secret_access_key, b.region,
                          3600, create_bucket=False)
        keys = {name: f"{b.prefix.rstrip('/')}/{name}" if b.prefix else name for name in paths}
        await asyncio.gather(*(store.put_file(keys[name], p) for name, p in paths.items()))
        return keys
    keys = {}
    async with httpx.AsyncClient(timeout=120, follow_redirects=False) as client:
        for name, url in (target.urls or {}).items():
            if name not in paths:
                continue
            check_url_shape(url)
            await check_host_public(url, allow_private)
            # no Content-Type: a SigV2 presigned URL signs it, so only the one it was made with would pass
            r = await client.put(url, content=paths[name].read_bytes())
            if not r.is_success:
                raise InputError(f"uploading {name} to its presigned URL answered HTTP {r.status_code}",
                                 "upload_failed")
            keys[name] = urlparse(url).path.lstrip("/")
    return keys


def _save_output(handler_fn, path: Path):
    """``--output_file``: the SDK's local mode logs only the first 4 KB of an output; keep it whole."""
    async def wrapped(job: dict) -> dict:
        out = await handler_fn(job)
        path.write_text(json.dumps(out))
        return out
    return wrapped


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--output_file", type=Path, default=None)
    own, rest = ap.parse_known_args()
    sys.argv = [sys.argv[0], *rest]  # the SDK parses the rest (--test_input, --rp_serve_api ...)
    pipeline()  # load the models before the first job
    run: Any = _save_output(handler, own.output_file) if own.output_file else handler
    runpod.serverless.start({"handler": run})

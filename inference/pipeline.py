"""Pipeline: models loaded once per process; each run goes load → detect → segment → fit →
export → measure → render, every stage timed and reported through a callback, a cancel flag
checked between stages, and the output folder appearing atomically (all files or none).
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from inference import artefacts
from inference.bodies.base import BodyModel
from inference.errors import CancelledError, InputError, MissingWeightError
from inference.stages import export
from inference.stages.detect import Detector, choose_subject
from inference.stages.fit import FitConfig, Fitter, FitResult, FitTarget
from inference.stages.load import DEFAULT_MAX_PIXELS, DEFAULT_WORK_SIZE, load_photo
from inference.stages.measure import measure
from inference.stages.segment import Segmenter, legs_from_mask
from inference.types import Photo, Subject
from inference import weights as W

STAGES = ("load", "detect", "segment", "fit", "export", "measure", "render")
# stages that need only the fit (and the export's texture) and run beside the export on the
# pipeline's side thread; each one's time is its own wall time, which overlaps the export's
BESIDE_EXPORT = ("measure", "render")
BODY_MODELS = ("auto", "smpl", "anny")


@dataclass
class PipelineConfig:
    device: str = "auto"
    body_model: str = "auto"
    weights_dir: Path = field(default_factory=W.default_weights_dir)
    max_pixels: int = DEFAULT_MAX_PIXELS
    work_size: int = DEFAULT_WORK_SIZE
    texture_size: int = 1024
    preview_size: int = 512
    # render in a child process (``inference.stages.render_process``); False: on a thread of
    # this one, as before (the images are the same)
    render_process: bool = True
    fit: FitConfig = field(default_factory=FitConfig)


@dataclass
class Job:
    """One photo to turn into an avatar."""

    photo: str | Path | bytes
    subject: Subject
    out_dir: Path


@dataclass
class StageEvent:
    stage: str
    status: str  # "start" | "end"
    index: int  # stage number, 1-based
    total: int  # number of stages
    elapsed_ms: float | None = None

    @property
    def progress(self) -> float:
        """0..1, for progress bars: stages done (plus half of the current one)."""
        return (self.index - (0.5 if self.status == "start" else 0.0)) / self.total


@dataclass
class Result:
    out_dir: Path
    files: dict[str, Path]
    measurements: dict[str, float]
    timings_ms: dict[str, float]
    total_ms: float
    body_model: str
    fit: dict


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(f"device {device} asked for, but this machine has no CUDA GPU "
                             "(torch sees none); use --device cpu", "invalid_device")
        idx = int(device.split(":")[1]) if ":" in device else 0
        if idx >= torch.cuda.device_count():
            raise InputError(f"device {device}: only {torch.cuda.device_count()} GPU(s) here",
                             "invalid_device")
        return f"cuda:{idx}"
    raise InputError(f"device {device!r} is not auto, cpu or cuda:N", "invalid_device")


class Pipeline:
    """Loads the detector, segmenter, body model(s) and renderer once; runs jobs."""

    def __init__(self, config: PipelineConfig | None = None, log: Callable[[str], None] | None = None,
                 renderer=None):
        """``renderer``: a ``RenderProcess`` started earlier (a one-shot ``avatar create`` starts
        one before it imports torch, so the child's start overlaps that import); the pipeline
        owns it from here, and makes its own instead when it was made for another device."""
        try:
            self._init(config, log, renderer)
        except BaseException:
            if renderer is not None and getattr(self, "renderer", None) is not renderer:
                renderer.close()
            raise

    def _init(self, config, log, renderer) -> None:
        t0 = time.perf_counter()
        self.config = cfg = config or PipelineConfig()
        self.log = log or (lambda msg: None)
        if cfg.body_model not in BODY_MODELS:
            raise InputError(f"body model {cfg.body_model!r} is not one of {', '.join(BODY_MODELS)}",
                             "invalid_body_model")
        self.device = resolve_device(cfg.device)
        wdir = Path(cfg.weights_dir)
        self.body_model = self._choose_body_model(cfg.body_model, wdir)
        pose = W.pose_weights(wdir)  # raises MissingWeightError with the fix
        person = W.person_weights(wdir)
        # first: a renderer of its own process starts now, beside the models' loading
        if renderer is not None and (not cfg.render_process or getattr(renderer, "device", None) != self.device):
            renderer.close()
            renderer = None
        self.renderer = renderer or self._renderer(cfg.render_process)
        try:
            self._load_models(cfg, wdir, pose, person)
        except BaseException:
            self.renderer.close()
            raise
        # measure and render run here while the export runs on the caller's thread: numpy,
        # zlib, file writes and OpenGL release the GIL, so on a second core they overlap
        self._side = ThreadPoolExecutor(1, thread_name_prefix="avatar-side")
        # what the export computes once per body model (the texture's UV raster, the OBJ
        # topology text, the glTF corners) is computed there now, beside the first job's
        # first stages, instead of inside its export; the export waits for it
        self._topology_ready = self._side.submit(self._prepare_topologies, list(self._bodies.values()))
        self.load_ms = (time.perf_counter() - t0) * 1000.0
        self.log(f"body model: {self.body_model} · detector: {self.detector.name} · "
                 f"segmenter: {self.segmenter.name} · device: {self.device}")

    def _load_models(self, cfg: PipelineConfig, wdir: Path, pose: Path, person: Path) -> None:
        if self.body_model == "anny" and not W.anny_cache_ready():
            self.log("anny model cache not built yet: building it now (1-3 minutes, once per machine)")
        self.detector = Detector(pose, self.device)
        self.segmenter = Segmenter(W.seg_weights(wdir), self.device, person)
        self._bodies: dict[str, BodyModel] = {}
        self._fitters: dict[int, Fitter] = {}
        self.models = {
            "detector": {"name": self.detector.name, "file": pose.name,
                         "ultralytics": importlib.metadata.version("ultralytics-opencv-headless")},
            "segmenter": {"name": self.segmenter.name},
            "body_model": {"name": self.body_model},
            "torch": torch.__version__,
        }
        if self.body_model == "anny":
            self.body_for("other")  # one Anny serves every gender: load it now

    def _renderer(self, own_process: bool):
        """The renderer: in a child process of its own (``render_process``, the default: the
        render then neither waits for this process's interpreter lock nor holds it while the
        fit and the export run), else on this process's GL thread."""
        from inference.stages.render import Renderer

        if own_process:
            from inference.stages.render_process import RenderProcess

            try:
                return RenderProcess(self.device, log=self.log)
            except OSError as exc:  # no child process here: render in this one
                self.log(f"render process not started ({exc}): rendering in this process")
        return Renderer(self.device, log=self.log)

    # ---- models --------------------------------------------------------------------------
    def _choose_body_model(self, wanted: str, wdir: Path) -> str:
        smpl_files = [W.smpl_available(wdir, g) for g in W.SMPL_FILES]
        if wanted == "auto":
            choice = "smpl" if any(smpl_files) else "anny"
            why = "SMPL files found in weights/smpl/" if choice == "smpl" else \
                "no SMPL files in weights/smpl/, using the open Anny model"
            self.log(f"--body-model auto: {choice} ({why})")
            return choice
        if wanted == "smpl" and not any(smpl_files):
            raise MissingWeightError(
                f"SMPL model files are missing from {W.smpl_dir(wdir)}: download them from "
                "https://smpl.is.tue.mpg.de (licence required) and run "
                "`avatar weights convert-smpl DOWNLOADED_DIR`, or use --body-model anny")
        return wanted

    def body_for(self, gender: str) -> BodyModel:
        if self.body_model == "anny":
            if "anny" not in self._bodies:
                from inference.bodies.anny_body import AnnyBody

                self._bodies["anny"] = AnnyBody(device=self.device)
                self.models["body_model"]["version"] = self._bodies["anny"].version
            return self._bodies["anny"]
        wdir = Path(self.config.weights_dir)
        file_gender = gender if W.smpl_available(wdir, gender) else "other"
        if file_gender not in self._bodies:
            from inference.bodies.smpl_body import SmplBody

            self._bodies[file_gender] = SmplBody(W.smpl_dir(wdir), gender=file_gender, device=self.device)
            self.models["body_model"]["version"] = self._bodies[file_gender].version
        return self._bodies[file_gender]

    def _fitter(self, body: BodyModel) -> Fitter:
        key = id(body)
        if key not in self._fitters:
            self._fitters[key] = Fitter(body, self.config.fit)
        return self._fitters[key]

    # ---- running -------------------------------------------------------------------------
    def warm_up(self, job: Job, fit: FitConfig) -> Result:
        """One run whose fit uses ``fit`` (fewer iterations) instead of the configured one: every
        stage's lazy initialisation (kernels, the renderer's context, allocator growth) is paid
        for a fraction of a run's time. Each body model's own fitter runs it, so whatever a fitter
        sets up on its first fit is set up for the next real one."""
        fitter = self._fitter(self.body_for(job.subject.gender))
        configured, fitter.config = fitter.config, fit
        try:
            return self.run(job)
        finally:
            fitter.config = configured

    def run(self, job: Job, on_stage: Callable[[StageEvent], None] | None = None,
            cancel: Callable[[], bool] | None = None) -> Result:
        return self.run_batch([job], on_stage, cancel)[0]

    def run_batch(self, jobs: list[Job], on_stage: Callable[[StageEvent], None] | None = None,
                  cancel: Callable[[], bool] | None = None) -> list[Result]:
        """Run several photos together (detection and fitting are batched). All or nothing:
        an error in any photo raises and leaves no output folder behind."""
        for job in jobs:
            job.subject.validate()
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        staging = [self._staging_dir(Path(j.out_dir)) for j in jobs]
        state: dict = {}
        beside: dict[str, Future] = {}
        try:
            for index, stage in enumerate(STAGES, start=1):
                if cancel is not None and cancel():
                    raise CancelledError(f"cancelled before stage {stage}")
                if on_stage:
                    on_stage(StageEvent(stage, "start", index, len(STAGES)))
                t0 = time.perf_counter()
                if stage in BESIDE_EXPORT:  # started with the export: its own time, when done
                    elapsed = beside.pop(stage).result()
                else:
                    if stage == "export":
                        beside = self._start_beside_export(jobs, staging, state)
                    getattr(self, f"_stage_{stage}")(jobs, staging, state)
                    if self.device.startswith("cuda"):
                        torch.cuda.synchronize(self.device)
                    elapsed = (time.perf_counter() - t0) * 1000.0
                timings[stage] = round(elapsed, 1)
                if on_stage:
                    on_stage(StageEvent(stage, "end", index, len(STAGES), timings[stage]))
            total = round((time.perf_counter() - t_start) * 1000.0, 1)
            results = []
            for i, (job, tmp) in enumerate(zip(jobs, staging)):
                fit_info = self._fit_summary(state["fits"][i], state["bodies"][i])
                fit_info["typed_weight_kg"] = job.subject.weight_kg
                fit_info["clothing"] = job.subject.clothing
                fit_info["weight_source"] = job.subject.weight_source
                doc = {
                    "stages_ms": timings, "total_ms": total, "beside_export": list(BESIDE_EXPORT),
                    "batch_size": len(jobs),
                    "models_load_ms": round(self.load_ms, 1), "device": self.device,
                    "models": self.models, "pipeline_version": _version(),
                }
                export.write_json(tmp / artefacts.TIMINGS, doc)
                results.append(Result(
                    out_dir=Path(job.out_dir), files={}, measurements=state["measurements"][i],
                    timings_ms=dict(timings), total_ms=total, body_model=self.body_model, fit=fit_info,
                ))
            for job, tmp, res in zip(jobs, staging, results):
                _publish(tmp, Path(job.out_dir))
                res.files = {name: Path(job.out_dir) / name
                             for name in artefacts.expected(self.body_model)}
            return results
        finally:
            wait_all(beside.values())  # nothing may still write into a folder removed below
            for tmp in staging:
                shutil.rmtree(tmp, ignore_errors=True)

    def _prepare_topologies(self, bodies: list[BodyModel]) -> None:
        from inference.stages.render import split_by_uv
        from inference.stages.texture import uv_rasterize

        for body in bodies:
            if body.uv is not None and body.face_uv is not None:
                uv_rasterize(body.uv, body.face_uv, self.config.texture_size)
                split_by_uv(body.faces, body.face_uv)
            export.topology_text(body.faces, body.uv, body.face_uv)

    def _start_beside_export(self, jobs, staging, state) -> dict[str, Future]:
        """Measure, then render, on the side thread, while the export runs: each future gives
        its stage's own time (ms). The previews wait for the export's textures (``state
        ["texture_ready"]``, set by the export as each is baked); the overlays need only the fit."""
        state["texture_ready"] = [Future() for _ in jobs]

        def timed(fn, waited: str | None = None):
            t0 = time.perf_counter()
            fn(jobs, staging, state)
            return (time.perf_counter() - t0) * 1000.0 - (state.pop(waited, 0.0) if waited else 0.0)

        measure = self._side.submit(timed, self._stage_measure)
        render = self._side.submit(timed, self._stage_render, "render_waited_ms")
        return {"measure": measure, "render": render}

    def observe(self, jobs: list[Job]) -> dict:
        """Load, detect and segment only: what the photos say, before any fitting (for the
        eval's fit-only runs and the learned prior's training data)."""
        for job in jobs:
            job.subject.validate()
        state: dict = {}
        for stage in ("load", "detect", "segment"):
            getattr(self, f"_stage_{stage}")(jobs, None, state)
        return state

    def fit_observed(self, jobs: list[Job], state: dict) -> list[FitResult]:
        """The fit stage on ``observe``'s output."""
        self._stage_fit(jobs, None, state)
        return state["fits"]

    @staticmethod
    def _staging_dir(out_dir: Path) -> Path:
        out_dir = out_dir.resolve()
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
        tmp.chmod(0o755)
        return tmp

    # ---- stages (each reads and writes ``state``) ------------------------------------------
    def _stage_load(self, jobs, staging, state):
        state["photos"] = [load_photo(j.photo, max_pixels=self.config.max_pixels,
                                      work_size=self.config.work_size) for j in jobs]

    def _stage_detect(self, jobs, staging, state):
        photos: list[Photo] = state["photos"]
        people = self.detector.detect([p.image for p in photos])
        state["subjects"] = [choose_subject(pp, p.image.shape) for pp, p in zip(people, photos)]

    def _stage_segment(self, jobs, staging, state):
        state["masks"] = [self.segmenter.segment(p.image, s)
                          for p, s in zip(state["photos"], state["subjects"])]
        for i, (s, mask) in enumerate(zip(state["subjects"], state["masks"])):
            if (kp := legs_from_mask(s.keypoints, mask)) is not None:  # legs read in the gap between them
                state["subjects"][i] = replace(s, keypoints=kp)

    def _stage_fit(self, jobs, staging, state):
        if staging is not None:  # a run that renders: its viewports are made ready during the fit
            size = self.config.preview_size
            self.renderer.prepare([(size, size, True)] + [
                (*self.renderer.overlay_size(p.image.shape[1], p.image.shape[0]), False)
                for p in state["photos"]])
        bodies = [self.body_for(j.subject.gender) for j in jobs]
        fits: list[FitResult | None] = [None] * len(jobs)
        groups: dict[int, list[int]] = {}
        for i, b in enumerate(bodies):
            groups.setdefault(id(b), []).append(i)
        for idx in groups.values():
            targets = [FitTarget(jobs[i].subject, (state["photos"][i].image.shape[1], state["photos"][i].image.shape[0]),
                                 state["subjects"][i].keypoints, state["masks"][i], state["photos"][i].focal_35mm)
                       for i in idx]
            for i, res in zip(idx, self._fitter(bodies[idx[0]]).fit(targets)):
                fits[i] = res
        state["fits"], state["bodies"] = fits, bodies
        state["tpose"] = [f.standard["tpose"] for f in fits]
        state["apose"] = [f.standard["apose"] for f in fits]

    def _stage_export(self, jobs, staging, state):
        try:
            self._export(jobs, staging, state)
        except BaseException as exc:  # a preview waiting for a texture must not wait forever
            for ready in state.get("texture_ready", []):
                if not ready.done():
                    ready.set_exception(exc)
            raise

    def _export(self, jobs, staging, state):
        from inference.stages.texture import bake_texture

        wait_all([self._topology_ready])  # its caches are not shared across threads while built
        state["textures"] = []
        for i, (job, tmp) in enumerate(zip(jobs, staging)):
            fit, body, photo = state["fits"][i], state["bodies"][i], state["photos"][i]
            texture, _ = bake_texture(photo.image, state["masks"][i], fit.vertices, body.faces,
                                      body.uv, body.face_uv, fit.camera, size=self.config.texture_size)
            state["textures"].append(texture)
            if "texture_ready" in state:
                state["texture_ready"][i].set_result(texture)
            texture_png = export.write_png(tmp / artefacts.SKIN_TEXTURE, texture)
            export.write_obj(tmp / artefacts.BODY_ORIGINAL, fit.vertices, body.faces, body.uv, body.face_uv)
            export.write_obj(tmp / artefacts.BODY_TPOSE, state["tpose"][i][0], body.faces, body.uv, body.face_uv)
            export.write_obj(tmp / artefacts.BODY_APOSE, state["apose"][i][0], body.faces, body.uv, body.face_uv)
            export.write_glb(tmp / artefacts.AVATAR_GLB, state["apose"][i][0], body.faces, body.uv,
                             body.face_uv, texture, texture_png)
            params = body.params(fit.shape, fit.limbs)
            params.update(
                scale=np.float32(fit.scale), height_cm=np.float32(job.subject.height_cm),
                camera_R=fit.camera.R.astype(np.float32), camera_t=fit.camera.t.astype(np.float32),
                camera_K=np.array([[fit.camera.fx, 0, fit.camera.cx], [0, fit.camera.fy, fit.camera.cy],
                                   [0, 0, 1]], np.float32),
            )
            np.savez(tmp / body.params_filename, **params)
            kp3d = body.keypoints_from_vertices(torch.as_tensor(fit.vertices[None], dtype=body.dtype,
                                                                device=body.device))[0].cpu().numpy()
            subj = state["subjects"][i]
            export.write_keypoints(tmp / artefacts.KEYPOINTS, subj.keypoints, fit.keypoints_2d, kp3d,
                                   subj.box, subj.score, (photo.image.shape[1], photo.image.shape[0]))

    def _stage_measure(self, jobs, staging, state):
        state["measurements"] = []
        for i, tmp in enumerate(staging):
            verts, kp = state["apose"][i]
            m = measure(verts, state["bodies"][i].faces, kp)
            state["measurements"].append(m)
            export.write_json(tmp / artefacts.MEASUREMENTS, m)

    def _stage_render(self, jobs, staging, state):
        for i, tmp in enumerate(staging):  # the overlays first: they need only the fit
            fit, body, photo = state["fits"][i], state["bodies"][i], state["photos"][i]
            over = self.renderer.overlay(photo.image, fit.vertices, body.faces, fit.camera)
            export.write_png(tmp / artefacts.OVERLAY, over)
        for i, tmp in enumerate(staging):
            body = state["bodies"][i]
            ready = state.get("texture_ready")
            if ready:  # beside the export: the time spent waiting for its texture is not ours
                t0 = time.perf_counter()
                texture = ready[i].result()
                state["render_waited_ms"] = state.get("render_waited_ms", 0.0) + (time.perf_counter() - t0) * 1000.0
            else:
                texture = state["textures"][i]
            prev = self.renderer.preview(state["apose"][i][0], body.faces, body.uv, body.face_uv,
                                         texture, size=self.config.preview_size)
            export.write_png(tmp / artefacts.PREVIEW, prev)

    @staticmethod
    def _fit_summary(fit: FitResult, body: BodyModel) -> dict:
        return {
            "body_model": body.name, "shape": dict(zip(body.shape_names, fit.shape[0].tolist())),
            "scale": round(fit.scale, 5), "mass_kg": round(fit.mass_kg, 2),
            "volume_l": round(fit.volume_l, 2), **{k: v for k, v in fit.diagnostics.items()},
        }

    def close(self) -> None:
        self._side.shutdown(wait=True)
        self.renderer.close()


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move a finished staging folder to ``out_dir``, replacing any earlier result atomically
    (a rename on the same file system: readers see the old folder or the new one, never half)."""
    out_dir = out_dir.resolve()
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def _version() -> str:
    try:
        return importlib.metadata.version("avatar-service")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"

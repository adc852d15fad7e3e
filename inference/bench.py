"""``avatar bench``: how fast the bare pipeline is on this machine, in figures scripts can read.

Latency is what users feel per stage and avatars per second is what a GPU costs, so both are
measured in one process the way a worker runs: models loaded once, a cold first run, warm-up
runs not counted, then ``runs`` timed runs at batch 1 and a throughput figure per batch size.
Nothing is asserted: the figures go to a table and, with ``--json``, to a file.
"""
from __future__ import annotations

import importlib.util
import math
import os
import platform
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def sample_photo(name: str = "bus.jpg") -> Path:
    """A real photo shipped with Ultralytics (the default bench photo and the worker's warm-up)."""
    spec = importlib.util.find_spec("ultralytics")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / name


def find_photos(paths: list[Path]) -> list[Path]:
    """Files as given, folders expanded to their photos (sorted); the sample photo by default."""
    if not paths:
        return [sample_photo()]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in PHOTO_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            from inference.errors import InputError

            raise InputError(f"photo not found: {p}", "photo_not_found")
    if not out:
        from inference.errors import InputError

        raise InputError("no photos (.jpg, .png, .webp) in " + ", ".join(map(str, paths)), "photo_not_found")
    return out


def parse_batches(text: str) -> list[int]:
    """``"1,4,16"`` → ``[1, 4, 16]`` (positive, unique, in the given order)."""
    from inference.errors import InputError

    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise InputError(f"--batch must be positive integers separated by commas, not {text!r}",
                         "invalid_argument")
    return list(dict.fromkeys(sizes))


def summarise(values_ms: list[float]) -> dict[str, float]:
    """p50, p95 and max of a list of milliseconds (p95 by linear interpolation)."""
    a = np.asarray(values_ms, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 1), "p95": round(float(np.percentile(a, 95)), 1),
            "max": round(float(a.max()), 1), "n": int(a.size)}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if platform.system() == "Darwin" else 1024), 1)


@dataclass
class BenchConfig:
    photos: list[Path] = field(default_factory=list)
    runs: int = 20
    warmup: int = 2
    device: str = "auto"
    body_model: str = "auto"
    batches: list[int] = field(default_factory=lambda: [1])
    weights_dir: Path | None = None
    height_cm: float = 180.0
    weight_kg: float | None = 75.0
    gender: str = "male"


def machine_info(device: str, renderer=None) -> dict:
    import torch

    info = {
        "device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
        "cpu": platform.processor() or platform.machine(), "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        # the renderer's (its own process sets its own)
        "gl_platform": getattr(renderer, "platform", None) or os.environ.get("PYOPENGL_PLATFORM"),
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version())
    return info


def photo_info(paths: list[Path]) -> list[dict]:
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append({"name": p.name, "width": im.width, "height": im.height,
                        "bytes": p.stat().st_size})
    return out


class _Runner:
    """Runs jobs into a scratch folder that is emptied after each run (disk stays flat)."""

    def __init__(self, pipe, cfg: BenchConfig, scratch: Path) -> None:
        from inference.types import Subject

        self.pipe, self.scratch = pipe, scratch
        self.subject = Subject(cfg.height_cm, cfg.gender, cfg.weight_kg).validate()
        self.photos = cfg.photos
        self.count = 0
        # per photo: did the fit's stage C (the shape solved on the silhouette's width profile)
        # run? A photo whose silhouette has too few trusted width bands skips it, and its fit
        # is shorter than a typical full-body photo's (bus.jpg, the default, is one)
        self.shape_solve: dict[str, dict] = {}

    def batch(self, size: int):
        """One ``run_batch`` of ``size`` photos (cycled); returns (results, wall ms)."""
        from inference.pipeline import Job

        jobs = [Job(self.photos[(self.count + k) % len(self.photos)], self.subject,
                    self.scratch / f"r{self.count + k}") for k in range(size)]
        self.count += size
        t0 = time.perf_counter()
        results = self.pipe.run_batch(jobs)
        wall = (time.perf_counter() - t0) * 1000.0
        for job, res in zip(jobs, results):
            self.shape_solve[Path(job.photo).name] = {  # the bench's photos are files (find_photos)
                "ran": "width_cost_last" in res.fit, "width_bands": res.fit.get("width_bands")}
        for job in jobs:
            shutil.rmtree(job.out_dir, ignore_errors=True)
        return results, wall


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = lambda m: None, pipeline=None) -> dict:
    """Every figure of one bench, as a JSON-ready dict (see :func:`format_report`). A given
    ``pipeline`` is used as it is (its own load time reported) and left open."""
    import torch

    from inference.pipeline import STAGES, Pipeline, PipelineConfig
    from inference.weights import default_weights_dir

    cfg.photos = find_photos(cfg.photos)
    pipe = pipeline or Pipeline(PipelineConfig(device=cfg.device, body_model=cfg.body_model,
                                               weights_dir=cfg.weights_dir or default_weights_dir()), log=log)
    load_ms = pipe.load_ms
    cuda = pipe.device.startswith("cuda")
    report: dict = {"machine": machine_info(pipe.device, pipe.renderer), "body_model": pipe.body_model,
                    "models": pipe.models, "photos": photo_info(cfg.photos),
                    "config": {"runs": cfg.runs, "warmup": cfg.warmup, "batches": cfg.batches},
                    "models_load_ms": round(load_ms, 1)}
    try:
        with tempfile.TemporaryDirectory(prefix="avatar-bench-") as tmp:
            run = _Runner(pipe, cfg, Path(tmp))
            (cold,), cold_wall = run.batch(1)
            report["cold"] = {"stages_ms": cold.timings_ms, "total_ms": cold.total_ms,
                              "wall_ms": round(cold_wall, 1)}
            log(f"cold run {cold_wall / 1000:.1f} s; {cfg.warmup} warm-up, {cfg.runs} timed runs")
            for _ in range(cfg.warmup):
                run.batch(1)
            if cuda:
                torch.cuda.reset_peak_memory_stats(pipe.device)
            warm = []
            for i in range(cfg.runs):
                (res,), wall = run.batch(1)
                warm.append((res, wall))
                log(f"run {i + 1}/{cfg.runs}: {res.total_ms:.0f} ms")
            report["warm"] = {
                "stages_ms": {s: summarise([r.timings_ms[s] for r, _ in warm]) for s in STAGES},
                "total_ms": summarise([r.total_ms for r, _ in warm]),
                "wall_ms": summarise([w for _, w in warm]),
                # where the fit's time goes (FitParts: stage A, B, the width reads, stage C, ...)
                "fit_parts_ms": {k: summarise([r.fit["fit_parts_ms"][k] for r, _ in warm])
                                 for k in warm[0][0].fit.get("fit_parts_ms", {})},
            } if warm else {}
            report["throughput"] = _throughput(run, cfg, warm, log)
            report["shape_solve"] = run.shape_solve
        report["memory"] = {"peak_rss_mb": peak_rss_mb()}
        if hasattr(pipe.renderer, "status"):  # a render process of its own: its memory too
            report["memory"]["render_process_peak_rss_mb"] = pipe.renderer.status()["peak_rss_mb"]
        if cuda:
            report["memory"]["gpu_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(pipe.device) / 2**20, 1)
            report["memory"]["gpu_peak_reserved_mb"] = round(torch.cuda.max_memory_reserved(pipe.device) / 2**20, 1)
    finally:
        if pipeline is None:
            pipe.close()
    return report


def _throughput(run: _Runner, cfg: BenchConfig, warm: list, log: Callable[[str], None]) -> list[dict]:
    """Avatars per second per batch size: batch 1 from the timed runs, larger batches from
    ``ceil(runs / size)`` batches after one untimed batch of that size (when warm-up is on).
    No timed runs, no throughput."""
    rows: list[dict] = []
    for size in cfg.batches if cfg.runs else []:
        if size == 1 and warm:
            walls = [w for _, w in warm]
        else:
            if cfg.warmup:
                run.batch(size)
            walls = [run.batch(size)[1] for _ in range(max(1, math.ceil(cfg.runs / size)))]
        rate = size * len(walls) / (sum(walls) / 1000.0)
        rows.append({"batch": size, "batches": len(walls), "avatars_per_s": round(rate, 3),
                     "batch_wall_ms": summarise(walls)})
        log(f"batch {size}: {rate:.3f} avatars/s")
    return rows


def format_report(r: dict) -> str:
    """The report as tables for a terminal."""
    m = r["machine"]
    lines = [f"device {m['device']}{' (' + m['gpu'] + ')' if 'gpu' in m else ''} · torch {m['torch']}"
             f" · CUDA {m['cuda'] or '-'} · {m['cpu_cores']} CPU cores ({m['torch_threads']} torch threads)"
             f" · GL {m['gl_platform']} · body model {r['body_model']}",
             "photos: " + ", ".join(f"{p['name']} {p['width']}x{p['height']}" for p in r["photos"]),
             f"models loaded in {r['models_load_ms']:.0f} ms; cold first run {r['cold']['wall_ms']:.0f} ms", ""]
    warm = r["warm"]
    header = f"{'stage':<8} {'cold':>8} {'p50':>8} {'p95':>8} {'max':>8}   (ms, warm n={warm.get('total_ms', {}).get('n', 0)})"
    lines.append(header)
    rows = [(s, r["cold"]["stages_ms"][s], warm.get("stages_ms", {}).get(s)) for s in r["cold"]["stages_ms"]]
    rows.append(("total", r["cold"]["total_ms"], warm.get("total_ms")))
    for name, cold, w in rows:
        w = w or {"p50": math.nan, "p95": math.nan, "max": math.nan}
        lines.append(f"{name:<8} {cold:>8.0f} {w['p50']:>8.0f} {w['p95']:>8.0f} {w['max']:>8.0f}")
    fit_parts = warm.get("fit_parts_ms")
    if fit_parts:
        lines.append("fit, p50 ms: " + " · ".join(f"{k} {v['p50']:.0f}" for k, v in fit_parts.items()))
    solve = r.get("shape_solve", {})
    skipped = sorted(name for name, v in solve.items() if not v["ran"])
    if skipped:
        lines.append(f"stage C (the shape solved on the silhouette's widths) skipped on {', '.join(skipped)}: "
                     "too few trusted width bands; a typical full-body photo's fit runs it and takes longer")
    lines.append("")
    for t in r["throughput"]:
        lines.append(f"batch {t['batch']:>3}: {t['avatars_per_s']:.3f} avatars/s "
                     f"({t['batches']} batches, p50 {t['batch_wall_ms']['p50']:.0f} ms each)")
    mem = r["memory"]
    lines.append(f"peak memory: RSS {mem['peak_rss_mb']:.0f} MB"
                 + (f" (+ {mem['render_process_peak_rss_mb']:.0f} MB the render process)"
                    if "render_process_peak_rss_mb" in mem else "")
                 + (f", GPU {mem['gpu_peak_allocated_mb']:.0f} MB allocated "
                    f"({mem['gpu_peak_reserved_mb']:.0f} MB reserved)" if "gpu_peak_allocated_mb" in mem else ""))
    return "\n".join(lines)

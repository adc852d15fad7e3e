"""``avatar eval run`` and ``keypoint-offsets``: measurement accuracy on a set made by
``avatar eval make-set`` (``inference.eval.generate``).

``run`` puts every photo through the whole pipeline with the true height, weight and gender (and
again with the inputs off by ±2 cm / ±5 kg) and reports errors against a photo-free baseline: the
body that matches only the typed height, weight and gender.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from inference.errors import AvatarError, InputError
from inference.eval.generate import describe, photo_path
from inference.stages.measure import MEASUREMENTS

@dataclass
class Row:
    name: str
    errors: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MEASUREMENTS})
    vertex_mm: list[float] = field(default_factory=list)
    failures: int = 0
    runs: int = 0
    seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        def stats(xs):
            return {"mean": round(statistics.fmean(xs), 2), "max": round(max(xs), 2)} if xs else None
        return {
            "runs": self.runs, "failed": self.failures,
            "failure_rate": round(self.failures / max(self.runs, 1), 3),
            "abs_error_cm": {m: stats(v) for m, v in self.errors.items()},
            "vertex_error_mm": stats(self.vertex_mm),
            "seconds_per_photo": round(statistics.fmean(self.seconds), 2) if self.seconds else None,
        }


def fit_config(overrides: list[str]):
    """``["key=value", ...]`` → a FitConfig with those fields changed (typed as the defaults)."""
    import dataclasses

    from inference.stages.fit import FitConfig

    cfg = FitConfig()
    fields = {f.name: f for f in dataclasses.fields(FitConfig)}
    changes = {}
    for item in overrides:
        key, _, raw = item.partition("=")
        if key not in fields or not raw:
            raise InputError(f"--fit {item!r}: expected KEY=VALUE with KEY one of {', '.join(fields)}",
                             "invalid_argument")
        default = getattr(cfg, key)
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise InputError(f"--fit {item!r}: expected true or false", "invalid_argument")
            changes[key] = raw.lower() in ("true", "1")
        else:
            try:
                changes[key] = (tuple(float(x) for x in raw.split(",")) if isinstance(default, tuple)
                                else type(default)(raw))
            except (TypeError, ValueError) as exc:
                raise InputError(f"--fit {item!r}: {exc}", "invalid_argument") from exc
            if isinstance(default, tuple) and len(changes[key]) != len(default):
                raise InputError(f"--fit {item!r}: expected {len(default)} comma-separated numbers",
                                 "invalid_argument")
    return dataclasses.replace(cfg, **changes)


def run_eval(set_dir: Path, device: str = "auto", log=print, fit=None, clothing: str = "regular",
             weight_source: str = "reported") -> dict:
    """Run the pipeline (exact and perturbed inputs) and the photo-free baseline on a set;
    ``fit``: the FitConfig to use (default: the shipped one); ``clothing``: what every subject is
    said to wear; ``weight_source``: where every typed weight is said to come from."""
    from inference.pipeline import Job, Pipeline, PipelineConfig
    from inference.stages.fit import FitConfig, Fitter
    from inference.types import Subject

    cases = sorted(p for p in Path(set_dir).glob("case_*") if (p / "truth.json").is_file())
    if not cases:
        raise AvatarError(f"{set_dir} holds no case_*/truth.json: make one with `avatar eval make-set`")
    pipe = Pipeline(PipelineConfig(device=device, body_model="anny", fit=fit or FitConfig()), log=log)
    body = pipe.body_for("other")
    baseline_fitter = Fitter(body, FitConfig(use_photo=False))
    rows = {k: Row(k) for k in ("pipeline", "pipeline, inputs off by ±2 cm/±5 kg", "baseline (no photo)")}
    per_case = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for case in cases:
                truth = json.loads((case / "truth.json").read_text())
                true_v = np.load(case / "truth_mesh.npz")["vertices"]
                want = truth["measurements"]
                item = {"case": case.name, "truth": want, "true_weight_kg": truth["weight_kg"],
                        "scene": describe(truth.get("scene"))}
                runs = {
                    "pipeline": Subject(truth["height_cm"], truth["gender"], truth["weight_kg"], clothing,
                                        weight_source),
                    "pipeline, inputs off by ±2 cm/±5 kg": Subject(
                        truth["perturbed_input"]["height_cm"], truth["gender"],
                        truth["perturbed_input"]["weight_kg"], clothing, weight_source),
                }
                for name, subject in runs.items():
                    row = rows[name]
                    row.runs += 1
                    t0 = time.perf_counter()
                    try:
                        res = pipe.run(Job(photo_path(case), subject, Path(tmp) / case.name))
                    except AvatarError as exc:
                        row.failures += 1
                        item[name] = {"error": str(exc)}
                        log(f"{case.name} {name}: FAILED {exc}")
                        continue
                    row.seconds.append(time.perf_counter() - t0)
                    got = res.measurements
                    for m in MEASUREMENTS:
                        row.errors[m].append(abs(got[m] - want[m]))
                    row.vertex_mm.append(_vertex_error_mm(_read_vertices(res.files["body_apose.obj"]), true_v))
                    item[name] = got
                    if name == "pipeline":
                        item["fitted_mass_kg"] = res.fit.get("mass_kg")
                # baseline: only height, weight and gender
                row = rows["baseline (no photo)"]
                row.runs += 1
                t0 = time.perf_counter()
                got, v = photo_free(baseline_fitter, runs["pipeline"])
                row.seconds.append(time.perf_counter() - t0)
                for m in MEASUREMENTS:
                    row.errors[m].append(abs(got[m] - want[m]))
                row.vertex_mm.append(_vertex_error_mm(v, true_v))
                item["baseline"] = got
                per_case.append(item)
                log(f"{case.name}: chest/waist/hip error " + " · ".join(
                    f"{k} " + "/".join(f"{abs(item[k][m] - want[m]):.1f}" for m in ("chest", "waist", "hip"))
                    for k in ("pipeline", "baseline") if "chest" in item.get(k, {})))
    finally:
        pipe.close()
    return {"set": str(set_dir), "cases": len(cases), "device": pipe.device,
            "rows": {k: r.summary() for k, r in rows.items()}, "per_case": per_case,
            "bias_cm": _bias(per_case), "worst": _worst(per_case)}


def photo_free(fitter, subject) -> tuple[dict[str, float], np.ndarray]:
    """The photo-free baseline of ``subject`` (``fitter``: a ``FitConfig(use_photo=False)``
    Fitter): its measurements and its standing A-pose vertices."""
    from inference.stages.fit import FitTarget
    from inference.stages.measure import measure

    v, kp = fitter.fit([FitTarget(subject, (768, 1024))])[0].standard["apose"]
    return measure(v, fitter.body.faces, kp), v


def _bias(per_case: list[dict]) -> dict:
    """Mean signed error (fitted − true, cm) of the pipeline per measurement: a bias, not noise,
    is what clothes or a convention cause."""
    out = {}
    for m in MEASUREMENTS:
        d = [c["pipeline"][m] - c["truth"][m] for c in per_case if m in c.get("pipeline", {})]
        out[m] = round(statistics.fmean(d), 2) if d else None
    return out


def _worst(per_case: list[dict], k: int = 5) -> list[dict]:
    """The ``k`` photos with the largest chest/waist/hip error, with what was unusual about them."""
    scored = []
    for c in per_case:
        got = c.get("pipeline", {})
        if "chest" not in got:
            scored.append((float("inf"), c, "failed: " + got.get("error", "")))
            continue
        errs = {m: got[m] - c["truth"][m] for m in ("chest", "waist", "hip")}
        worst = max(errs, key=lambda m: abs(errs[m]))
        text = " ".join(f"{m} {e:+.1f}" for m, e in errs.items())
        if c.get("fitted_mass_kg") is not None:
            text += f"; mass {c['fitted_mass_kg']:.1f} kg (true {c['true_weight_kg']:.1f})"
        scored.append((abs(errs[worst]), c, text))
    scored.sort(key=lambda x: -x[0])
    return [{"case": c["case"], "errors": e, "scene": c.get("scene", "")} for _, c, e in scored[:k]]


def keypoint_offsets(set_dir: Path, device: str = "auto", log=print) -> dict:
    """Where the pose detector puts each COCO keypoint on a set's photos, relative to the body
    model's own keypoints projected with the true camera: per keypoint the median and spread of
    (outward, up) in torso lengths, left and right pooled (the body is symmetric). This is the
    table the fitter corrects its model keypoints by (``BodyModel.detector_offsets``): the two
    keypoint conventions differ (the detector's hips sit higher, its ankles lower and wider)."""
    from inference.bodies.anny_body import AnnyBody
    from inference.pipeline import PipelineConfig, resolve_device
    from inference import weights as W
    from inference.stages.detect import Detector, choose_subject
    from inference.stages.fit import KEYPOINT_MIN_CONF
    from inference.stages.load import load_photo
    from inference.types import COCO_KEYPOINTS, COCO_SIDE, Camera
    import torch

    cases = sorted(p for p in Path(set_dir).glob("case_*") if (p / "truth.json").is_file())
    cases = [c for c in cases if "camera" in json.loads((c / "truth.json").read_text())]
    if not cases:
        raise AvatarError(f"{set_dir} holds no case with a stored camera: make one with `avatar eval make-set`")
    dev = resolve_device(device)
    detector = Detector(W.pose_weights(Path(PipelineConfig().weights_dir)), dev)
    body = AnnyBody(device=dev)
    side = np.array(COCO_SIDE)  # image x grows toward the body's left (it faces the camera)
    samples = []
    for case in cases:
        truth = json.loads((case / "truth.json").read_text())
        c = truth["camera"]
        cam = Camera(c["fx"], c["fy"], c["cx"], c["cy"], c["width"], c["height"],
                     np.array(c["R"]), np.array(c["t"]))
        meshes = np.load(case / "truth_mesh.npz")
        v = meshes["photo_vertices"] if "photo_vertices" in meshes.files else meshes["vertices"]
        with torch.no_grad():
            kp = body.keypoints_from_vertices(torch.as_tensor(v[None], dtype=body.dtype, device=body.device))
        model_uv = cam.project(kp[0].cpu().numpy().astype(np.float64))
        photo = load_photo(photo_path(case))
        found = choose_subject(detector.detect([photo.image])[0], photo.image.shape).keypoints
        sx, sy = photo.image.shape[1] / c["width"], photo.image.shape[0] / c["height"]
        det_uv = found[:, :2] / [sx, sy]
        torso = np.linalg.norm(0.5 * (model_uv[11] + model_uv[12]) - 0.5 * (model_uv[5] + model_uv[6]))
        d = (det_uv - model_uv) / torso
        seen = found[:, 2] >= KEYPOINT_MIN_CONF
        samples.append(np.where(seen[:, None], np.stack([d[:, 0] * side, -d[:, 1]], 1), np.nan))
    s = np.array(samples)  # (cases, 17, 2) (outward, up)
    rows = {}
    for k, name in enumerate(COCO_KEYPOINTS):
        pair = [k] if k == 0 else [k, k + 1] if k % 2 else [k - 1, k]
        x = s[:, pair].reshape(-1, 2)
        x = x[~np.isnan(x).any(1)]
        if k == 0:
            x[:, 0] = 0.0  # on the mid-line: no outward
        # the median: a detector that swaps the legs on one photo must not move the table
        rows[name] = {"outward": round(float(np.median(x[:, 0])), 3), "up": round(float(np.median(x[:, 1])), 3),
                      "sd_outward": round(float(x[:, 0].std()), 3), "sd_up": round(float(x[:, 1].std()), 3),
                      "n": int(len(x))}
    log(f"{len(cases)} photos")
    return {"set": str(set_dir), "cases": len(cases), "detector": detector.name, "body_model": body.name,
            "offsets": rows}


def format_offsets(result: dict) -> str:
    lines = [f"detector keypoints relative to {result['body_model']}'s, torso lengths, "
             f"{result['cases']} photos: name outward up (sd)"]
    for name, r in result["offsets"].items():
        lines.append(f"{name:15s} {r['outward']:+.3f} {r['up']:+.3f}   ({r['sd_outward']:.3f} {r['sd_up']:.3f})")
    table = ", ".join(f"({r['outward']:+.3f}, {r['up']:+.3f})" for r in result["offsets"].values())
    return "\n".join(lines + ["as a table: (" + table + ")"])


def _read_vertices(path: Path) -> np.ndarray:
    from inference.stages.export import read_obj_vertices

    return read_obj_vertices(path)[0]


def _vertex_error_mm(v: np.ndarray, truth: np.ndarray) -> float:
    """Mean per-vertex distance (same topology) after aligning the feet centre (translation only)."""
    a = v - np.array([v[:, 0].mean(), v[:, 1].min(), v[:, 2].mean()])
    b = truth - np.array([truth[:, 0].mean(), truth[:, 1].min(), truth[:, 2].mean()])
    return float(np.linalg.norm(a - b, axis=1).mean() * 1000.0)


def format_report(report: dict) -> str:
    keys = ("height", "chest", "waist", "hip", "neck", "shoulder_width", "inseam", "thigh", "upper_arm")
    head = ["row"] + [f"{k} mean/max" for k in keys] + ["vertex mm", "failed", "s/photo"]
    lines = []
    for name, r in report["rows"].items():
        cells = [name]
        for k in keys:
            s = r["abs_error_cm"][k]
            cells.append(f"{s['mean']:.1f}/{s['max']:.1f}" if s else "-")
        v = r["vertex_error_mm"]
        cells += [f"{v['mean']:.0f}" if v else "-", f"{r['failed']}/{r['runs']}",
                  f"{r['seconds_per_photo']:.1f}" if r["seconds_per_photo"] is not None else "-"]
        lines.append(cells)
    widths = [max(len(str(row[i])) for row in [head, *lines]) for i in range(len(head))]
    fmt = lambda row: " | ".join(str(c).ljust(w) for c, w in zip(row, widths))  # noqa: E731
    out = [f"absolute error in cm (mean/max) over {report['cases']} photos, device {report['device']}",
           fmt(head), "-+-".join("-" * w for w in widths), *map(fmt, lines)]
    if report.get("bias_cm"):
        out.append("pipeline bias (mean fitted - true, cm): "
                   + ", ".join(f"{m} {b:+.1f}" for m, b in report["bias_cm"].items() if b is not None))
    if report.get("worst"):
        out.append("worst photos (chest/waist/hip error, cm) and what was unusual:")
        out += [f"  {w['case']}: {w['errors']} — {w['scene']}" for w in report["worst"]]
    return "\n".join(out)

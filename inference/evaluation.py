"""``avatar eval``: measurement accuracy on synthetic ground truth.

``make-set`` renders Anny bodies of known shape (both genders, heights ~150-200 cm, lean to heavy,
adult ages) standing in the A-pose, dressed in clothing-like colours, photographed by a ~50 mm
equivalent camera ~3 m away in front of a non-trivial background; the truth (phenotypes, A-pose
mesh, height, mass, measurements by our own measure stage) is stored next to each photo.
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

from inference.errors import AvatarError
from inference.stages.measure import MEASUREMENTS

GENDERS = ("male", "female")


# The population make-set draws from: adults of both genders, 150-200 cm, from lean to heavy and
# from low to high muscle (Anny's muscle and weight phenotypes over their whole range), kept to
# plausible people by the body-mass index of the result.
HEIGHT_CM = (150.0, 200.0)
BMI = (17.0, 40.0)


def sample_phenotypes(rng: np.random.Generator, gender: str) -> dict:
    return {
        "gender": gender,
        "age": float(rng.uniform(0.77, 0.86)),
        "muscle": float(rng.uniform(0.0, 1.0)),
        "weight": float(rng.uniform(0.0, 1.0)),
        "height": float(rng.uniform(0.15, 0.65)),
        "proportions": float(rng.uniform(0.25, 0.75)),
    }


def plausible(height_cm: float, weight_kg: float) -> bool:
    bmi = weight_kg / (height_cm / 100.0) ** 2
    return HEIGHT_CM[0] <= height_cm <= HEIGHT_CM[1] and BMI[0] <= bmi <= BMI[1]


def make_set(out_dir: Path, n: int = 24, seed: int = 0, log=print) -> list[Path]:
    """Write ``n`` cases ``case_XXX/{photo.png, truth.json, truth_mesh.npz, truth_mask.png}``
    under ``out_dir`` (the mask is the true silhouette, for checking the segmenter)."""
    from inference.bodies.anny_body import AnnyBody
    from inference.stages.render import Renderer
    from inference.synthetic import render_truth, truth_for

    rng = np.random.default_rng(seed)
    body = AnnyBody()
    renderer = Renderer("cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = []
    try:
        for i in range(n):
            gender = GENDERS[i % 2]
            while True:  # redraw until the body is a plausible adult
                ph = sample_phenotypes(rng, gender)
                truth = truth_for(body, **ph)
                if plausible(truth.height_cm, truth.weight_kg):
                    break
            case = out_dir / f"case_{i:03d}"
            case.mkdir(exist_ok=True)
            photo, mask, cam = render_truth(truth, body, renderer, rng, with_mask=True)
            Image.fromarray(photo).save(case / "photo.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(case / "truth_mask.png")
            # the second set: what a user who is a little off would type
            given = {"height_cm": round(truth.height_cm + float(rng.choice([-2.0, 2.0])), 1),
                     "weight_kg": round(truth.weight_kg + float(rng.choice([-5.0, 5.0])), 1)}
            camera = {"fx": cam.fx, "fy": cam.fy, "cx": cam.cx, "cy": cam.cy, "width": cam.width,
                      "height": cam.height, "R": cam.R.tolist(), "t": cam.t.tolist()}
            (case / "truth.json").write_text(json.dumps(
                {**truth.to_json(), "perturbed_input": given, "camera": camera}, indent=2))
            np.savez_compressed(case / "truth_mesh.npz", vertices=truth.vertices.astype(np.float32))
            cases.append(case)
            log(f"{case.name}: {gender:6s} {truth.height_cm:5.1f} cm {truth.weight_kg:5.1f} kg "
                f"chest {truth.measurements['chest']:.1f} waist {truth.measurements['waist']:.1f} "
                f"hip {truth.measurements['hip']:.1f}")
    finally:
        renderer.close()
    return cases


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


def run_eval(set_dir: Path, device: str = "auto", log=print) -> dict:
    """Run the pipeline (exact and perturbed inputs) and the photo-free baseline on a set."""
    from inference.pipeline import Job, Pipeline, PipelineConfig
    from inference.stages.fit import FitConfig, Fitter, FitTarget
    from inference.stages.measure import measure
    from inference.types import Subject

    cases = sorted(p for p in Path(set_dir).glob("case_*") if (p / "truth.json").is_file())
    if not cases:
        raise AvatarError(f"{set_dir} holds no case_*/truth.json: make one with `avatar eval make-set`")
    pipe = Pipeline(PipelineConfig(device=device, body_model="anny"), log=log)
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
                item = {"case": case.name, "truth": want}
                runs = {
                    "pipeline": Subject(truth["height_cm"], truth["gender"], truth["weight_kg"]),
                    "pipeline, inputs off by ±2 cm/±5 kg": Subject(
                        truth["perturbed_input"]["height_cm"], truth["gender"],
                        truth["perturbed_input"]["weight_kg"]),
                }
                for name, subject in runs.items():
                    row = rows[name]
                    row.runs += 1
                    t0 = time.perf_counter()
                    try:
                        res = pipe.run(Job(case / "photo.png", subject, Path(tmp) / case.name))
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
                # baseline: only height, weight and gender
                row = rows["baseline (no photo)"]
                row.runs += 1
                t0 = time.perf_counter()
                subject = runs["pipeline"]
                fit = baseline_fitter.fit([FitTarget(subject, (768, 1024))])[0]
                v, kp = fit.standard["apose"]
                got = measure(v, body.faces, kp)
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
            "rows": {k: r.summary() for k, r in rows.items()}, "per_case": per_case}


def keypoint_offsets(set_dir: Path, device: str = "auto", log=print) -> dict:
    """Where the pose detector puts each COCO keypoint on a set's photos, relative to the body
    model's own keypoints projected with the true camera: per keypoint the mean and spread of
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
        v = np.load(case / "truth_mesh.npz")["vertices"]
        with torch.no_grad():
            kp = body.keypoints_from_vertices(torch.as_tensor(v[None], dtype=body.dtype, device=body.device))
        model_uv = cam.project(kp[0].cpu().numpy().astype(np.float64))
        photo = load_photo(case / "photo.png")
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
        rows[name] = {"outward": round(float(x[:, 0].mean()), 3), "up": round(float(x[:, 1].mean()), 3),
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
    return "\n".join([f"absolute error in cm (mean/max) over {report['cases']} photos, device {report['device']}",
                      fmt(head), "-+-".join("-" * w for w in widths), *map(fmt, lines)])

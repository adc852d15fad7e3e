"""The fit alone on an eval set: what the photos say (load, detect, segment) is read once and kept
beside the set (``SET/.observed/``), then only the fit and the measurements run. For tuning the fit
(``avatar eval run --fit-only``) and for the learned prior's training data (``train_prior``);
the full ``avatar eval run`` is what the README reports.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from inference.eval.generate import describe, photo_path
from inference.stages.measure import MEASUREMENTS
from inference.types import Subject

OBSERVED = ".observed"


def observe_set(set_dir: Path, pipe, cases: list[Path], log=print) -> dict[str, dict]:
    """case name → {"image_size", "keypoints", "mask", "focal_35mm"}, read from the cache or
    observed now (and cached)."""
    from inference.pipeline import Job

    cache = Path(set_dir) / OBSERVED
    cache.mkdir(exist_ok=True)
    out = {}
    for case in cases:
        f = cache / f"{case.name}.npz"
        if not f.is_file():
            truth = json.loads((case / "truth.json").read_text())
            job = Job(photo_path(case), Subject(truth["height_cm"], truth["gender"], truth["weight_kg"]),
                      case / "unused")
            st = pipe.observe([job])
            photo, subject, mask = st["photos"][0], st["subjects"][0], st["masks"][0]
            tmp = cache / f"{case.name}.{os.getpid()}.tmp.npz"
            np.savez_compressed(tmp, image_size=np.array(photo.image.shape[1::-1]),
                                keypoints=subject.keypoints, mask=mask,
                                focal_35mm=np.array(np.nan if photo.focal_35mm is None else photo.focal_35mm))
            tmp.rename(f)
            log(f"{case.name}: observed")
        d = np.load(f)
        focal = float(d["focal_35mm"])
        out[case.name] = {"image_size": tuple(int(x) for x in d["image_size"]), "keypoints": d["keypoints"],
                          "mask": d["mask"].astype(bool), "focal_35mm": None if np.isnan(focal) else focal}
    return out


def fit_cases(fitter, cases: list[Path], observed: dict[str, dict], subjects: list[Subject],
              batch: int = 8) -> list:
    """FitResults for ``cases`` (in order), ``batch`` photos per fit call."""
    from inference.stages.fit import FitTarget

    results = []
    for k in range(0, len(cases), batch):
        targets = [FitTarget(s, o["image_size"], o["keypoints"], o["mask"], o["focal_35mm"])
                   for s, o in ((subjects[i], observed[cases[i].name]) for i in range(k, min(k + batch, len(cases))))]
        results.extend(fitter.fit(targets))
    return results


def run_fit_only(set_dir: Path, device: str = "cpu", fit=None, inputs: str = "exact", log=print,
                 clothing: str = "regular", weight_source: str = "reported") -> dict:
    """The fit and the measure stage on the pipeline's own observations of each photo (the
    measurements are the pipeline's: export and render do not change them), with the true
    inputs or (``inputs="perturbed"``) those a user a little off would type, and the
    photo-free baseline; ``clothing``: what every subject is said to wear (``Subject.clothing``),
    ``weight_source`` where every typed weight is said to come from (``Subject.weight_source``);
    → {"cases", "mean", "max", "bias", "baseline", "per_case"} (cm)."""
    from inference.pipeline import Pipeline, PipelineConfig
    from inference.stages.fit import FitConfig, Fitter
    from inference.stages.measure import measure

    cases = sorted(p for p in Path(set_dir).glob("case_*") if (p / "truth.json").is_file())
    pipe = Pipeline(PipelineConfig(device=device, body_model="anny"), log=lambda *_: None)
    try:
        observed = observe_set(set_dir, pipe, cases, log)
        body = pipe.body_for("other")
        fitter = Fitter(body, fit or FitConfig())
        truths = [json.loads((c / "truth.json").read_text()) for c in cases]
        typed = [t if inputs == "exact" else t["perturbed_input"] for t in truths]
        subjects = [Subject(x["height_cm"], t["gender"], x["weight_kg"], clothing, weight_source)
                    for x, t in zip(typed, truths)]
        fits = fit_cases(fitter, cases, observed, subjects)
        from inference.stages.fit import FitTarget

        baseline = Fitter(body, FitConfig(use_photo=False)).fit(
            [FitTarget(Subject(t["height_cm"], t["gender"], t["weight_kg"]), (768, 1024)) for t in truths])
    finally:
        pipe.close()
    base_errs = {m: [] for m in MEASUREMENTS}
    for t, f in zip(truths, baseline):
        v, kp = f.standard["apose"]
        got = measure(v, body.faces, kp)
        for m in MEASUREMENTS:
            base_errs[m].append(abs(got[m] - t["measurements"][m]))
    per_case, errs = [], {m: [] for m in MEASUREMENTS}
    for case, t, x, f in zip(cases, truths, typed, fits):
        v, kp = f.standard["apose"]
        got = measure(v, body.faces, kp)
        signed = {m: round(got[m] - t["measurements"][m], 2) for m in MEASUREMENTS}
        for m in MEASUREMENTS:
            errs[m].append(signed[m])
        per_case.append({"case": case.name, "error_cm": signed, "mass_kg": round(f.mass_kg, 1),
                         "typed_weight_kg": x["weight_kg"], "true_weight_kg": t["weight_kg"],
                         "mask_iou": mask_iou(case, observed[case.name]["mask"]),
                         "scene": describe(t.get("scene")),
                         "truth_phenotypes": t["phenotypes"], "shape": f.shape[0].tolist(),
                         "prior_mean": f.diagnostics.get("prior_mean"),
                         "clothing_read": f.diagnostics.get("clothing_read", clothing),
                         "cloth_predicted_cm": f.diagnostics.get("cloth_predicted_cm"),
                         "cloth_gap_cm": f.diagnostics.get("cloth_gap_cm"),
                         "prior_features": f.diagnostics.get("prior_features")})
        log(f"{case.name}: chest/waist/hip {signed['chest']:+.1f}/{signed['waist']:+.1f}/{signed['hip']:+.1f}")
    return {"cases": len(cases),
            "mean": {m: round(float(np.mean(np.abs(e))), 2) for m, e in errs.items()},
            "max": {m: round(float(np.max(np.abs(e))), 2) for m, e in errs.items()},
            "bias": {m: round(float(np.mean(e)), 2) for m, e in errs.items()},
            "inputs": inputs, "clothing": clothing, "weight_source": weight_source,
            "mask_iou": {"mean": round(float(np.mean([c["mask_iou"] for c in per_case])), 4),
                         "min": round(float(np.min([c["mask_iou"] for c in per_case])), 4)},
            "baseline": {"mean": {m: round(float(np.mean(e)), 2) for m, e in base_errs.items()},
                         "max": {m: round(float(np.max(e)), 2) for m, e in base_errs.items()}},
            "mass": mass_summary(per_case), "per_case": per_case}


def mass_summary(per_case: list[dict]) -> dict:
    """How far the fitted mass ended from the true weight (kg) and, where the typed weight was
    off, the share of that error the photo took back (1: all of it, 0: none, below 0: the fit
    moved further away). The girths follow the fitted mass (~0.5 cm per kg at a given height),
    so this is the first thing to read when they move."""
    d = [c["mass_kg"] - c["true_weight_kg"] for c in per_case]
    off = [c for c in per_case if _typed_off(c)]
    back = [(c["typed_weight_kg"] - c["mass_kg"]) / (c["typed_weight_kg"] - c["true_weight_kg"]) for c in off]
    return {"abs_error_kg_mean": round(float(np.mean(np.abs(d))), 2) if d else None,
            "abs_error_kg_max": round(float(np.max(np.abs(d))), 2) if d else None,
            "typed_error_taken_back": round(float(np.mean(back)), 2) if back else None}


def mask_iou(case: Path, mask: np.ndarray) -> float:
    """The segmenter's mask against the perfect one (``truth_mask.png``, at the photo's size)."""
    from PIL import Image

    truth = np.asarray(Image.open(case / "truth_mask.png").resize(mask.shape[::-1], Image.NEAREST)) > 0
    return round(float((mask & truth).sum() / max((mask | truth).sum(), 1)), 4)


def format_fit_only(r: dict, worst: int = 5) -> str:
    b = r["baseline"]
    lines = [f"inputs: {r['inputs']}; clothing: {r.get('clothing', 'regular')}; "
             f"weight from: {r.get('weight_source', 'reported')}; {r['cases']} photos; cm",
             "measurement       mean   max   bias   baseline mean/max",
             *(f"{m:16s} {r['mean'][m]:5.2f} {r['max'][m]:5.2f} {r['bias'][m]:+5.2f}   {b['mean'][m]:5.2f} / {b['max'][m]:5.2f}"
               for m in MEASUREMENTS),
             f"mask IoU against the true silhouette: mean {r['mask_iou']['mean']:.3f}, min {r['mask_iou']['min']:.3f}",
             f"read as fitted clothes: {sum(c.get('clothing_read') == 'fitted' for c in r['per_case'])} of {r['cases']}",
             *_mass_lines(r.get("mass")),
             "worst photos (chest/waist/hip error, cm; mask IoU) and what was unusual:"]
    girth = lambda c: max(abs(c["error_cm"][m]) for m in ("chest", "waist", "hip"))  # noqa: E731
    for c in sorted(r["per_case"], key=girth, reverse=True)[:worst]:
        e = c["error_cm"]
        lines.append(f"  {c['case']}: chest {e['chest']:+.1f} waist {e['waist']:+.1f} hip {e['hip']:+.1f}; "
                     f"IoU {c['mask_iou']:.2f}{_mass_note(c)}"
                     f"{'; read as fitted' if c.get('clothing_read') == 'fitted' else ''} — {c['scene']}")
    return "\n".join(lines)


def _mass_lines(m: dict | None) -> list[str]:
    if not m or m.get("abs_error_kg_mean") is None:
        return []
    line = f"fitted mass - true weight: mean {m['abs_error_kg_mean']:.1f} kg, worst {m['abs_error_kg_max']:.1f} kg"
    if m.get("typed_error_taken_back") is not None:
        line += f"; the photo took back {100 * m['typed_error_taken_back']:.0f} % of the typed weight's error"
    return [line]


def _mass_note(c: dict) -> str:
    """'; mass 66.1 kg (true 69.1)', with the typed weight where it was off."""
    if "true_weight_kg" not in c:
        return ""
    off = f"typed {c['typed_weight_kg']:.1f}, " if _typed_off(c) else ""
    return f"; mass {c['mass_kg']:.1f} kg ({off}true {c['true_weight_kg']:.1f})"


def _typed_off(c: dict) -> bool:
    """Whether the weight typed for this photo was not its true one (``--inputs perturbed``)."""
    return abs(c["typed_weight_kg"] - c["true_weight_kg"]) > 0.05

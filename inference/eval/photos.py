"""``avatar eval photos``: the pipeline on a studio's own photos against its own tape measurements.

Our eval sets are renders of the body model the fit uses; a studio's trust comes from its own
customers. A CSV names each photo with what the studio typed (height, weight, gender, clothing
and, optionally, ``weight_source``: ``scale`` where the person was weighed) and what its tape said
(any of the measurement names, cm; a blank cell is "not measured"):

    photo,height_cm,weight_kg,gender,clothing,chest,waist,hip
    anna.jpg,168,61,female,regular,91,72,99

Photo paths are relative to the CSV's folder (or absolute); other columns are ignored. Every row
is checked before any photo runs (one message lists what is wrong, nothing is written). The
report is, per measurement, the mean and worst absolute difference, the bias (mean fitted − tape:
a tape convention that differs from ours shows here, not as noise) and the same for the
photo-free baseline (the body of that height, weight and gender alone): where the pipeline does
not beat it on these photos, the photo is not helping there.
"""
from __future__ import annotations

import csv
import math
import statistics
import tempfile
from pathlib import Path

from inference.errors import AvatarError, InputError
from inference.types import CLOTHING, GENDERS, MEASUREMENTS, WEIGHT_SOURCES, Subject

REQUIRED = ("photo", "height_cm", "gender")
TAPE = tuple(m for m in MEASUREMENTS if m != "height")  # the height is an input, exact by design
MAX_LISTED = 10  # problems listed in one message


def read_rows(csv_path: Path) -> tuple[list[dict], list[str], list[str]]:
    """The CSV's rows as ``{"line", "photo", "subject", "tape"}`` (every row checked), the
    measurement columns found and the columns ignored. Raises InputError listing the problems."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: no such file", "invalid_argument")
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{csv_path}: not a readable UTF-8 CSV ({exc})", "invalid_argument") from exc
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise InputError(f"{csv_path}: missing column(s) {', '.join(missing)} (needs {', '.join(REQUIRED)}, "
                         f"optional weight_kg, clothing and weight_source, and tape columns among {', '.join(TAPE)})",
                         "invalid_argument")
    tape_cols = [c for c in columns if c in TAPE]
    if not tape_cols:
        raise InputError(f"{csv_path}: no measurement column: name at least one of {', '.join(TAPE)}",
                         "invalid_argument")
    ignored = [c for c in columns if c not in (*REQUIRED, "weight_kg", "clothing", "weight_source", *TAPE)]
    rows, problems = [], []
    for line, raw in enumerate(reader, start=2):
        cell = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(cell.values()):
            continue  # a blank line
        where = f"line {line}"
        try:
            photo = Path(cell["photo"]).expanduser()
            if not cell["photo"]:
                raise InputError("no photo named")
            if not photo.is_absolute():
                photo = csv_path.parent / photo
            if not photo.is_file():
                raise InputError(f"photo {cell['photo']!r} not found (paths are relative to the CSV's folder)")
            gender = cell["gender"].lower()
            if gender not in GENDERS:
                raise InputError(f"gender {cell['gender']!r} is not one of {', '.join(GENDERS)}")
            clothing = (cell.get("clothing") or "regular").lower()
            if clothing not in CLOTHING:
                raise InputError(f"clothing {cell.get('clothing')!r} is not one of {', '.join(CLOTHING)}")
            source = (cell.get("weight_source") or "reported").lower()
            if source not in WEIGHT_SOURCES:
                raise InputError(f"weight_source {cell.get('weight_source')!r} is not one of "
                                 f"{', '.join(WEIGHT_SOURCES)}")
            weight = _number(cell.get("weight_kg", ""), "weight_kg", optional=True)
            subject = Subject(_number(cell["height_cm"], "height_cm"), gender, weight, clothing, source).validate()
            tape = {m: _number(cell.get(m, ""), m, optional=True) for m in tape_cols}
            tape = {m: v for m, v in tape.items() if v is not None}
            if not tape:
                raise InputError("no tape measurement in this row")
            if any(v <= 0 for v in tape.values()):
                raise InputError("a tape measurement is not positive")
        except InputError as exc:
            problems.append(f"{where}: {exc}")
            continue
        rows.append({"line": line, "photo": photo, "name": cell["photo"], "subject": subject, "tape": tape})
    if problems:
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise InputError(f"{csv_path}: " + "; ".join(problems[:MAX_LISTED]) + more, "invalid_argument")
    if not rows:
        raise InputError(f"{csv_path}: no rows", "invalid_argument")
    return rows, tape_cols, ignored


def _number(raw: str, name: str, optional: bool = False) -> float | None:
    if raw == "" and optional:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"{name} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{name} {raw!r} is not a number")
    return value


def run_photos(csv_path: Path, device: str = "auto", out_dir: Path | None = None, fit=None,
               log=print) -> dict:
    """Every row's photo through the whole pipeline (and the photo-free baseline) → the report.
    ``out_dir``: keep each photo's avatar there (``out_dir/<line>-<photo stem>/``), else discarded."""
    from inference.eval.report import photo_free
    from inference.pipeline import Job, Pipeline, PipelineConfig
    from inference.stages.fit import FitConfig, Fitter

    rows, tape_cols, ignored = read_rows(csv_path)
    pipe = Pipeline(PipelineConfig(device=device, fit=fit or FitConfig()), log=log)
    baselines: dict[int, Fitter] = {}
    per_photo = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(out_dir) if out_dir is not None else Path(tmp)
            for row in rows:
                subject = row["subject"]
                item = {"line": row["line"], "photo": row["name"], "tape": row["tape"],
                        "inputs": {"height_cm": subject.height_cm, "weight_kg": subject.weight_kg,
                                   "gender": subject.gender, "clothing": subject.clothing,
                                   "weight_source": subject.weight_source}}
                body = pipe.body_for(subject.gender)
                if id(body) not in baselines:
                    baselines[id(body)] = Fitter(body, FitConfig(use_photo=False))
                got, _ = photo_free(baselines[id(body)], subject)
                item["baseline"] = {m: round(got[m], 2) for m in row["tape"]}
                try:
                    res = pipe.run(Job(row["photo"], subject, root / f"{row['line']:03d}-{row['photo'].stem}"))
                except AvatarError as exc:
                    item["error"] = {"code": exc.code, "message": str(exc)}
                    log(f"line {row['line']} {row['name']}: FAILED {exc}")
                    per_photo.append(item)
                    continue
                item["pipeline"] = {m: round(res.measurements[m], 2) for m in row["tape"]}
                item["fit"] = {k: res.fit.get(k) for k in ("mass_kg", "clothing_read", "cloth_predicted_cm")}
                if out_dir is not None:
                    item["out_dir"] = str(res.out_dir)
                per_photo.append(item)
                log(f"line {row['line']} {row['name']}: " + " ".join(
                    f"{m} {item['pipeline'][m] - t:+.1f}" for m, t in row["tape"].items()))
    finally:
        pipe.close()
    summary = {}
    for m in tape_cols:
        done = [p for p in per_photo if "pipeline" in p and m in p["tape"]]
        if not done:
            continue
        diff = [p["pipeline"][m] - p["tape"][m] for p in done]
        based = [p["baseline"][m] - p["tape"][m] for p in done]
        summary[m] = {"n": len(done), "mean_abs": _r(statistics.fmean(map(abs, diff))),
                      "max_abs": _r(max(map(abs, diff))), "bias": _r(statistics.fmean(diff)),
                      "baseline_mean_abs": _r(statistics.fmean(map(abs, based))),
                      "baseline_bias": _r(statistics.fmean(based))}
    return {"csv": str(csv_path), "photos": len(rows), "failed": sum("error" in p for p in per_photo),
            "device": pipe.device, "body_model": pipe.body_model, "measurements": summary,
            "ignored_columns": ignored, "per_photo": per_photo}


def _r(x: float) -> float:
    return round(x, 2)


def format_photos(report: dict) -> str:
    head = ["measurement", "photos", "mean |diff|", "worst", "bias", "baseline mean |diff|", "baseline bias"]
    rows = [[m, s["n"], f"{s['mean_abs']:.1f}", f"{s['max_abs']:.1f}", f"{s['bias']:+.1f}",
             f"{s['baseline_mean_abs']:.1f}", f"{s['baseline_bias']:+.1f}"]
            for m, s in report["measurements"].items()]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [f"{report['photos']} photos from {report['csv']} ({report['failed']} failed), "
           f"body model {report['body_model']}, device {report['device']}; cm, fitted - tape",
           fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)]
    worse = [m for m, s in report["measurements"].items() if s["mean_abs"] >= s["baseline_mean_abs"]]
    if worse:
        out.append("no better than the photo-free baseline on these photos: " + ", ".join(worse))
    out.append("a bias is a convention as much as an error: our definitions are in the README "
               "(Measurements); a tape taken elsewhere on the body shows as a steady offset")
    for p in report["per_photo"]:
        if "error" in p:
            out.append(f"  line {p['line']} {p['photo']}: failed: {p['error']['message']}")
    if report["ignored_columns"]:
        out.append("ignored columns: " + ", ".join(report["ignored_columns"]))
    return "\n".join(out)

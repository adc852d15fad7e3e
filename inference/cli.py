"""The ``avatar`` command line."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from inference.errors import AvatarError, InputError
from inference.types import CLOTHING, GENDERS, WEIGHT_SOURCES, Subject


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The pipeline's commands; the service adds its own (serve, worker, keys, db) to ``sub``."""
    p = argparse.ArgumentParser(prog="avatar", description="Photo → 3D body avatar.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("create", help="turn one full-body photo into an avatar")
    c.add_argument("photo", type=Path, nargs="?", help="the photo (or --sample)")
    c.add_argument("--sample", action="store_true",
                   help="use the sample photo shipped with Ultralytics (bus.jpg): no photo of your own needed")
    c.add_argument("--height", type=float, required=True, help="height in cm (50-250)")
    c.add_argument("--weight", type=float, default=None, help="weight in kg (20-300), optional")
    c.add_argument("--gender", default="other", help=f"one of {', '.join(GENDERS)}")
    c.add_argument("--clothing", default="regular", help="regular (everyday clothes, the default; a photo whose "
                   "silhouette shows clothes that follow the body is read as fitted) | fitted "
                   "(skin-tight: sportswear, a scan suit; the outline is then read as the body's)")
    c.add_argument("--weight-source", default="reported", help="reported (the person's own figure, the "
                   "default: the photo may pull the body's mass against it) | scale (weighed for this photo, "
                   "in light clothes: the mass is held to it within ~2 %%)")
    c.add_argument("--out", type=Path, required=True, help="output folder (replaced atomically)")
    c.add_argument("--device", default="auto", help="auto | cpu | cuda:N")
    c.add_argument("--body-model", default="auto", help="auto | smpl | anny")
    c.add_argument("--weights-dir", type=Path, default=None)
    c.add_argument("--json", action="store_true", help="print one JSON document instead of tables")

    b = sub.add_parser("bench", help="per-stage latency, throughput and memory of the pipeline here")
    b.add_argument("--photos", nargs="+", type=Path, default=[], metavar="DIR|FILE",
                   help="photos or folders of photos (default: bus.jpg shipped with Ultralytics)")
    b.add_argument("--runs", type=int, default=20, help="timed warm runs at batch 1 (default 20)")
    b.add_argument("--warmup", type=int, default=2, help="untimed runs after the cold one (default 2)")
    b.add_argument("--device", default="auto", help="auto | cpu | cuda:N")
    b.add_argument("--body-model", default="auto", help="auto | smpl | anny")
    b.add_argument("--batch", default="1", help="batch sizes for throughput, e.g. 1,4,16 (default 1)")
    b.add_argument("--weights-dir", type=Path, default=None)
    b.add_argument("--json", dest="json_out", type=Path, default=None, help="also write every figure here")

    m = sub.add_parser("measure", help="measurements of an existing avatar mesh (OBJ)")
    m.add_argument("mesh", type=Path, help="an OBJ written by avatar create (body_apose.obj)")
    m.add_argument("--body-model", required=True, choices=("anny", "smpl"))
    m.add_argument("--weights-dir", type=Path, default=None)
    m.add_argument("--json", action="store_true")

    e = sub.add_parser("eval", help="measurement accuracy: on synthetic ground truth, or on your own "
                       "tape-measured photos")
    esub = e.add_subparsers(dest="eval_command", required=True)
    ms = esub.add_parser("make-set", help="render bodies of known shape with their truth")
    ms.add_argument("out_dir", type=Path)
    ms.add_argument("--split", default=None, help="a named set: dev (tune here), test (frozen), studio; "
                    "sets --preset, --seed and --n (--n may make it smaller)")
    ms.add_argument("--preset", default=None, help="wide (default: what real photos bring) | studio")
    ms.add_argument("--n", type=int, default=None, help="photos (default 24, or the split's)")
    ms.add_argument("--seed", type=int, default=None)
    er = esub.add_parser("run", help="run the pipeline on a set and report errors")
    er.add_argument("set_dir", type=Path)
    er.add_argument("--device", default="auto")
    er.add_argument("--json", dest="json_out", type=Path, default=None, help="also write the report here")
    er.add_argument("--fit", dest="fit_overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a FitConfig field for this run (ablations, before/after), e.g. cloth_gap=false")
    er.add_argument("--fit-only", action="store_true", help="the fit and the measurements alone "
                    "on cached observations (load, detect, segment once per set; for tuning)")
    er.add_argument("--inputs", choices=("exact", "perturbed"), default="exact",
                    help="with --fit-only: the true inputs or those off by ±2 cm/±5 kg")
    er.add_argument("--clothing", choices=CLOTHING, default="regular",
                    help="what every photo's subject is said to wear (as `avatar create --clothing`)")
    er.add_argument("--weight-source", choices=WEIGHT_SOURCES, default="reported",
                    help="where every photo's weight is said to come from (as `avatar create --weight-source`)")
    et = esub.add_parser("train-prior", help="train the learned shape prior from generated renders "
                         "(the prior-train split) and write it into the package")
    et.add_argument("work_dir", type=Path, help="where the training renders and features are kept")
    et.add_argument("--n", type=int, default=None, help="photos (default: the split's)")
    et.add_argument("--out", type=Path, default=None, help="default: the packaged prior file")
    et.add_argument("--device", default="cpu")
    ep = esub.add_parser("photos", help="your own photos against your own tape measurements (a CSV: "
                         "photo, height_cm, weight_kg, gender, clothing, and any of chest, waist, hip, ...)")
    ep.add_argument("csv", type=Path, help="one row per photo; photo paths relative to the CSV's folder")
    ep.add_argument("--device", default="auto")
    ep.add_argument("--out-dir", type=Path, default=None, help="keep each photo's avatar here (look at "
                    "overlay.png); by default they are discarded")
    ep.add_argument("--json", dest="json_out", type=Path, default=None, help="also write the report here")
    ep.add_argument("--fit", dest="fit_overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a FitConfig field for this run, as with `eval run`")
    ek = esub.add_parser("keypoint-offsets", help="where the pose detector puts each keypoint "
                         "relative to the body model's own (the fit's calibration table)")
    ek.add_argument("set_dir", type=Path)
    ek.add_argument("--device", default="auto")

    w = sub.add_parser("weights", help="place or verify model weights")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    for name, text in (("fetch", "place the weights that can be had offline"),
                       ("check", "verify every weight file (sha256)")):
        x = wsub.add_parser(name, help=text)
        x.add_argument("--weights-dir", type=Path, default=None)
    cs = wsub.add_parser("convert-smpl", help="convert the official SMPL pickles (licensed) once")
    cs.add_argument("source", type=Path, help="folder with the downloaded SMPL .pkl files")
    cs.add_argument("--weights-dir", type=Path, default=None)
    return p, sub


def main(argv: list[str] | None = None) -> int:
    """With ``argv`` None this is the program itself (``python -m inference.cli``): a create
    ends the process as soon as its output is out (:func:`end_process`)."""
    args = build_parser()[0].parse_args(argv)
    args.whole_process = argv is None
    return run(args)


def end_process(code: int) -> None:
    """End a one-shot ``avatar create`` process once its files are published and its output
    flushed. What it skips is the interpreter's teardown (a last garbage collection over every
    torch and numpy object, then every module's dict: ~1 s with torch loaded on a 2-core CPU) and
    the release of the GL contexts (~0.4 s): nothing is left to use either. Nothing else is
    registered to run at exit but logging's flush, done here."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def run(args: argparse.Namespace) -> int:
    as_json = getattr(args, "json", False)
    try:
        if args.command == "create":
            return _create(args)
        if args.command == "measure":
            return _measure(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "weights":
            return _weights(args)
        if args.command == "eval":
            return _eval(args)
    except AvatarError as exc:
        if as_json:
            print(json.dumps({"status": "error", "error": {"code": exc.code, "message": str(exc)}}))
        else:
            print(f"avatar: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def _weights_dir(args) -> Path:
    from inference.weights import default_weights_dir

    return args.weights_dir or default_weights_dir()


def _early_renderer(device: str, say):
    """The pipeline's render process, started before torch is imported (its own start, ~1 s
    of imports, then runs beside that import on the second core), where the device is known
    without torch: ``cpu``, or ``auto`` on a machine with no NVIDIA driver. None otherwise
    (the pipeline starts its own)."""
    if device != "cpu" and not (device == "auto" and not os.path.exists("/dev/nvidiactl")):
        return None
    from inference.stages.render_process import RenderProcess

    try:
        return RenderProcess("cpu", log=say)
    except OSError:
        return None


def _create(args) -> int:
    subject = Subject(height_cm=args.height, gender=args.gender, weight_kg=args.weight,
                      clothing=args.clothing, weight_source=args.weight_source).validate()
    if (args.photo is None) == (not args.sample):
        raise InputError("give a photo or --sample (not both)", "invalid_argument")
    if args.sample:
        from inference.bench import sample_photo

        args.photo = sample_photo()
    if not args.photo.is_file():
        raise InputError(f"photo not found: {args.photo}", "photo_not_found")
    say = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    early_renderer = _early_renderer(args.device, say)
    from inference.pipeline import Job, Pipeline, PipelineConfig  # torch: after the renderer's start
    pipe = Pipeline(PipelineConfig(device=args.device, body_model=args.body_model,
                                   weights_dir=_weights_dir(args)), log=say, renderer=early_renderer)
    from inference.progress import StageProgress

    progress = StageProgress(sys.stderr)
    whole_process = getattr(args, "whole_process", False)
    try:
        t0 = time.perf_counter()
        res = pipe.run(Job(args.photo, subject, args.out), on_stage=progress)
        wall = (time.perf_counter() - t0) * 1000.0
    finally:
        progress.close()
        if not whole_process:  # a process that ends now needs no clean-up (end_process)
            pipe.close()
    if args.json:
        print(json.dumps({
            "status": "ok", "out_dir": str(res.out_dir), "body_model": res.body_model,
            "device": pipe.device, "models": pipe.models,
            "files": {k: str(v) for k, v in res.files.items()},
            "measurements": res.measurements,
            "timings_ms": {"stages": res.timings_ms, "total": res.total_ms,
                           "models_load": round(pipe.load_ms, 1)},
            "fit": res.fit,
        }, indent=2))
        return _created(whole_process)
    print(f"\nmodels loaded in {pipe.load_ms / 1000:.1f} s; run took {wall / 1000:.2f} s")
    print(_table(["stage", "ms"], [[k, f"{v:.0f}"] for k, v in res.timings_ms.items()]
                 + [["total", f"{res.total_ms:.0f}"]]))
    print()
    print(_table(["measurement", "cm"], [[k, f"{v:.1f}"] for k, v in res.measurements.items()]))
    typed = res.fit.get("typed_weight_kg")
    print(f"\nbody mass from volume: {res.fit['mass_kg']:.1f} kg"
          + ((f" (weighed {typed:.1f} kg on a scale: held within ~2 %)" if res.fit.get("weight_source") == "scale"
              else f" (typed {typed:.1f} kg: the photo may pull against it)") if typed else "")
          + f" · scale {res.fit['scale']:.3f}")
    if res.fit.get("clothing_read", res.fit.get("clothing")) != res.fit.get("clothing"):
        print(f"clothing: said {res.fit['clothing']}, read as {res.fit['clothing_read']} from the silhouette "
              f"(predicted {res.fit['cloth_predicted_cm'][0]:.1f} cm off the body at the hips)")
    print(f"wrote {len(res.files)} files to {res.out_dir}")
    return _created(whole_process)


def _created(whole_process: bool) -> int:
    if whole_process:
        end_process(0)
    return 0


def _bench(args) -> int:
    from inference.bench import BenchConfig, format_report, parse_batches, run_bench

    if args.runs < 0 or args.warmup < 0:
        raise InputError("--runs and --warmup must not be negative", "invalid_argument")
    cfg = BenchConfig(photos=args.photos, runs=args.runs, warmup=args.warmup, device=args.device,
                      body_model=args.body_model, batches=parse_batches(args.batch),
                      weights_dir=args.weights_dir)
    report = run_bench(cfg, log=lambda msg: print(msg, file=sys.stderr))
    print(format_report(report))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    return 0


def _measure(args) -> int:
    import torch

    from inference.stages.export import read_obj_vertices
    from inference.stages.measure import measure

    if not args.mesh.is_file():
        raise InputError(f"mesh not found: {args.mesh}", "mesh_not_found")
    try:
        verts, faces = read_obj_vertices(args.mesh)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{args.mesh} is not a readable OBJ mesh ({exc})", "invalid_mesh") from exc
    body = _load_body(args.body_model, _weights_dir(args))
    n = int(body.faces.max()) + 1
    if len(verts) != n:
        raise InputError(f"{args.mesh} has {len(verts)} vertices; a {args.body_model} mesh has {n} "
                         "(measure a mesh written by `avatar create`)", "invalid_mesh")
    kp = body.keypoints_from_vertices(torch.as_tensor(verts[None], dtype=body.dtype))[0].numpy()
    result = measure(verts, body.faces, kp)
    if args.json:
        print(json.dumps({"status": "ok", "mesh": str(args.mesh), "measurements": result}, indent=2))
    else:
        print(_table(["measurement", "cm"], [[k, f"{v:.1f}"] for k, v in result.items()]))
    return 0


def _load_body(name: str, wdir: Path):
    from inference import weights as W

    if name == "anny":
        from inference.bodies.anny_body import AnnyBody

        return AnnyBody()
    from inference.bodies.smpl_body import SmplBody

    gender = next((g for g in ("other", "male", "female") if W.smpl_available(wdir, g)), "other")
    return SmplBody(W.smpl_dir(wdir), gender=gender)


def _weights(args) -> int:
    from inference import weights as W

    wdir = _weights_dir(args)
    if args.weights_command == "fetch":
        W.fetch(wdir)
        return _weights_report(W.check(wdir))
    if args.weights_command == "check":
        return _weights_report(W.check(wdir))
    from inference.bodies.smpl_convert import convert_smpl_dir

    try:
        written = convert_smpl_dir(args.source, W.smpl_dir(wdir))
    except (ValueError, FileNotFoundError) as exc:
        raise InputError(str(exc), "invalid_smpl") from exc
    for path in written:
        print(f"wrote {path} (sha256 {W.sha256_of(path)})")
    return 0


def _eval(args) -> int:
    from inference.eval import generate
    from inference.eval import report as evaluation
    from inference.eval.splits import SPLITS

    if args.eval_command == "make-set":
        preset, seed, n = "wide", 0, 24
        if args.split is not None:
            if args.split not in SPLITS:
                raise InputError(f"--split must be one of {', '.join(SPLITS)}", "invalid_argument")
            split = SPLITS[args.split]
            if args.seed is not None or (args.preset is not None and args.preset != split.preset):
                raise InputError("--split fixes the preset and the seed", "invalid_argument")
            preset, seed, n = split.preset, split.seed, split.n
        preset = args.preset or preset
        seed = seed if args.seed is None else args.seed
        n = n if args.n is None else args.n
        if n < 1:
            raise InputError("--n must be at least 1", "invalid_argument")
        if preset not in generate.PRESETS:
            raise InputError(f"--preset must be one of {', '.join(generate.PRESETS)}", "invalid_argument")
        cases = generate.make_set(args.out_dir, n=n, seed=seed, preset=preset)
        print(f"wrote {len(cases)} cases ({preset}, seed {seed}) to {args.out_dir}")
        return 0
    if args.eval_command == "keypoint-offsets":
        result = evaluation.keypoint_offsets(args.set_dir, device=args.device)
        print(evaluation.format_offsets(result))
        return 0
    if args.eval_command == "photos":
        from inference.eval.photos import format_photos, run_photos

        report = run_photos(args.csv, device=args.device, out_dir=args.out_dir,
                            fit=evaluation.fit_config(args.fit_overrides))
        print(format_photos(report))
        if args.json_out:
            args.json_out.write_text(json.dumps(report, indent=2))
        return 0 if report["failed"] == 0 else 1
    if args.eval_command == "train-prior":
        from inference.eval.train_prior import train_prior
        from inference.stages.shape_prior import PRIOR_FILE

        train_prior(args.work_dir, out=args.out or PRIOR_FILE, n=args.n, device=args.device)
        return 0
    if args.fit_only:
        from inference.eval.fitonly import format_fit_only, run_fit_only

        report = run_fit_only(args.set_dir, device=args.device, fit=evaluation.fit_config(args.fit_overrides),
                              inputs=args.inputs, clothing=args.clothing, weight_source=args.weight_source)
        print(format_fit_only(report))
        if args.json_out:
            args.json_out.write_text(json.dumps(report, indent=2))
        return 0
    report = evaluation.run_eval(args.set_dir, device=args.device,
                                 fit=evaluation.fit_config(args.fit_overrides), clothing=args.clothing,
                                 weight_source=args.weight_source)
    print(evaluation.format_report(report))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    return 0 if report["rows"]["pipeline"]["failed"] == 0 else 1


def _weights_report(rows) -> int:
    print(_table(["weight", "ok", "detail"], [[n, "yes" if ok else "NO", d] for n, ok, d in rows]))
    return 0 if all(ok for _, ok, _ in rows) else 3


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


if __name__ == "__main__":
    sys.exit(main())

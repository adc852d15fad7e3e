"""The fit stage alone, on fixed inputs, for A/B comparisons of two checkouts (speed and results).

    # once: detect + segment three photos (bus.jpg and two synthetic Anny bodies of known shape)
    PYTHONPATH=. .venv/bin/python scripts/fit_ab.py prepare /tmp/fit_targets.pkl
    # fit them with a checkout (PYTHONPATH picks which), write shapes, limbs and measurements
    PYTHONPATH=CHECKOUT .venv/bin/python scripts/fit_ab.py fit /tmp/fit_targets.pkl --out A.npz [--runs N]
    # compare two outputs: max |Δ| of measurements (cm) and fitted shape parameters
    .venv/bin/python scripts/fit_ab.py compare A.npz B.npz
    # torch.profiler table of one warm fit (on a GPU: --device cuda, CUDA kernels and syncs too)
    PYTHONPATH=CHECKOUT .venv/bin/python scripts/fit_ab.py fit /tmp/fit_targets.pkl --profile
    # where the fit waits for the device (host syncs), by line of inference/: on CUDA torch's sync
    # debug mode; on a CPU the calls that would sync on a GPU (item, bool, float, tolist, numpy, ...)
    PYTHONPATH=. .venv/bin/python scripts/fit_ab.py fit /tmp/fit_targets.pkl --syncs [--device cuda]
    # the fit of N photos as one batch (the targets repeated), seconds per batch and per photo
    PYTHONPATH=. .venv/bin/python scripts/fit_ab.py fit /tmp/fit_targets.pkl --device cuda --batch 16

The ``fit`` command only uses the ``AnnyBody``/``Fitter``/``measure`` interfaces, so the same file
runs against an older checkout. It loads the body model, fits the first target once (warm-up,
untimed), then fits every target ``--runs`` times and prints the warm seconds per fit.
"""
from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch

TRUTHS = {
    "athletic_man": dict(gender="male", muscle=0.7, weight=0.4, height=0.45),
    "heavy_woman": dict(gender="female", muscle=0.3, weight=0.75, height=0.4, proportions=0.6),
}


def prepare(out: Path) -> None:
    import tempfile

    from PIL import Image

    from inference.bench import sample_photo
    from inference.eval.truth import render_truth, truth_for
    from inference.pipeline import Job, Pipeline, PipelineConfig
    from inference.stages.fit import FitTarget
    from inference.types import Subject

    pipe = Pipeline(PipelineConfig(device="cpu", body_model="anny"))
    body = pipe.body_for("other")
    tmp = Path(tempfile.mkdtemp())
    photos = [("bus", sample_photo(), Subject(180, "male", 75))]
    for i, (name, kw) in enumerate(sorted(TRUTHS.items())):
        truth = truth_for(body, **kw)
        image = render_truth(truth, body, pipe.renderer, np.random.default_rng(7 + i))
        path = tmp / f"{name}.png"
        Image.fromarray(image).save(path)
        photos.append((name, path, Subject(truth.height_cm, truth.gender, truth.weight_kg)))
    targets = []
    for name, path, subject in photos:
        jobs, state = [Job(path, subject, tmp / name)], {}
        for stage in ("load", "detect", "segment"):
            getattr(pipe, f"_stage_{stage}")(jobs, [None], state)
        img = state["photos"][0]
        targets.append((name, FitTarget(subject, (img.image.shape[1], img.image.shape[0]),
                                        state["subjects"][0].keypoints, state["masks"][0], img.focal_35mm)))
    pipe.close()
    out.write_bytes(pickle.dumps(targets))
    print(f"wrote {len(targets)} targets to {out}")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def fit(targets_file: Path, out: Path | None, runs: int, profile: bool, only: str | None,
        device: str = "cpu", batch: int = 0, syncs: bool = False) -> None:
    from inference.bodies.anny_body import AnnyBody
    from inference.stages.fit import Fitter
    from inference.stages.measure import measure

    torch.manual_seed(0)
    targets = pickle.loads(targets_file.read_bytes())
    if only:
        targets = [t for t in targets if t[0] == only]
    body = AnnyBody(device=device)
    fitter = Fitter(body)
    fitter.fit([targets[0][1]])  # warm-up
    if syncs:
        from inference.syncs import count_syncs

        counts = count_syncs(lambda: fitter.fit([targets[0][1]]), device)
        for where, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(f"{n:6d}  {where}")
        print(f"host syncs in one fit ({targets[0][0]}, {device}): {sum(counts.values())} at {len(counts)} places")
        return
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
        with torch_profile(activities=acts) as prof:
            t0 = time.perf_counter()
            fitter.fit([targets[0][1]])
            _sync(device)
            print(f"profiled fit ({targets[0][0]}, {device}): {time.perf_counter() - t0:.2f} s")
        avg = prof.key_averages()
        print(avg.table(sort_by="self_cpu_time_total", row_limit=25))
        if device.startswith("cuda"):
            print(avg.table(sort_by="self_device_time_total", row_limit=20))
            calls = {e.key: e.count for e in avg}
            kernels = sum(e.count for e in avg if getattr(e, "device_type", None) is not None
                          and str(e.device_type).endswith("CUDA"))
            print(f"host syncs: cudaStreamSynchronize {calls.get('cudaStreamSynchronize', 0)}, "
                  f"cudaDeviceSynchronize {calls.get('cudaDeviceSynchronize', 0)}, "
                  f"cudaMemcpyAsync {calls.get('cudaMemcpyAsync', 0)}; launches "
                  f"cudaLaunchKernel {calls.get('cudaLaunchKernel', 0)}; device events {kernels}")
        else:
            print(avg.table(sort_by="cpu_time_total", row_limit=25))
        return
    if batch:
        many = [targets[k % len(targets)][1] for k in range(batch)]
        fitter.fit(many)  # warm-up at this size
        walls = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fitter.fit(many)
            _sync(device)
            walls.append(time.perf_counter() - t0)
        med = float(np.median(walls))
        print(f"batch {batch} on {device}: median {med:.3f} s per batch, {med / batch * 1000:.0f} ms per photo, "
              f"{batch / med:.2f} fits/s ({runs} batches)", flush=True)
        return
    saved, times, parts = {}, [], []
    for _ in range(runs):
        for name, target in targets:
            t0 = time.perf_counter()
            res = fitter.fit([target])[0]
            _sync(device)
            times.append(time.perf_counter() - t0)
            parts.append(res.diagnostics.get("fit_parts_ms", {}))
            verts, kp = res.standard["apose"]
            m = measure(verts, body.faces, kp)
            saved[f"{name}/shape"] = res.shape[0].cpu().numpy().astype(np.float64)
            saved[f"{name}/limbs"] = res.limbs[0].cpu().numpy().astype(np.float64)
            saved[f"{name}/scale"] = np.float64(res.scale)
            saved[f"{name}/mass"] = np.float64(res.mass_kg)
            saved[f"{name}/measure_names"] = np.array(sorted(m))
            saved[f"{name}/measure_cm"] = np.array([m[k] for k in sorted(m)], np.float64)
    print(f"warm fit s: median {np.median(times):.3f} min {min(times):.3f} max {max(times):.3f} "
          f"({len(times)} fits)", flush=True)
    if parts and parts[0]:  # FitParts (older checkouts have none)
        print("median ms: " + " · ".join(f"{k} {np.median([p[k] for p in parts]):.0f}" for k in parts[0]))
    if out is not None:
        np.savez(out, **saved)


def compare(a: Path, b: Path) -> int:
    A, B = np.load(a), np.load(b)
    names = sorted({k.split("/")[0] for k in A.files})
    worst_m = worst_s = worst_l = 0.0
    for n in names:
        dm = np.abs(A[f"{n}/measure_cm"] - B[f"{n}/measure_cm"])
        ds = np.abs(A[f"{n}/shape"] - B[f"{n}/shape"])
        dl = np.abs(A[f"{n}/limbs"] - B[f"{n}/limbs"])
        k = int(np.argmax(dm))
        print(f"{n:14s} max|Δ measurement| {dm.max():.4f} cm ({A[f'{n}/measure_names'][k]}) · "
              f"max|Δ shape| {ds.max():.2e} · max|Δ limbs| {dl.max():.2e} rad · "
              f"Δ mass {abs(float(A[f'{n}/mass'] - B[f'{n}/mass'])):.4f} kg")
        worst_m, worst_s, worst_l = max(worst_m, dm.max()), max(worst_s, ds.max()), max(worst_l, dl.max())
    ok = worst_m <= 0.05 and worst_s <= 1e-3
    print(f"all: max|Δ measurement| {worst_m:.4f} cm, max|Δ shape| {worst_s:.2e}, "
          f"max|Δ limbs| {worst_l:.2e}: {'within' if ok else 'OUTSIDE'} 0.05 cm / 1e-3")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("out", type=Path)
    f = sub.add_parser("fit")
    f.add_argument("targets", type=Path)
    f.add_argument("--out", type=Path)
    f.add_argument("--runs", type=int, default=1)
    f.add_argument("--profile", action="store_true")
    f.add_argument("--only", help="fit only the target of this name (bus, athletic_man, heavy_woman)")
    f.add_argument("--device", default="cpu", help="cpu | cuda:N")
    f.add_argument("--batch", type=int, default=0, help="fit the targets repeated to this many as one batch")
    f.add_argument("--syncs", action="store_true", help="count the fit's host syncs by line (see above)")
    f.add_argument("--threads", type=int, default=0,
                   help="torch threads (0: torch's default); 1 keeps A/B runs on a shared machine steady")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args()
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    if args.cmd == "prepare":
        prepare(args.out)
    elif args.cmd == "fit":
        fit(args.targets, args.out, args.runs, args.profile, args.only, args.device, args.batch, args.syncs)
    else:
        return compare(args.a, args.b)
    return 0


if __name__ == "__main__":
    sys.exit(main())

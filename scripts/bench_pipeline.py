"""Per-stage latency of the pipeline: cold (first run in the process) and warm (median of the
next runs). Prints a table; nothing is asserted.

    .venv/bin/python scripts/bench_pipeline.py [PHOTO] [--runs 4] [--device auto] [--body-model auto]
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import torch

from inference.pipeline import STAGES, Job, Pipeline, PipelineConfig
from inference.types import Subject


def main() -> None:
    assets = Path(next(iter(importlib.util.find_spec("ultralytics").submodule_search_locations))) / "assets"
    ap = argparse.ArgumentParser()
    ap.add_argument("photo", nargs="?", type=Path, default=assets / "bus.jpg")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--body-model", default="auto")
    ap.add_argument("--height", type=float, default=180)
    ap.add_argument("--weight", type=float, default=75)
    ap.add_argument("--gender", default="male")
    args = ap.parse_args()
    t0 = time.perf_counter()
    pipe = Pipeline(PipelineConfig(device=args.device, body_model=args.body_model), log=print)
    print(f"models loaded in {time.perf_counter() - t0:.2f} s · torch threads {torch.get_num_threads()}")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            res = pipe.run(Job(args.photo, Subject(args.height, args.gender, args.weight), Path(tmp) / f"r{i}"))
            runs.append(res)
    pipe.close()
    warm = runs[1:] or runs
    print(f"\n{'stage':<8} {'cold ms':>9} {'warm ms (median of ' + str(len(warm)) + ')':>24}")
    for s in STAGES:
        print(f"{s:<8} {runs[0].timings_ms[s]:>9.0f} {statistics.median(r.timings_ms[s] for r in warm):>24.0f}")
    print(f"{'total':<8} {runs[0].total_ms:>9.0f} {statistics.median(r.total_ms for r in warm):>24.0f}")


if __name__ == "__main__":
    main()

"""What the RunPod-compatible path costs on top of the pipeline: warm ``/v2/{endpoint}/runsync``
calls against a running ``avatar serve`` + ``avatar worker``, each compared with the pipeline's
own time for that same job (``output.timings.total_ms``). Prints a table; nothing is asserted.

    .venv/bin/python scripts/bench_runsync.py --base http://127.0.0.1:8000 --key avk_... [--runs 3]
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import httpx


def main() -> None:
    assets = Path(next(iter(importlib.util.find_spec("ultralytics").submodule_search_locations))) / "assets"
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--photo", type=Path, default=assets / "bus.jpg")
    ap.add_argument("--endpoint", default="avatar")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    c = httpx.Client(base_url=args.base, headers={"Authorization": f"Bearer {args.key}"}, timeout=600)
    photo = c.post("/api/photos", files={"file": (args.photo.name, args.photo.read_bytes(), "image/jpeg")})
    photo.raise_for_status()
    body = {"photo_url": photo.json()["photo_url"], "height": 180, "weight": 75, "gender": "male"}
    print(f"{'files':<7} {'run':>3} {'runsync ms':>11} {'pipeline ms':>12} {'overhead ms':>12} {'delay ms':>9}")
    for files in ("base64", "links"):
        overheads = []
        for i in range(args.runs + 1):  # the first one warms the path up and is not counted
            t0 = time.perf_counter()
            r = c.post(f"/v2/{args.endpoint}/runsync", params={"wait": 300_000},
                       json={"input": {**body, "return_files": files}})
            doc = r.json()
            wall = (time.perf_counter() - t0) * 1000.0
            if doc.get("status") != "COMPLETED":
                raise SystemExit(f"runsync did not complete: {str(doc)[:500]}")
            pipeline = doc["output"]["timings"]["total_ms"]
            if i:
                overheads.append(wall - pipeline)
            print(f"{files:<7} {i if i else 'warm':>3} {wall:>11.0f} {pipeline:>12.0f} {wall - pipeline:>12.0f} "
                  f"{doc['delayTime']:>9}")
        print(f"{files:<7} median overhead {statistics.median(overheads):.0f} ms over {args.runs} runs")


if __name__ == "__main__":
    main()

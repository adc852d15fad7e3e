"""Issue 14's service figures on a local stack (`avatar serve` + one `avatar worker --device cpu`
over a real Redis, SQLite and a local storage folder, as BENCHMARKS.md's --via-api rows):

- worker start → ready: from starting the process until /ready sees its heartbeat, with the
  worker's own log split (pipeline load, warm-up);
- enqueue → worker start: ``started_at − created_at`` of jobs created one at a time on an idle
  worker (a photo with nobody in it: the job ends at detection, so many samples are cheap);
- optionally ``avatar bench --via-api`` (``--bench-runs N``): the service's overhead over the pipeline,
  each job followed by its server-sent events, or polled (``--bench-follow poll``; ``events,poll``
  runs both against the same stack).

    .venv/bin/python scripts/measure_service.py [--jobs 30] [--bench-runs 6] [--bench-follow events,poll]
"""
from __future__ import annotations

import argparse
import io
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from servers import redis_server  # noqa: E402
from service_procs import api_server, avatar_cmd, worker  # noqa: E402
from stack import FINAL, Stack, create  # noqa: E402


def nobody_jpeg() -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(90, 110, (480, 640, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=30)
    ap.add_argument("--bench-runs", type=int, default=0)
    ap.add_argument("--bench-follow", default="events", help="events | poll | events,poll (one bench each, in order)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as redis_url:
        cwd = Path(tmp)
        env = {"DATABASE_URL": f"sqlite:///{cwd}/avatar.db", "STORAGE_URL": f"file://{cwd}/storage",
               "REDIS_URL": redis_url, "PYOPENGL_PLATFORM": "osmesa", "YOLO_OFFLINE": "1",
               "RATE_LIMIT_PER_MINUTE": "0",
               # normal CPU priority, as the base commit ran its worker: on a machine busy with other
               # work a niced worker (the default) starts and runs several times slower
               "WORKER_NICE": "0"}
        with api_server(env, cwd) as base:
            st = Stack(base, env, cwd)
            key = st.key("bench")
            c = st.client(key=key)
            t0 = time.monotonic()
            with worker(env, cwd, base) as proc:
                ready_s = time.monotonic() - t0
                log = proc.log.read_text(errors="replace")
                parts = {name: float(m.group(1)) for name, rx in (("pipeline load", r"pipeline loaded in ([\d.]+) s"),
                                                                   ("warm-up", r"pipeline warmed in ([\d.]+) s"))
                         if (m := re.search(rx, log))}
                print(f"worker start -> ready: {ready_s:.1f} s ("
                      + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items()) + ")", flush=True)
                if m := re.search(r"pipeline warmed in .*", log):
                    print(f"  {m.group(0)}", flush=True)
                r = c.post("/api/photos", files={"file": ("nobody.jpg", nobody_jpeg(), "image/jpeg")})
                photo_url = r.json()["photo_url"]
                docs = []
                for n in range(args.jobs):
                    job_id = create(c, f"q{n}", photo_url).json()["job_id"]
                    while (doc := c.get(f"/api/avatar/status/{job_id}").json())["status"] not in FINAL:
                        time.sleep(0.02)
                    docs.append(doc)
                    time.sleep(0.3)  # the worker idle again, as a job arriving now and then finds it
                # the worker's log says when arq queued each delivery and how long until it was handed over
                log = proc.log.read_text(errors="replace")
                queued = {m.group(1): (datetime.fromisoformat(m.group(2)), float(m.group(3))) for m in re.finditer(
                    r"job ([0-9a-f]{32}): queued at (\S+), delivery taken ([\d.]+) ms later", log)}
                ms = lambda a, b: (datetime.fromisoformat(a) - b).total_seconds() * 1000.0  # noqa: E731
                rows = {"created -> worker start (what a client sees)":
                        [ms(d["started_at"], datetime.fromisoformat(d["created_at"])) for d in docs],
                        "enqueue -> delivery taken (arq)": [queued[d["job_id"]][1] for d in docs if d["job_id"] in queued],
                        "enqueue -> worker start (processing)":
                        [ms(d["started_at"], queued[d["job_id"]][0]) for d in docs if d["job_id"] in queued]}
                for name, values in rows.items():
                    if values:
                        print(f"{name} ({len(values)} jobs, ms): p50 {statistics.median(values):.1f}  "
                              f"p95 {pct(values, 0.95):.1f}  max {max(values):.1f}", flush=True)
                for follow in args.bench_follow.split(",") if args.bench_runs else ():
                    run = subprocess.run(avatar_cmd("bench", "--via-api", base, "--key", key, "--runs",
                                                    str(args.bench_runs), "--concurrency", "1", "--follow", follow),
                                         cwd=cwd, capture_output=True, text=True, env={**__import__("os").environ, **env})
                    print(run.stdout, run.stderr[-2000:] if run.returncode else "", flush=True)
                    done = re.findall(r"completed in ([\d.]+) s", proc.log.read_text(errors="replace"))
                    print("bench jobs in order, pipeline s (the first one after the warm-up first): "
                          + ", ".join(done), flush=True)


if __name__ == "__main__":
    main()

"""Measure how long a job waits after its worker is SIGKILLed mid-job, with the default settings
(HEARTBEAT_SECONDS=10, HEARTBEAT_MISSED_BEATS=3, REAPER_INTERVAL_SECONDS=5): `avatar serve` and
`avatar worker` as processes over a real Redis, SQLite and a local storage folder.

    .venv/bin/python scripts/measure_recovery.py [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from servers import redis_server  # noqa: E402
from service_procs import api_server, worker  # noqa: E402
from stack import Stack, create, follow, upload, wait_status  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    import importlib.util

    photo = Path(importlib.util.find_spec("ultralytics").origin).parent / "assets" / "bus.jpg"
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as redis_url:
        cwd = Path(tmp)
        env = {"DATABASE_URL": f"sqlite:///{cwd}/avatar.db", "STORAGE_URL": f"file://{cwd}/storage",
               "REDIS_URL": redis_url, "PYOPENGL_PLATFORM": "osmesa", "YOLO_OFFLINE": "1"}
        with api_server(env, cwd) as base:
            st = Stack(base, env, cwd)
            c = st.client(key=st.key("bench", "--admin"))
            for run in range(args.runs):
                with worker(env, cwd, base) as a, worker(env, cwd, base, count=2) as b:  # both idle, ready
                    job_id = create(c, f"u{run}", upload(c, photo)["photo_url"]).json()["job_id"]
                    wait_status(c, job_id, {"processing"}, timeout=300)
                    while not (holder := [w["name"] for w in c.get("/admin/queue").json()["workers"]
                                          if w["current_job"] == job_id]):
                        time.sleep(0.2)  # its heartbeat names the job within HEARTBEAT_SECONDS
                    holder = holder[0]
                    victim = a if f":{a.pid}:" in holder else b  # worker names are host:pid:token
                    os.killpg(victim.pid, signal.SIGKILL)
                    killed = time.monotonic()
                    victim.wait()
                    wait_status(c, job_id, {"queued"}, timeout=300)
                    requeued = time.monotonic() - killed
                    wait_status(c, job_id, {"processing"}, timeout=300)
                    taken = time.monotonic() - killed
                    done = follow(c, job_id, timeout=600)[-1]
                    finished = time.monotonic() - killed
                print(f"run {run + 1}: queued again after {requeued:.1f} s, taken by the other worker after "
                      f"{taken:.1f} s, {done['status']} after {finished:.1f} s", flush=True)


if __name__ == "__main__":
    main()

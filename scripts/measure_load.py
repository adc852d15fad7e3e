"""The README's load figures: `avatar serve` + one busy CPU worker over a real Redis, PostgreSQL and
SeaweedFS, and locust (scripts/locustfile.py) headless on loopback for --seconds.

    .venv/bin/python scripts/measure_load.py [--users 20] [--seconds 60]
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from servers import postgres_server, redis_server, s3_server  # noqa: E402
from service_procs import worker  # noqa: E402
from stack import api_stack, service_env  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    from inference.weights import default_weights_dir

    photo = Path(importlib.util.find_spec("ultralytics").origin).parent / "assets" / "bus.jpg"
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        with redis_server(cwd) as redis_url, s3_server(cwd, "load-key", "load-secret-0123456789") as s3, \
                postgres_server(cwd) as pg:
            # the worker at its default priority, as deployed (the tests run it at normal priority)
            env = service_env(pg, s3, redis_url, default_weights_dir(), RATE_LIMIT_PER_MINUTE="0", WORKER_NICE="10")
            with api_stack(env, cwd, load=("load",)) as st, worker(env, cwd, st.base):
                run = subprocess.run(
                    [sys.executable, "-m", "locust", "-f", str(Path(__file__).with_name("locustfile.py")),
                     "--headless", "-u", str(args.users), "-r", "10", "-t", f"{args.seconds}s", "--host", st.base,
                     "--csv", str(cwd / "load"), "--only-summary"],
                    env={**os.environ, "LOAD_API_KEY": st.keys["load"], "LOAD_PHOTO": str(photo)},
                    capture_output=True, text=True)
                print(run.stderr[-1500:] if run.returncode not in (0, 1) else "", end="")
                for row in csv.DictReader((cwd / "load_stats.csv").open()):
                    print(f"{row['Name']:<32} {int(row['Request Count']):>6} req  {float(row['Requests/s']):7.1f} req/s  "
                          f"p50 {row['50%']:>5} ms  p99 {row['99%']:>5} ms  failures {row['Failure Count']}")
                for row in csv.DictReader((cwd / "load_failures.csv").open()):
                    print(f"failure: {row['Method']} {row['Name']}: {row['Error']} x{row['Occurrences']}")


if __name__ == "__main__":
    main()

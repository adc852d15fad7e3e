"""``avatar bench --via-api``: a job's time split into the parts the service adds."""
from __future__ import annotations

import subprocess
import sys

from service.bench_api import PARTS, split


def status_doc() -> dict:
    """A completed job's status document, as GET /api/avatar/status returns it."""
    return {
        "status": "completed", "created_at": "2026-12-02T13:00:00.000000",
        "started_at": "2026-12-02T13:00:00.400000", "completed_at": "2026-12-02T13:00:09.000000",
        "timings": {"stages_ms": {"fit": 6000.0}, "total_ms": 8000.0, "wall_ms": 8500.0},
    }


def test_a_jobs_time_splits_into_queue_pipeline_storage_bookkeeping_and_client():
    parts = split(status_doc(), end_to_end_ms=9200.0)
    assert set(parts) == set(PARTS)
    assert parts["queue_wait"] == 400.0  # created → a worker took it
    assert parts["pipeline"] == 8000.0 and parts["fetch_and_storage"] == 500.0
    assert parts["bookkeeping"] == 100.0  # 8.6 s taken, 8.5 s of it in the worker's own clock
    assert parts["client"] == 200.0  # 9.2 s seen by the client, 9.0 s by the server
    assert parts["overhead"] == 1200.0
    assert parts["queue_wait"] + parts["fetch_and_storage"] + parts["bookkeeping"] + parts["client"] \
        == parts["overhead"]


def test_timestamps_with_a_zone_split_the_same():
    doc = status_doc()
    for k in ("created_at", "started_at", "completed_at"):
        doc[k] += "+00:00"
    assert split(doc, 9200.0) == split(status_doc(), 9200.0)


def test_via_api_without_a_key_names_the_fix():
    r = subprocess.run([sys.executable, "-m", "service.cli", "bench", "--via-api", "http://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "avatar keys create" in r.stderr

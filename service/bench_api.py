"""``avatar bench --via-api URL --key KEY``: what the service adds to the bare pipeline.

Each job is timed the way a client sees it, from ``POST /api/avatar/create`` to the status that
says ``completed``, and split with the job's own timestamps and timings: queue wait (created →
a worker took it), the pipeline (its stages), fetch + storage (photo in, artefacts out), the
database moves around them, and the client's share (the create request, and how late the client
learns the end: a client following the job's server-sent events, the default, hears it when the
worker records it; a polling client, ``follow="poll"``, at its next poll).
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import httpx

from inference.bench import find_photos, photo_info, summarise

FINAL = ("completed", "failed", "cancelled")
PARTS = ("end_to_end", "pipeline", "overhead", "queue_wait", "fetch_and_storage", "bookkeeping", "client")


@dataclass
class ApiBenchConfig:
    url: str
    key: str
    photos: list[Path] = field(default_factory=list)
    runs: int = 20
    concurrency: list[int] = field(default_factory=lambda: [1])
    height_cm: float = 180.0
    weight_kg: float | None = 75.0
    gender: str = "male"
    follow: str = "events"  # "events": GET /api/avatar/events/{id} (pushed); "poll": GET .../status/{id}
    poll_s: float = 0.05
    # once the job says it is uploading its artefacts (the last ~100 ms), the client polls this
    # often: the bench measures the service, not the lag of a 50 ms poll (25 ms on average)
    final_poll_s: float = 0.005
    timeout_s: float = 900.0


def _ms(later: str, earlier: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds() * 1000.0


def split(doc: dict, end_to_end_ms: float) -> dict[str, float]:
    """One completed job's time (ms) in parts; ``overhead`` is everything but the pipeline."""
    pipeline = float(doc["timings"]["total_ms"])
    worker_wall = float(doc["timings"].get("wall_ms", pipeline))  # fetch + pipeline + upload
    taken = _ms(doc["completed_at"], doc["started_at"])
    server = _ms(doc["completed_at"], doc["created_at"])
    parts = {
        "end_to_end": end_to_end_ms, "pipeline": pipeline, "overhead": end_to_end_ms - pipeline,
        "queue_wait": _ms(doc["started_at"], doc["created_at"]),
        "fetch_and_storage": worker_wall - pipeline, "bookkeeping": taken - worker_wall,
        "client": end_to_end_ms - server,
    }
    return {k: round(v, 1) for k, v in parts.items()}


class _Client:
    def __init__(self, cfg: ApiBenchConfig) -> None:
        self.cfg = cfg
        self.http = httpx.Client(base_url=cfg.url.rstrip("/"), timeout=60,
                                 headers={"Authorization": f"Bearer {cfg.key}"})

    def upload(self, photo: Path) -> tuple[str, float]:
        t0 = time.perf_counter()
        r = self.http.post("/api/photos", files={"file": (photo.name, photo.read_bytes())})
        r.raise_for_status()
        return r.json()["photo_url"], (time.perf_counter() - t0) * 1000.0

    def job(self, photo_url: str, n: int) -> tuple[dict, float]:
        """Create one job and follow it to its end; (last status document, client ms)."""
        body = {"user_id": f"bench-{n}", "photo_url": photo_url, "height": self.cfg.height_cm,
                "weight": self.cfg.weight_kg, "gender": self.cfg.gender}
        t0 = time.perf_counter()
        r = self.http.post("/api/avatar/create", json=body)
        r.raise_for_status()
        job_id = r.json()["job_id"]
        if self.cfg.follow == "events":
            return self._events(job_id), (time.perf_counter() - t0) * 1000.0
        while time.perf_counter() - t0 < self.cfg.timeout_s:
            doc = self.http.get(f"/api/avatar/status/{job_id}").json()
            if doc["status"] in FINAL:
                return doc, (time.perf_counter() - t0) * 1000.0
            time.sleep(self.cfg.final_poll_s if doc.get("stage") == "upload" else self.cfg.poll_s)
        raise TimeoutError(f"job {job_id} not final after {self.cfg.timeout_s:.0f} s")

    def _events(self, job_id: str) -> dict:
        """The job's status documents as the service pushes them, until a final one."""
        with self.http.stream("GET", f"/api/avatar/events/{job_id}", timeout=self.cfg.timeout_s) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if line.startswith("data:") and (doc := json.loads(line[5:]))["status"] in FINAL:
                    return doc
        raise TimeoutError(f"job {job_id}: its event stream ended before a final status")


def run_api_bench(cfg: ApiBenchConfig, log: Callable[[str], None] = lambda m: None) -> dict:
    photos = find_photos(cfg.photos)
    client = _Client(cfg)
    uploads = [client.upload(p) for p in photos]
    report: dict = {"url": cfg.url, "photos": photo_info(photos), "follow": cfg.follow, "poll_ms": cfg.poll_s * 1000,
                    "final_poll_ms": cfg.final_poll_s * 1000,
                    "upload_ms": summarise([ms for _, ms in uploads]), "concurrency": []}
    for c in cfg.concurrency:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(c) as pool:
            done = list(pool.map(lambda n: client.job(uploads[n % len(uploads)][0], n), range(cfg.runs)))
        wall_s = time.perf_counter() - t0
        ok = [split(doc, ms) for doc, ms in done if doc["status"] == "completed"]
        row = {"concurrency": c, "jobs": len(done), "completed": len(ok),
               "avatars_per_s": round(len(ok) / wall_s, 3),
               "failed": [d.get("error") for d, _ in done if d["status"] != "completed"]}
        row.update({part: summarise([j[part] for j in ok]) for part in PARTS} if ok else {})
        report["concurrency"].append(row)
        log(f"concurrency {c}: {len(ok)}/{len(done)} completed, {row['avatars_per_s']} avatars/s")
    return report


def format_api_report(r: dict) -> str:
    followed = ("status followed by its server-sent events" if r.get("follow") == "events" else
                f"status polled every {r['poll_ms']:.0f} ms ({r.get('final_poll_ms', r['poll_ms']):.0f} ms while "
                "the artefacts upload)")
    lines = [f"{r['url']} · photos: " + ", ".join(f"{p['name']} {p['width']}x{p['height']}" for p in r["photos"])
             + f" · upload p50 {r['upload_ms']['p50']:.0f} ms · {followed}"]
    for row in r["concurrency"]:
        lines.append(f"\nconcurrency {row['concurrency']}: {row['completed']}/{row['jobs']} completed, "
                     f"{row['avatars_per_s']:.3f} avatars/s")
        if not row["completed"]:
            continue
        lines.append(f"{'part (ms)':<18} {'p50':>8} {'p95':>8} {'max':>8}")
        for part in PARTS:
            s = row[part]
            lines.append(f"{part:<18} {s['p50']:>8.0f} {s['p95']:>8.0f} {s['max']:>8.0f}")
    return "\n".join(lines)

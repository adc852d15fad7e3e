"""Load on the API as studios make it: each simulated client uploads a photo once, then creates
avatar jobs, polls their status and reads the passport. Any answer but the expected one counts
as a failure (a 5xx, a 429, a 404 for a job it created).

    LOAD_API_KEY=avk_... LOAD_PHOTO=path/to/photo.jpg \\
      locust -f scripts/locustfile.py --headless -u 20 -r 10 -t 60s --host http://127.0.0.1:8000
"""
from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

from locust import HttpUser, between, task


class Studio(HttpUser):
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.client.headers["Authorization"] = f"Bearer {os.environ['LOAD_API_KEY']}"
        photo = Path(os.environ["LOAD_PHOTO"]).read_bytes()
        r = self.client.post("/api/photos", files={"file": ("photo.jpg", photo, "image/jpeg")})
        self.photo_url = r.json()["photo_url"]
        self.user_id = f"load-{uuid.uuid4().hex[:10]}"
        self.jobs: list[str] = []

    @task(1)
    def create(self) -> None:
        body = {"user_id": self.user_id, "photo_url": self.photo_url, "height": 178, "weight": 80, "gender": "male"}
        with self.client.post("/api/avatar/create", json=body, catch_response=True) as r:
            if r.status_code == 202:
                self.jobs.append(r.json()["job_id"])
            else:
                r.failure(f"create answered {r.status_code}")

    @task(6)
    def status(self) -> None:
        if self.jobs:
            self.client.get(f"/api/avatar/status/{random.choice(self.jobs)}", name="/api/avatar/status/[job_id]")

    @task(2)
    def passport(self) -> None:
        if self.jobs:
            self.client.get(f"/api/avatar/{self.user_id}", name="/api/avatar/[user_id]")

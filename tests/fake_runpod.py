"""A stand-in for RunPod's cloud that speaks its serverless protocol (``/v2/{endpoint}/run``,
``/status/{id}``, ``/cancel/{id}``) for the answers our own /v2 never gives: refused keys,
unknown endpoints, rate limits, FAILED and TIMED_OUT jobs, jobs that never end. Each job's
``input.user_id`` picks its script; every request is recorded."""
from __future__ import annotations

import base64
import contextlib
import http.server
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

ENDPOINT = "fake-endpoint"
FILES = {"avatar_textured.glb": b"glTF-fake", "measurements.json": b'{"height": 170.0}'}
OUTPUT = {"files_base64": {n: base64.b64encode(b).decode() for n, b in FILES.items()},
          "measurements": {"height": 170.0}, "timings": {"total_ms": 5.0}, "body_model": "anny"}
# the handler's fit (Result.fit), and one a broken worker might send (NaN is what Python's json writes)
FIT = {"body_model": "anny", "shape": {"height": 0.4}, "scale": 1.002, "mass_kg": 76.43, "volume_l": 77.6,
       "keypoint_error_rel": 0.02, "cloth_predicted_cm": [0.71, 1.3], "clothing_read": "fitted",
       "typed_weight_kg": 80.0, "clothing": "regular", "weight_source": "reported"}
BAD_FIT = {"body_model": "anny", "mass_kg": float("nan"), "clothing_read": "baggy", "cloth_predicted_cm": [1.0, float("inf")]}


@dataclass
class FakeRunpod:
    base: str = ""
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, authorization)
    jobs: dict[str, str] = field(default_factory=dict)  # runpod id → user_id (the script)
    seen: Counter = field(default_factory=Counter)  # (action, user or runpod id) → times asked
    inputs: dict[str, dict] = field(default_factory=dict)  # user → the input of its last /run
    lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self, method: str, path_part: str) -> int:
        with self.lock:
            return sum(1 for m, p, _ in self.requests if m == method and path_part in p)

    def answer(self, method: str, path: str, body: dict) -> tuple[int, dict]:
        """What RunPod would answer, by the job's script."""
        parts = path.strip("/").split("/")  # v2, endpoint, action[, id]
        if len(parts) < 3 or parts[1] != ENDPOINT:
            return 404, {"error": "endpoint not found"}
        action, rp_id = parts[2], (parts[3] if len(parts) > 3 else "")
        user = body.get("input", {}).get("user_id", "") if action == "run" else ""
        with self.lock:
            self.seen[(action, user or rp_id)] += 1
            asked = self.seen[(action, user or rp_id)]
            if action == "run":
                self.inputs[user] = body.get("input", {})
        if action == "run":
            if user == "u-401":
                return 401, {"error": "Unauthorized"}
            if user == "u-404":
                return 404, {"error": "not found"}
            if user == "u-429" and asked <= 2:  # twice refused, then taken
                return 429, {"error": "Too many requests"}
            with self.lock:
                rp_id = f"rp-{len(self.jobs)}-{user}"
                self.jobs[rp_id] = user
            return 200, {"id": rp_id, "status": "IN_QUEUE"}
        script = self.jobs.get(rp_id)
        if script is None:
            return 404, {"error": "job not found"}
        if action == "cancel":
            return 200, {"id": rp_id, "status": "CANCELLED"}
        if action != "status":
            return 404, {"error": "unknown route"}
        doc = {"id": rp_id, "delayTime": 10, "executionTime": 20}
        if script == "u-429" and asked <= 1:  # the status too: once busy
            return 503, {"error": "busy"}
        return 200, {**doc, **{
            "u-429": {"status": "COMPLETED", "output": OUTPUT},
            "u-fit": {"status": "COMPLETED", "output": {**OUTPUT, "fit": FIT}},
            "u-badfit": {"status": "COMPLETED", "output": {**OUTPUT, "fit": BAD_FIT}},
            "u-failed": {"status": "FAILED", "error": "no_person: no person found in the photo"},
            "u-timedout": {"status": "TIMED_OUT", "error": "executionTimeout exceeded"},
            "u-forever": {"status": "IN_PROGRESS", "output": {"progress": 50, "stage": "fit", "message": "fitting"}},
        }.get(script, {"status": "IN_QUEUE"})}


@contextlib.contextmanager
def fake_runpod() -> Iterator[FakeRunpod]:
    fake = FakeRunpod()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            with fake.lock:
                fake.requests.append((method, self.path, self.headers.get("Authorization", "")))
            status, doc = fake.answer(method, self.path, body)
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            self._serve("GET")

        def do_POST(self):  # noqa: N802
            self._serve("POST")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.base = f"http://127.0.0.1:{server.server_address[1]}/v2"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()

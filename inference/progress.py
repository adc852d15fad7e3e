"""A progress line per stage for ``avatar create``: a run is silent for ~20 s otherwise.

On a terminal one line is rewritten in place while the stage runs (its elapsed time ticking);
elsewhere (logs, pipes) each stage prints one line when it ends. Always on stderr, so ``--json``
output on stdout stays one clean document.
"""
from __future__ import annotations

import threading
import time
from typing import TextIO

from inference.pipeline import StageEvent


class StageProgress:
    """An ``on_stage`` callback for :meth:`inference.pipeline.Pipeline.run`; call :meth:`close`
    when the run ends, however it ends."""

    def __init__(self, stream: TextIO, live: bool | None = None, tick_s: float = 0.2) -> None:
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.tick_s = tick_s
        self._label = ""
        self._t0 = 0.0
        self._lock = threading.RLock()  # a tick never draws over a stage's end line
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, event: StageEvent) -> None:
        label = f"[{event.index}/{event.total}] {event.stage}"
        if event.status == "start":
            with self._lock:
                self._label, self._t0 = label, time.perf_counter()
            if self.live:
                self._draw(f"{label} …")
                self._start_ticker()
            return
        ms = event.elapsed_ms if event.elapsed_ms is not None else (time.perf_counter() - self._t0) * 1000
        with self._lock:
            self._label = ""
            if self.live:
                self._draw(f"{label} {_duration(ms)}", end="\n" if event.index == event.total else "")
            else:
                self._write(f"{label} {_duration(ms)}\n")

    def close(self) -> None:
        """Stop the ticker; end a live line that is still open."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        with self._lock:
            unfinished = self.live and self._label
            self._label = ""
        if unfinished:
            self._write("\n")

    def _start_ticker(self) -> None:
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="avatar-progress", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.tick_s):
            with self._lock:
                if self._label:
                    self._draw(f"{self._label} {_duration((time.perf_counter() - self._t0) * 1000)} …")

    def _draw(self, text: str, end: str = "") -> None:
        self._write(f"\r\033[K{text}{end}")

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text)
            self.stream.flush()


def _duration(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"

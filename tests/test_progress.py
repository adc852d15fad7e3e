"""`avatar create`'s progress line: one line per stage in logs, a live line on a terminal."""
from __future__ import annotations

import io
import time

from inference.pipeline import STAGES, StageEvent
from inference.progress import StageProgress


def run_stages(progress: StageProgress, pause_s: float = 0.0, stop_after: int | None = None) -> None:
    n = len(STAGES)
    for i, stage in enumerate(STAGES, start=1):
        progress(StageEvent(stage, "start", i, n))
        time.sleep(pause_s)
        if stop_after == i:
            return  # the stage raised
        progress(StageEvent(stage, "end", i, n, elapsed_ms=1500.0 if stage == "fit" else 12.0))


def test_in_a_log_each_stage_ends_with_one_line():
    out = io.StringIO()
    p = StageProgress(out, live=False)
    run_stages(p)
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/7] load 12 ms" and lines[3] == "[4/7] fit 1.5 s" and len(lines) == 7
    assert "\r" not in out.getvalue()


def test_on_a_terminal_the_line_ticks_while_a_stage_runs():
    out = io.StringIO()
    p = StageProgress(out, live=True, tick_s=0.01)
    run_stages(p, pause_s=0.05)
    p.close()
    text = out.getvalue()
    assert text.endswith("[7/7] render 12 ms\n") and text.count("\n") == 1
    ticks = [seg for seg in text.split("\r\033[K") if seg.startswith("[4/7] fit") and seg.endswith(" ms …")]
    assert ticks, "no elapsed time shown while fit ran"


def test_a_failed_run_leaves_the_terminal_on_a_fresh_line():
    out = io.StringIO()
    p = StageProgress(out, live=True, tick_s=0.01)
    run_stages(p, pause_s=0.03, stop_after=3)
    p.close()
    text = out.getvalue()
    assert text.endswith("\n") and "[3/7] segment" in text.rsplit("\r\033[K", 1)[-1]
    assert p._ticker is None  # stopped

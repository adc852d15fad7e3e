"""``avatar bench``: its figures are what scripts read, so their shape and arithmetic are specified."""
from __future__ import annotations

import json

import pytest

from inference import bench
from inference.errors import InputError
from inference.pipeline import BESIDE_EXPORT, STAGES


def test_summary_is_p50_p95_max():
    s = bench.summarise([float(x) for x in range(101)][::-1])
    assert s == {"p50": 50.0, "p95": 95.0, "max": 100.0, "n": 101}
    assert bench.summarise([7.0, 3.0]) == {"p50": 5.0, "p95": 6.8, "max": 7.0, "n": 2}


@pytest.mark.parametrize("text, sizes", [("1", [1]), ("1,4,16", [1, 4, 16]), ("4, 1,4", [4, 1])])
def test_batch_sizes_parse(text, sizes):
    assert bench.parse_batches(text) == sizes


@pytest.mark.parametrize("text", ["", "0", "1,x", "-2"])
def test_bad_batch_sizes_are_refused(text):
    with pytest.raises(InputError):
        bench.parse_batches(text)


def test_photos_default_to_the_sample_and_folders_expand(tmp_path, bus_jpg, zidane_jpg):
    assert bench.find_photos([]) == [bus_jpg]
    (tmp_path / "b.jpg").write_bytes(bus_jpg.read_bytes())
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a photo")
    assert bench.find_photos([tmp_path, zidane_jpg]) == [tmp_path / "a.png", tmp_path / "b.jpg", zidane_jpg]
    with pytest.raises(InputError):
        bench.find_photos([tmp_path / "missing.jpg"])


@pytest.mark.slow
def test_one_cold_run_reports_every_stage(pipeline, bus_jpg):
    report = bench.run_bench(bench.BenchConfig(photos=[bus_jpg], runs=0, warmup=0), pipeline=pipeline)
    json.dumps(report)  # all of it goes to --json
    assert set(report["cold"]["stages_ms"]) == set(STAGES)
    in_turn = [ms for stage, ms in report["cold"]["stages_ms"].items() if stage not in BESIDE_EXPORT]
    assert report["cold"]["total_ms"] >= sum(in_turn) * 0.99  # measure, render: beside the export
    assert report["cold"]["wall_ms"] >= report["cold"]["total_ms"]
    assert report["photos"] == [{"name": "bus.jpg", "width": 810, "height": 1080,
                                 "bytes": bus_jpg.stat().st_size}]
    assert report["machine"]["device"] == "cpu" and report["body_model"] == "anny"
    assert report["memory"]["peak_rss_mb"] > 100
    assert report["throughput"] == []
    # bus.jpg's silhouette gives the fit too few trusted width bands for its stage C: said so
    assert list(report["shape_solve"]) == ["bus.jpg"] and report["shape_solve"]["bus.jpg"]["ran"] is False
    text = bench.format_report(report)
    assert "bus.jpg 810x1080" in text and "fit" in text
    assert "stage C (the shape solved on the silhouette's widths) skipped on bus.jpg" in text
    assert "fit, p50 ms" not in text  # no warm runs: no parts to report


@pytest.mark.slow
def test_the_warm_report_splits_the_fit(pipeline, bus_jpg):
    """The fit is most of a run: the warm runs' p50 of each of its parts (FitParts), in the JSON
    and as one line of the table."""
    report = bench.run_bench(bench.BenchConfig(photos=[bus_jpg], runs=1, warmup=0), pipeline=pipeline)
    parts = report["warm"]["fit_parts_ms"]
    assert list(parts) == ["setup", "stage_a", "stage_b", "widths_and_prior", "stage_c", "final"]
    assert parts["stage_b"]["p50"] > 0 and parts["stage_b"]["n"] == 1
    assert sum(v["p50"] for v in parts.values()) <= report["warm"]["stages_ms"]["fit"]["p50"] + 1.0
    assert "fit, p50 ms: setup " in bench.format_report(report)


def test_gpu_check_runs_and_logs_each_step_even_without_a_gpu(tmp_path):
    """``scripts/gpu_check`` (the CUDA path in one go, for a GPU machine's short lease): with no
    steps asked for it still says what the machine is, times the step and ends; its log is what
    comes back from the machine."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    r = subprocess.run([str(root / "scripts" / "gpu_check"), str(out)], capture_output=True, text=True,
                       env={**os.environ, "STEPS": "", "PYTHON": sys.executable}, timeout=120)
    assert r.returncode == 0, r.stderr
    log = (out / "gpu_check.log").read_text()
    assert "== machine (limit 60 s)" in log and "== machine: exit 0" in log and log.rstrip().endswith("== done")
    assert "python 3." in log and "== bench" not in log  # only what was asked for

"""The CUDA path, on a machine with an NVIDIA GPU (skipped where torch sees none, as in CI):
the device chosen by ``auto``, the fit on the GPU against the same fit on the CPU, a batch on
the GPU, EGL rendering on the GPU from any thread, GPU memory in the bench's figures.
``scripts/gpu_check`` runs this file with EGL as the GL platform, beside ``avatar bench``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")]

GIRTHS = ("chest", "waist", "hip", "neck", "thigh")


@pytest.fixture(scope="module")
def cuda_pipeline(weights_dir):
    from inference.pipeline import Pipeline, PipelineConfig

    pipe = Pipeline(PipelineConfig(device="auto", body_model="anny", weights_dir=weights_dir))
    yield pipe
    pipe.close()


def _jobs(tmp_path, photos, tag):
    from inference.pipeline import Job
    from inference.types import Subject

    subjects = [Subject(180, "male", 75), Subject(165, "female", 62)]
    return [Job(p, subjects[i % 2], tmp_path / f"{tag}-{i}") for i, p in enumerate(photos)]


def test_auto_chooses_the_gpu_and_every_model_sits_on_it(cuda_pipeline):
    assert cuda_pipeline.device == "cuda:0"
    body = cuda_pipeline.body_for("male")
    assert body.device.type == "cuda"
    v = body.posed(torch.full((1, len(body.shape_names)), 0.5, device=body.device)).vertices
    assert v.device.type == "cuda" and torch.isfinite(v).all()


def test_the_fit_on_the_gpu_agrees_with_the_fit_on_the_cpu(cuda_pipeline, pipeline, bus_jpg, tmp_path):
    """Same photo, same inputs: float32 on two devices sums in another order, so the two fits
    may part by round-off, but not by what a tape measure would see."""
    (gpu,) = cuda_pipeline.run_batch(_jobs(tmp_path, [bus_jpg], "gpu"))
    (cpu,) = pipeline.run_batch(_jobs(tmp_path, [bus_jpg], "cpu"))
    assert gpu.measurements["height"] == pytest.approx(180.0, abs=0.2)
    for name in GIRTHS:
        assert gpu.measurements[name] == pytest.approx(cpu.measurements[name], abs=1.0), name
    assert gpu.fit["mass_kg"] == pytest.approx(cpu.fit["mass_kg"], abs=1.0)
    import json

    timings = json.loads((gpu.out_dir / "timings.json").read_text())
    assert timings["device"] == "cuda:0"


def test_a_batch_on_the_gpu_gives_each_photo_its_own_fit(cuda_pipeline, bus_jpg, tmp_path):
    photos = [bus_jpg] * 4  # the subjects alternate: 180 cm male, 165 cm female
    batch = cuda_pipeline.run_batch(_jobs(tmp_path, photos, "batch"))
    alone = [cuda_pipeline.run(j) for j in _jobs(tmp_path, photos[:2], "alone")]
    assert [r.timings_ms["fit"] > 0 for r in batch] == [True] * 4
    assert batch[0].measurements["height"] == pytest.approx(180.0, abs=0.2)
    assert batch[1].measurements["height"] == pytest.approx(165.0, abs=0.2)
    for b, a in zip(batch[:2], alone):
        for name in GIRTHS:
            assert b.measurements[name] == pytest.approx(a.measurements[name], abs=1.0), name
    # the same photo with other inputs is another body, not a copy of its neighbour's fit
    assert batch[0].fit["mass_kg"] != pytest.approx(batch[1].fit["mass_kg"], abs=1.0)
    for r in batch:
        assert (r.out_dir / "overlay.png").is_file() and (r.out_dir / "preview.png").is_file()


def test_the_renderer_renders_on_the_gpu_with_egl_from_any_thread():
    """EGL, not the OSMesa fallback, when a GPU is here; and calls from two fresh threads in turn
    (a worker's to_thread pool) both reach the one GL thread, which holds the context."""
    from concurrent.futures import ThreadPoolExecutor

    from inference.stages import render as R

    renderer = R.Renderer("cuda:0")
    try:
        assert renderer.platform == "egl"
        v = np.array([[-0.3, -0.9, 0.0], [0.3, -0.9, 0.0], [0.0, 0.9, 0.1], [0.0, 0.0, 0.3]])
        f = np.array([[0, 1, 2], [0, 3, 1], [1, 3, 2], [2, 3, 0]])
        cam = R.look_at_camera(v, "front", 128)
        images = []
        for name in ("job-1", "job-2"):
            with ThreadPoolExecutor(1, thread_name_prefix=name) as pool:
                images.append(pool.submit(lambda: renderer.render_mesh(v, f, cam)[0]).result())
        assert images[0].any() and np.array_equal(images[0], images[1])
    finally:
        renderer.close()


def test_the_bench_reports_the_gpu_and_its_memory(cuda_pipeline):
    from inference.bench import machine_info

    info = machine_info(cuda_pipeline.device)
    assert info["device"] == "cuda:0"
    assert info["gpu"] and info["gpu_memory_gb"] > 1 and info["cuda"]

"""GPU indices: a pinned worker's cuda:0 is the machine's GPU N, and EGL must be told N."""
from __future__ import annotations

import pytest

from inference.gpu import cuda_index, device_in_pinned_process, machine_gpu_index


@pytest.mark.parametrize("device, index", [("cuda:3", 3), ("cuda", 0), ("cuda:0", 0), ("cpu", None),
                                           ("auto", None), ("cuda:x", None)])
def test_cuda_index(device, index):
    assert cuda_index(device) == index


@pytest.mark.parametrize("device, gpu, inside", [
    ("cuda:1", "1", "cuda:0"),  # WORKER_DEVICE=cuda:1 with --gpu 1: the one GPU it sees
    ("cuda:0", "1", "cuda:0"),  # already the in-process name
    ("cuda", "3", "cuda"), ("auto", "2", "auto"), ("cpu", "0", "cpu"),
])
def test_device_inside_a_pinned_process(device, gpu, inside):
    assert device_in_pinned_process(device, gpu) == inside


def test_another_gpu_than_the_pinned_one_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="--gpu 1.*cuda:0"):
        device_in_pinned_process("cuda:2", "1")


@pytest.mark.parametrize("device, visible, index", [
    ("cuda:0", "1", 1),  # --gpu 1 on a 2-GPU host: EGL device 1, not 0
    ("cuda:0", None, 0), ("cuda:2", "", 2),  # nothing pinned: the same index
    ("cuda:1", "3,5", 5),
    ("cuda:0", "0", 0),  # a container given only its GPU sees it as 0
    ("cuda:0", "GPU-8a7f3c2e-aaaa", None),  # UUIDs and MIG instances: no index to give EGL
    ("cuda:3", "1,2", None), ("cpu", "1", None),
])
def test_machine_index_for_egl(device, visible, index):
    assert machine_gpu_index(device, visible) == index


def test_worker_pinned_to_one_gpu_refuses_another_before_loading_anything(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "WORKER_DEVICE": "cuda:2", "REDIS_URL": "redis://127.0.0.1:9/0",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "service.cli", "worker", "--gpu", "1"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and "pinned to GPU 1" in r.stderr and "WORKER_DEVICE=cuda:1" in r.stderr


def test_the_arq_worker_maps_the_device_it_is_pinned_to(monkeypatch):
    import gpu_worker

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert gpu_worker._device("cuda:3") == "cuda:0" and gpu_worker._device("auto") == "auto"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # not pinned to one: names stay as they are
    assert gpu_worker._device("cuda:1") == "cuda:1"

"""Which GPU a process means, seen from CUDA (inside the process) and from the machine (EGL).

A worker pinned with ``--gpu N`` sees only that GPU, as ``cuda:0``; EGL does not read
``CUDA_VISIBLE_DEVICES`` and enumerates every GPU the machine (or container) has, so the renderer
must be told the machine's index. Both mappings are pure functions so they can be tested
without a GPU.
"""
from __future__ import annotations

import re

_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def cuda_index(device: str) -> int | None:
    """``"cuda:3"`` → 3, ``"cuda"`` → 0, anything else → None."""
    m = _CUDA.match(device.strip())
    if not m:
        return None
    return int(m.group(1) or 0)


def device_in_pinned_process(device: str, gpu: str) -> str:
    """The torch device to use inside a process pinned to machine GPU ``gpu``
    (``CUDA_VISIBLE_DEVICES=gpu``), given what the settings ask for.

    The pinned GPU is always ``cuda:0`` in there: ``cuda:<gpu>`` (the machine's name for it) and
    ``cuda:0`` both mean it; any other index names a GPU this process cannot see.
    """
    idx = cuda_index(device)
    if idx is None or idx == 0:
        return device  # auto, cpu, cuda, cuda:0
    if str(idx) == str(gpu).strip():
        return "cuda:0"
    raise ValueError(f"WORKER_DEVICE={device} but the worker is pinned to GPU {gpu} (--gpu {gpu}): "
                     f"inside it that GPU is cuda:0; use WORKER_DEVICE=cuda:{gpu} or cuda:0, or --gpu {idx}")


def machine_gpu_index(device: str, cuda_visible_devices: str | None) -> int | None:
    """The machine's index of the GPU ``device`` names in a process with this
    ``CUDA_VISIBLE_DEVICES``; None for a CPU device or a GPU named by UUID or MIG instance
    (no index to give EGL)."""
    idx = cuda_index(device)
    if idx is None:
        return None
    if cuda_visible_devices is None or not cuda_visible_devices.strip():
        return idx
    visible = [v.strip() for v in cuda_visible_devices.split(",") if v.strip()]
    if idx >= len(visible) or not visible[idx].isdigit():
        return None
    return int(visible[idx])

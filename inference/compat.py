"""Make Ultralytics run where torchvision's compiled ops cannot load.

On CPU-only machines the only torchvision wheel that matches the pinned torch is a CUDA build whose
``_C`` extension fails to load; importing torchvision then dies in its meta registrations and
Ultralytics cannot run NMS. :func:`ensure_torchvision_nms` registers a pure-torch
``torchvision::nms`` (and ``qnms``) with ``torch.library`` before torchvision is imported, so the
rest of torchvision imports and ``torchvision.ops.nms`` works. Where the compiled ops load, nothing
is changed.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

_state: dict[str, str] = {}


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes ``a`` (N, 4) and ``b`` (M, 4) in xyxy → (N, M)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-12)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS with torchvision's contract: indices of kept boxes, by decreasing score.

    boxes: (N, 4) xyxy; scores: (N,); returns int64 (K,).
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order].float(), boxes[order].float()).cpu()
    n = order.numel()
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep: list[int] = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.int64, device=order.device)]


def _compiled_ops_load() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    candidates = sorted(Path(next(iter(spec.submodule_search_locations))).glob("_C*.so"))
    if not candidates:
        return False
    try:
        torch.ops.load_library(str(candidates[0]))
        return True
    except (OSError, RuntimeError):
        return False


def ensure_torchvision_nms() -> str:
    """Return ``"native"`` when torchvision's own ops load, else ``"pure-torch"`` after registering
    the fallback. Must run before ``torchvision`` (or ``ultralytics``) is imported; idempotent."""
    if "mode" in _state:
        return _state["mode"]
    if "torchvision" in sys.modules:
        import torchvision.extension as ext

        _state["mode"] = "native" if ext._has_ops() else "unavailable"
        return _state["mode"]
    if importlib.util.find_spec("torchvision") is None or _compiled_ops_load():
        _state["mode"] = "native"
        return _state["mode"]
    lib = torch.library.Library("torchvision", "DEF")  # kept alive in _state below
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    for op in ("nms", "qnms"):
        lib.impl(op, nms, "CompositeExplicitAutograd")
    _state["lib"] = lib  # type: ignore[assignment]
    import torchvision.extension as ext

    ext._has_ops = lambda: True  # nms checks this flag; the op it calls is ours now
    _state["mode"] = "pure-torch"
    return _state["mode"]

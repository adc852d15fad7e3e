"""Where code would make a GPU wait: host syncs and host data copied to the device, by line of
this project's ``inference/`` code. For ``scripts/fit_ab.py fit --syncs`` and the tests that keep
the fit's inner loops free of them.

On CUDA, torch's own sync debug mode says where a sync happened. On a CPU nothing syncs, so the
calls that would are counted instead: reading a value on the host (``item``, ``bool``, ``float``,
``tolist``, ``numpy``, ``nonzero``, boolean-mask indexing, ...) and making data on the host that a
GPU run would copy in (``torch.tensor`` of numbers with a device, ``.to(device)``): a copy from
pageable host memory first waits for everything queued on the stream.
"""
from __future__ import annotations

import collections
import traceback
import warnings
from pathlib import Path

import torch

SYNCING = {"item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__", "nonzero",
           "masked_select", "unique", "argwhere", "__array__", "any", "all"}
COPY = "host data to the device"


def _where(frames) -> str:
    """The innermost line of this project's inference/ code in a stack."""
    for fr in reversed(frames):
        if "/inference/" in fr.filename:
            return f"{fr.filename.split('/inference/')[-1]}:{fr.lineno} {fr.name}"
    return "(outside inference/)"


def count_syncs(fn, device: str = "cpu") -> dict[str, int]:
    """Run ``fn`` and count, by line, where it syncs (CUDA) or would (CPU): → {"file:line name
    [what]": count}; copies of host data are marked with ``COPY``."""
    counts: collections.Counter = collections.Counter()
    if str(device).startswith("cuda"):
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        for w in caught:
            if "synchroniz" in str(w.message):
                counts[f"{Path(w.filename).name}:{w.lineno} [sync]"] += 1
        return dict(counts)
    from torch.overrides import TorchFunctionMode

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            kwargs = kwargs or {}
            copy = (name in ("tensor", "as_tensor", "from_numpy") and kwargs.get("device") is not None
                    and not isinstance(args[0] if args else None, torch.Tensor)) or \
                   (name == "to" and (any(isinstance(a, (str, torch.device)) for a in args[1:])
                                      or kwargs.get("device") is not None))
            bool_index = (name == "__getitem__" and len(args) > 1 and isinstance(args[1], torch.Tensor)
                          and args[1].dtype == torch.bool)
            if copy or name in SYNCING or bool_index:
                stack = traceback.extract_stack()[:-1]
                if copy:
                    counts[f"{_where(stack)} [{name}: {COPY}]"] += 1
                # Adam keeps its step counts on the CPU (not capturable): its item() never syncs
                elif "/torch/optim/" not in stack[-1].filename:
                    counts[f"{_where(stack)} [{name}]"] += 1
            return func(*args, **kwargs)

    with Spy():
        fn()
    return dict(counts)

"""Constant sparse matrices for the fit's hot path on the CPU: CSR conversion (without torch's
"sparse CSR support is in beta" warning), the CSR matrices made from a tensor remembered per
tensor, and a product with a constant matrix that carries its own gradient."""
from __future__ import annotations

import threading
import warnings
from typing import Callable

import torch

_REMEMBERED: dict = {}
_LOCK = threading.Lock()
_LIMIT = 8


def to_csr(matrix: torch.Tensor) -> torch.Tensor:
    """A dense or COO matrix as sparse CSR."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return matrix.to_sparse_csr()


def remembered(owner: torch.Tensor, what: str, dtype: torch.dtype, build: Callable[[], object]):
    """``build()`` (a matrix or matrices made from ``owner``), made once per (``what``, ``owner`` itself,
    ``dtype``) and kept for the last few: the entry holds ``owner``, so its identity is not
    reused while remembered."""
    key = (what, id(owner), dtype)
    hit = _REMEMBERED.get(key)
    if hit is None or hit[0] is not owner:
        hit = (owner, build())
        with _LOCK:
            while len(_REMEMBERED) >= _LIMIT:
                _REMEMBERED.pop(next(iter(_REMEMBERED)))
            _REMEMBERED[key] = hit
    return hit[1]


class SparseProduct(torch.autograd.Function):
    """``matrix @ x`` for a constant sparse CSR ``matrix``, its gradient ``transpose @ grad``
    (a CSR matrix too). Used for the keypoint basis (``torch.sparse.mm``'s backward multiplied
    through a dense (17 bones, V) matrix: ~2.6 ms a stage-B step on CPU) and the skinning weights
    on the CPU."""

    @staticmethod
    def forward(ctx, x, matrix, transpose):
        ctx.transpose = transpose
        return matrix @ x

    @staticmethod
    def backward(ctx, grad):
        return ctx.transpose @ grad.contiguous(), None, None

"""Convert the official SMPL pickles into plain-numpy pickles that ``smplx`` loads.

The files from https://smpl.is.tue.mpg.de were pickled under Python 2 and hold ``chumpy``
objects (an unmaintained package that no longer installs on current Python/numpy) and scipy
sparse matrices from an old scipy. We read them with an unpickler that swaps every chumpy class
(and every scipy.sparse class) for a small stand-in that only records its pickled state, then
turn each value into a plain ``numpy`` array. ``J_regressor`` is written dense (24 × 6890 floats):
smplx densifies it on load anyway and a dense array does not depend on scipy's pickle layout.

Usage: ``python -m inference.bodies.smpl_convert SRC_DIR DST_DIR``.
"""
from __future__ import annotations

import importlib
import os
import pickle
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
OUT_NAMES = {"male": "SMPL_MALE.pkl", "female": "SMPL_FEMALE.pkl", "neutral": "SMPL_NEUTRAL.pkl"}
# official names: basicModel_m_lbs_10_207_0_v1.0.0.pkl, basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl,
# or already-renamed SMPL_MALE.pkl
_PATTERNS = (
    (re.compile(r"^basicmodel_(m|f|neutral)_lbs_.*\.pkl$"), {"m": "male", "f": "female", "neutral": "neutral"}),
    (re.compile(r"^smpl_(male|female|neutral)\.pkl$"), {"male": "male", "female": "female", "neutral": "neutral"}),
)


class _Stub:
    """Stand-in for a class we must not import; keeps the pickled state and constructor args."""

    module = ""
    qualname = ""
    args: tuple = ()  # class defaults: protocol-0 pickles create instances via object.__new__
    state: Any = None

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Stub":
        obj = object.__new__(cls)
        obj.args = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # pickles of dict subclasses
        pass


class _ChumpyStub(_Stub):
    """A chumpy ``Ch`` node; terminal nodes keep their value under ``x`` in the state dict."""


class _SparseStub(_Stub):
    """A scipy.sparse matrix from an old scipy: its state dict has data/indices/indptr/shape."""


def _stub_class(base: type[_Stub], module: str, name: str) -> type[_Stub]:
    return type(name, (base,), {"module": module, "qualname": name})


class _SmplUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return _stub_class(_ChumpyStub, module, name)
        if module.startswith("scipy.sparse") and name.endswith("_matrix"):
            return _stub_class(_SparseStub, module, name)
        if module.startswith("numpy.core"):  # numpy 2 renamed numpy.core → numpy._core
            try:
                importlib.import_module("numpy._core")
                module = "numpy._core" + module[len("numpy.core"):]
            except ImportError:
                pass
        return super().find_class(module, name)


def _state_dict(obj: _Stub) -> dict:
    state = obj.state
    if isinstance(state, tuple):  # (dict state, slot state)
        merged: dict = {}
        for part in state:
            if isinstance(part, dict):
                merged.update(part)
        state = merged
    return state if isinstance(state, dict) else {}


def _first_array(obj: Any, seen: set[int]) -> np.ndarray | None:
    """Depth-first search for the first ndarray inside a stub's state (derived chumpy nodes)."""
    if id(obj) in seen:
        return None
    seen.add(id(obj))
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        return obj
    if isinstance(obj, _Stub):
        state = _state_dict(obj)
        if isinstance(state.get("x"), np.ndarray):
            return state["x"]
        values = list(state.values()) + list(obj.args)
    elif isinstance(obj, dict):
        values = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        values = list(obj)
    else:
        return None
    for v in values:
        found = _first_array(v, seen)
        if found is not None:
            return found
    return None


def _sparse_to_dense(obj: _SparseStub) -> np.ndarray:
    import scipy.sparse as sp

    s = _state_dict(obj)
    shape = tuple(s.get("_shape", s.get("shape")))
    fmt = s.get("format") or type(obj).__name__.split("_")[0]
    if fmt in ("csc", "csr"):
        cls = sp.csc_matrix if fmt == "csc" else sp.csr_matrix
        m = cls((s["data"], s["indices"], s["indptr"]), shape=shape)
    elif fmt == "coo":
        row, col = (s["row"], s["col"]) if "row" in s else s["coords"]
        m = sp.coo_matrix((s["data"], (row, col)), shape=shape)
    else:
        raise ValueError(f"unsupported sparse format {fmt!r} in SMPL pickle")
    return np.asarray(m.todense())


def _to_plain(key: str, value: Any) -> Any:
    """A plain numpy array (or str/number) for one pickled value; None to drop it."""
    if isinstance(value, _SparseStub):
        return _sparse_to_dense(value)
    if isinstance(value, _ChumpyStub):
        arr = _first_array(value, set())
        if arr is None:
            raise ValueError(f"SMPL pickle key {key!r}: chumpy object without an array value")
        return np.array(arr)
    if hasattr(value, "todense"):  # a scipy sparse matrix that unpickled natively
        return np.asarray(value.todense())
    if isinstance(value, (str, bytes, int, float, bool)):
        return value.decode("latin1") if isinstance(value, bytes) else value
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - anything exotic is not needed by smplx
        return None
    return None if arr.dtype == object else arr


def load_smpl_pickle(src: Path) -> dict[str, Any]:
    """Read an official (chumpy) or plain SMPL pickle into a dict of plain numpy values."""
    with open(src, "rb") as fh:
        raw = _SmplUnpickler(fh, encoding="latin1").load()
    if not isinstance(raw, dict):
        raise ValueError(f"{src}: not an SMPL model pickle (got {type(raw).__name__})")
    out = {}
    for key, value in raw.items():
        plain = _to_plain(str(key), value)
        if plain is not None:
            out[str(key)] = plain
    missing = [k for k in REQUIRED_KEYS if k not in out]
    if missing:
        raise ValueError(f"{src}: not an SMPL model pickle (missing {', '.join(missing)})")
    v = out["v_template"]
    if v.ndim != 2 or v.shape[1] != 3 or out["J_regressor"].shape[1] != v.shape[0]:
        raise ValueError(f"{src}: inconsistent SMPL arrays (v_template {v.shape}, "
                         f"J_regressor {out['J_regressor'].shape})")
    return out


def convert_smpl_pickle(src: Path, dst: Path) -> None:
    """Convert one SMPL pickle to a chumpy-free one at ``dst`` (written atomically)."""
    data = load_smpl_pickle(Path(src))
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def find_smpl_files(src_dir: Path) -> dict[str, Path]:
    """gender → source pickle under ``src_dir`` (searched recursively; newest version wins)."""
    found: dict[str, list[Path]] = {}
    for p in sorted(Path(src_dir).rglob("*")):
        if not p.is_file():
            continue
        for pattern, genders in _PATTERNS:
            m = pattern.match(p.name.lower())
            if m:
                found.setdefault(genders[m.group(1)], []).append(p)
    # "v1.1.0" sorts after "v1.0.0"; prefer official names over already-renamed copies
    return {g: sorted(ps, key=lambda q: (q.name.lower().startswith("basicmodel"), q.name.lower()))[-1]
            for g, ps in found.items()}


def convert_smpl_dir(src_dir: Path, dst_dir: Path) -> list[Path]:
    """Convert every SMPL model found under ``src_dir`` into ``dst_dir/SMPL_{GENDER}.pkl``."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not src_dir.is_dir():
        raise ValueError(f"{src_dir} is not a directory")
    files = find_smpl_files(src_dir)
    if not files:
        raise ValueError(
            f"no SMPL model pickles under {src_dir}: expected files such as "
            "basicModel_m_lbs_10_207_0_v1.0.0.pkl, basicmodel_f_lbs_10_207_0_v1.1.0.pkl, "
            "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl or SMPL_MALE.pkl / SMPL_FEMALE.pkl / "
            "SMPL_NEUTRAL.pkl (download 'SMPL for Python' from https://smpl.is.tue.mpg.de)"
        )
    written = []
    for gender in ("male", "female", "neutral"):
        if gender in files:
            dst = dst_dir / OUT_NAMES[gender]
            convert_smpl_pickle(files[gender], dst)
            written.append(dst)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m inference.bodies.smpl_convert SRC_DIR DST_DIR", file=sys.stderr)
        return 2
    for p in convert_smpl_dir(Path(args[0]), Path(args[1])):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

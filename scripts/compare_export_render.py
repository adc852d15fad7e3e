"""Export and render of this checkout against another one (e.g. a worktree of an older commit),
side by side in one process, alternating, on one fit of the same photo; checks that every
artefact has the same content (OBJ text, PNG pixels, GLB mesh and texture pixels).

    git worktree add /tmp/base a87ac01
    .venv/bin/python scripts/compare_export_render.py /tmp/base [--reps 10] [--photo PHOTO]
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from inference.bench import sample_photo
from inference.pipeline import Job, Pipeline, PipelineConfig
from inference.stages import export as new_export
from inference.stages import render as new_render
from inference.stages.texture import bake_texture
from inference.types import Subject


def load_module(root: Path, rel: str, name: str):
    spec = importlib.util.spec_from_file_location(name, root / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fit_once(photo: Path) -> dict:
    """load → fit of this checkout, and the texture the export stage bakes from it."""
    pipe = Pipeline(PipelineConfig(device="cpu", body_model="anny"))
    state: dict = {}
    jobs = [Job(photo, Subject(180, "male", 75), Path("unused"))]
    for stage in ("load", "detect", "segment", "fit"):
        getattr(pipe, f"_stage_{stage}")(jobs, [None], state)
    fit, body, image = state["fits"][0], state["bodies"][0], state["photos"][0].image
    tex, _ = bake_texture(image, state["masks"][0], fit.vertices, body.faces, body.uv, body.face_uv, fit.camera)
    pipe.close()
    return dict(image=image, fit=fit, faces=body.faces, uv=body.uv, face_uv=body.face_uv, texture=tex,
                meshes=(fit.vertices, state["tpose"][0][0], state["apose"][0][0]))


def artefacts(export, renderer, d: dict, out: Path, reuse_png: bool) -> dict[str, float]:
    """What the export and render stages write, timed by piece (seconds)."""
    t, out_t = time.perf_counter(), {}
    for name, verts in zip(("original", "tpose", "apose"), d["meshes"]):
        export.write_obj(out / f"{name}.obj", verts, d["faces"], d["uv"], d["face_uv"])
    out_t["obj x3"], t = time.perf_counter() - t, time.perf_counter()
    png = export.write_png(out / "skin.png", d["texture"])
    out_t["texture png"], t = time.perf_counter() - t, time.perf_counter()
    extra = (png,) if reuse_png else ()
    export.write_glb(out / "avatar.glb", d["meshes"][2], d["faces"], d["uv"], d["face_uv"], d["texture"], *extra)
    out_t["glb"], t = time.perf_counter() - t, time.perf_counter()
    prev = renderer.preview(d["meshes"][2], d["faces"], d["uv"], d["face_uv"], d["texture"], size=512)
    over = renderer.overlay(d["image"], d["fit"].vertices, d["faces"], d["fit"].camera)
    out_t["render (GL)"], t = time.perf_counter() - t, time.perf_counter()
    export.write_png(out / "preview.png", prev)
    export.write_png(out / "overlay.png", over)
    out_t["preview+overlay png"] = time.perf_counter() - t
    return out_t


def same_content(a: Path, b: Path) -> list[str]:
    """Names of the artefacts whose content differs."""
    bad = []
    for p in sorted(a.iterdir()):
        q = b / p.name
        if p.suffix == ".obj":
            same = p.read_bytes() == q.read_bytes()
        elif p.suffix == ".png":
            same = np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(q)))
        else:
            ma, mb = (trimesh.load(io.BytesIO(x.read_bytes()), file_type="glb", force="mesh") for x in (p, q))
            same = (np.array_equal(ma.vertices, mb.vertices) and np.array_equal(ma.faces, mb.faces)
                    and np.array_equal(ma.visual.uv, mb.visual.uv)
                    and np.array_equal(np.asarray(ma.visual.material.baseColorTexture),
                                       np.asarray(mb.visual.material.baseColorTexture)))
        if not same:
            bad.append(p.name)
    return bad


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base", type=Path, help="a checkout of the code to compare against")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--photo", type=Path, default=sample_photo())
    args = ap.parse_args()
    old_export = load_module(args.base, "inference/stages/export.py", "base_export")
    old_render = load_module(args.base, "inference/stages/render.py", "base_render")
    d = fit_once(args.photo)
    sides = {"base": (old_export, old_render.Renderer("cpu"), False),
             "this": (new_export, new_render.Renderer("cpu"), True)}
    times: dict[str, list[dict]] = {k: [] for k in sides}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {k: Path(tmp) / k for k in sides}
        for k, (exp, ren, reuse) in sides.items():  # once untimed (first GL contexts), then compare
            dirs[k].mkdir()
            artefacts(exp, ren, d, dirs[k], reuse)
        differ = same_content(dirs["base"], dirs["this"])
        for rep in range(args.reps):
            for k in (("base", "this") if rep % 2 == 0 else ("this", "base")):
                exp, ren, reuse = sides[k]
                times[k].append(artefacts(exp, ren, d, dirs[k], reuse))
    for _, ren, _ in sides.values():
        ren.close()
    print(f"{'piece (median ms)':<24}{'base':>8}{'this':>8}   n={args.reps} each, alternating, one process")
    for piece in [*times["base"][0], "sum"]:
        med = {k: statistics.median(sum(r.values()) if piece == "sum" else r[piece] for r in times[k]) * 1000
               for k in sides}
        print(f"{piece:<24}{med['base']:>8.0f}{med['this']:>8.0f}")
    print("content: identical" if not differ else f"content DIFFERS: {', '.join(differ)}")


if __name__ == "__main__":
    main()

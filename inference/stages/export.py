"""Stage 5, export: meshes, texture, parameters and keypoints as files.

OBJ files keep the body model's vertex order (``v`` lines in model order, UVs as separate
``vt`` lines), so ``avatar measure`` and anyone holding the model can regress landmarks from
them. The GLB is the textured avatar in the A-pose (what viewers and engines expect); glTF is
Y-up in metres, like our body frame.
"""
from __future__ import annotations

import io
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from inference.types import COCO_KEYPOINTS


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray,
              uv: np.ndarray | None = None, face_uv: np.ndarray | None = None,
              mtl: str | None = None) -> None:
    parts = ["# avatar body mesh: metres, +Y up, facing +Z; vertex order = body model order\n"]
    if mtl:
        parts.append(f"mtllib {mtl}\n")
    parts.append(_rows("v %.6f %.6f %.6f\n", vertices))
    parts.append(topology_text(faces, uv, face_uv))
    path.write_text("".join(parts))


def _rows(line: str, values: np.ndarray) -> str:
    """One ``line`` per row of ``values``: the text ``np.savetxt`` writes, formatted by one
    ``%`` over the whole array instead of a Python call per row (~10x faster)."""
    values = np.asarray(values)
    return (line * len(values)) % tuple(values.ravel().tolist())


_TOPOLOGY_TEXT: OrderedDict[tuple, str] = OrderedDict()


def topology_text(faces: np.ndarray, uv: np.ndarray | None, face_uv: np.ndarray | None) -> str:
    """The ``vt`` and ``f`` lines, which depend only on the body model's topology: formatted
    once per topology and reused (three OBJs per avatar, every avatar of a worker)."""
    arrays = [np.ascontiguousarray(a) for a in (faces, uv, face_uv) if a is not None]
    key = tuple((a.dtype.str, a.shape, hash(a.tobytes())) for a in arrays)
    text = _TOPOLOGY_TEXT.get(key)
    if text is None:
        if uv is not None and face_uv is not None:
            f = np.concatenate([faces[:, :, None] + 1, face_uv[:, :, None] + 1], axis=2).reshape(-1, 6)
            text = _rows("vt %.6f %.6f\n", uv) + _rows("f %d/%d %d/%d %d/%d\n", f)
        else:
            text = _rows("f %d %d %d\n", np.asarray(faces) + 1)
        _TOPOLOGY_TEXT[key] = text
        while len(_TOPOLOGY_TEXT) > 4:
            _TOPOLOGY_TEXT.popitem(last=False)
    else:
        _TOPOLOGY_TEXT.move_to_end(key)
    return text


def read_obj_vertices(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) vertices and (F, 3) triangles of an OBJ, in file order (no re-indexing)."""
    verts, faces = [], []
    with open(path) as fh:
        for line in fh:
            if line.startswith("v "):
                verts.append([float(x) for x in line.split()[1:4]])
            elif line.startswith("f "):
                idx = [int(tok.split("/")[0]) for tok in line.split()[1:]]
                idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
                for k in range(1, len(idx) - 1):  # fan-triangulate polygons
                    faces.append([idx[0], idx[k], idx[k + 1]])
    if not verts or not faces:
        raise ValueError(f"{path} holds no mesh (no 'v' or 'f' lines)")
    return np.asarray(verts, np.float64), np.asarray(faces, np.int64)


GLB_GENERATOR = "avatar (inference/stages/export.py)"


def write_glb(path: Path, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray,
              face_uv: np.ndarray, texture: np.ndarray, texture_png: bytes | None = None) -> None:
    """The textured mesh as one binary glTF: one vertex per (position, uv) corner, as glTF
    needs, the texture embedded as PNG (``texture_png``, the bytes already written beside it,
    or encoded here with PIL's defaults). The file trimesh's exporter wrote for the same mesh
    (``trimesh.exchange.gltf.export_glb``: the same JSON, buffer order and padding) but for the
    generator's name (tests/test_export.py holds the two side by side), without importing
    trimesh."""
    from inference.stages.render import split_by_uv  # cached per topology; no GL is touched

    if len(faces) == 0 or len(vertices) == 0:
        raise ValueError("an empty mesh has no GLB")
    vertex_of, uv_of, corner_faces = split_by_uv(faces, face_uv)
    if texture_png is None:
        buf = io.BytesIO()
        Image.fromarray(texture).save(buf, format="png")
        texture_png = buf.getvalue()
    texcoords = np.asarray(uv, np.float64)[uv_of][:, :2]
    texcoords[:, 1] = 1.0 - texcoords[:, 1]  # glTF's v runs down the image
    path.write_bytes(_glb(corner_faces.astype(np.uint32),
                          np.asarray(vertices, np.float64)[vertex_of].astype(np.float32),
                          texcoords.astype(np.float32), texture_png))


def _glb(indices: np.ndarray, positions: np.ndarray, texcoords: np.ndarray, png: bytes) -> bytes:
    """(F, 3) uint32, (N, 3) and (N, 2) float32, PNG bytes → the GLB file. Buffers in trimesh's
    order (indices, positions, image, texture coordinates), each padded to 4 bytes; identical
    buffers share one view, as in trimesh."""
    chunks: list[bytes] = []

    def view(data: bytes) -> int:
        data += bytes(-len(data) % 4)
        if data in chunks:
            return chunks.index(data)
        chunks.append(data)
        return len(chunks) - 1

    def accessor(data: np.ndarray, component: int, kind: str, offset: bool) -> dict:
        blob: dict = {"componentType": component, "type": kind}
        if offset:
            blob["byteOffset"] = 0
        blob["bufferView"] = view(data.tobytes())
        rows = data.reshape(-1) if kind == "SCALAR" else data
        blob["count"] = len(rows)
        blob["max"] = np.atleast_1d(rows.max(axis=0)).tolist()
        blob["min"] = np.atleast_1d(rows.min(axis=0)).tolist()
        return blob

    accessors = [accessor(indices, 5125, "SCALAR", False), accessor(positions, 5126, "VEC3", True)]
    image = view(png)
    accessors.append(accessor(texcoords, 5126, "VEC2", True))
    tree = {
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "asset": {"version": "2.0", "generator": GLB_GENERATOR},
        "accessors": accessors,
        "meshes": [{"name": "geometry_0", "extras": {}, "primitives": [{
            "attributes": {"POSITION": 1, "TEXCOORD_0": 2}, "indices": 0, "mode": 4, "material": 0}]}],
        "images": [{"bufferView": image, "mimeType": "image/png"}],
        "textures": [{"source": 0}],
        "materials": [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}, "roughnessFactor": 0.9,
                                                "metallicFactor": 0.0}, "doubleSided": False}],
        "nodes": [{"name": "geometry_0", "mesh": 0}],
    }
    offsets = np.cumsum([0] + [len(c) for c in chunks]).tolist()
    tree["buffers"] = [{"byteLength": offsets[-1]}]
    tree["bufferViews"] = [{"buffer": 0, "byteOffset": o, "byteLength": len(c)} for o, c in zip(offsets, chunks)]
    content = json.dumps(tree, separators=(",", ":"))
    content = (content + (4 - (len(content) + 20) % 4) * " ").encode("utf-8")  # 1-4 spaces, as trimesh
    header = np.array([0x46546C67, 2, len(content) + offsets[-1] + 28, len(content), 0x4E4F534A], "<u4")
    return b"".join([header.tobytes(), content, np.array([offsets[-1], 0x004E4942], "<u4").tobytes(), *chunks])


def write_keypoints(path: Path, detected: np.ndarray, fitted_2d: np.ndarray,
                    fitted_3d: np.ndarray, box: np.ndarray, score: float,
                    image_size: tuple[int, int]) -> None:
    doc = {
        "format": "coco17",
        "image_size": {"width": int(image_size[0]), "height": int(image_size[1])},
        "person": {"box_xyxy": [round(float(x), 2) for x in box], "score": round(float(score), 4)},
        "keypoints": [
            {
                "name": name,
                "detected": {"x": round(float(d[0]), 2), "y": round(float(d[1]), 2),
                             "confidence": round(float(d[2]), 4)},
                "fitted_2d": {"x": round(float(f[0]), 2), "y": round(float(f[1]), 2)},
                "fitted_3d_m": [round(float(x), 5) for x in p],
            }
            for name, d, f, p in zip(COCO_KEYPOINTS, detected, fitted_2d, fitted_3d)
        ],
    }
    path.write_text(json.dumps(doc, indent=2))


def write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=False))


PNG_COMPRESS_LEVEL = 1  # zlib level: 1 encodes ~1.5x faster than 3 for ~8 % larger files, same pixels


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="png", optimize=False, compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def write_png(path: Path, image: np.ndarray) -> bytes:
    """Write ``image`` as PNG; returns the bytes written (so they can be embedded elsewhere)."""
    png = encode_png(image)
    path.write_bytes(png)
    return png

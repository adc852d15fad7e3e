"""Export writes the same content faster: OBJ text as ``np.savetxt`` wrote it, PNG pixels kept, the
GLB embedding the texture's PNG bytes instead of encoding them a second time, the file trimesh's
exporter wrote but for the generator's name."""
from __future__ import annotations

import io

import numpy as np
import trimesh
from PIL import Image

from inference.stages import export
from inference.stages.render import split_by_uv


def savetxt_obj(vertices, faces, uv=None, face_uv=None) -> str:
    """The OBJ text as the exporter wrote it before (one ``np.savetxt`` per block)."""
    buf = io.StringIO()
    buf.write("# avatar body mesh: metres, +Y up, facing +Z; vertex order = body model order\n")
    np.savetxt(buf, vertices, fmt="v %.6f %.6f %.6f")
    if uv is not None:
        np.savetxt(buf, uv, fmt="vt %.6f %.6f")
        f = np.concatenate([faces[:, :, None] + 1, face_uv[:, :, None] + 1], axis=2).reshape(-1, 6)
        np.savetxt(buf, f, fmt="f %d/%d %d/%d %d/%d")
    else:
        np.savetxt(buf, faces + 1, fmt="f %d %d %d")
    return buf.getvalue()


def mesh(rng, n=500, f=900, dtype=np.float32):
    v = (rng.normal(size=(n, 3)) * [0.3, 0.9, 0.2]).astype(dtype)
    v[0] = [-0.0000004, 1e-7, 123.4567895]  # rounding edge cases and a negative zero
    faces = rng.integers(0, n, size=(f, 3))
    uv = rng.random((n + 40, 2))
    face_uv = rng.integers(0, n + 40, size=(f, 3)).astype(np.int32)
    return v, faces, uv, face_uv


def test_obj_text_is_what_savetxt_wrote(tmp_path):
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        v, faces, uv, face_uv = mesh(rng, dtype=dtype)
        export.write_obj(tmp_path / "a.obj", v, faces, uv, face_uv)
        assert (tmp_path / "a.obj").read_text() == savetxt_obj(v, faces, uv, face_uv)
        export.write_obj(tmp_path / "b.obj", v, faces)
        assert (tmp_path / "b.obj").read_text() == savetxt_obj(v, faces)


def test_obj_topology_cache_follows_the_faces(tmp_path):
    rng = np.random.default_rng(1)
    v, faces, uv, face_uv = mesh(rng)
    export.write_obj(tmp_path / "a.obj", v, faces, uv, face_uv)
    faces2 = faces[::-1].copy()  # same shape, other content: must not hit the cache
    export.write_obj(tmp_path / "b.obj", v, faces2, uv, face_uv)
    assert (tmp_path / "b.obj").read_text() == savetxt_obj(v, faces2, uv, face_uv)
    vr, fr = export.read_obj_vertices(tmp_path / "b.obj")
    assert np.allclose(vr, v, atol=5e-7) and np.array_equal(fr, faces2)


def test_png_keeps_every_pixel(tmp_path):
    img = np.random.default_rng(2).integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
    png = export.write_png(tmp_path / "x.png", img)
    assert (tmp_path / "x.png").read_bytes() == png
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), img)


def trimesh_glb(vertices, faces, uv, face_uv, texture, texture_png=None) -> bytes:
    """The GLB as the exporter wrote it before: a trimesh with one vertex per (position, uv)
    corner, exported by trimesh (with ``texture_png`` standing in for the PNG encode)."""
    vertex_of, uv_of, corner_faces = split_by_uv(faces, face_uv)
    image = Image.fromarray(texture)
    if texture_png is not None:
        image.save = lambda fp, format=None, **kw: fp.write(texture_png)
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=image, metallicFactor=0.0,
                                                   roughnessFactor=0.9)
    visual = trimesh.visual.TextureVisuals(uv=uv[uv_of], material=material)
    mesh = trimesh.Trimesh(vertices=vertices[vertex_of], faces=corner_faces, visual=visual, process=False)
    return trimesh.exchange.gltf.export_glb(trimesh.Scene(mesh))


def glb_parts(data: bytes) -> tuple[str, bytes]:
    """A GLB's JSON (its padding stripped) and its binary chunk."""
    n = int.from_bytes(data[12:16], "little")
    return data[20:20 + n].decode().rstrip(" "), data[20 + n + 8:]


def test_glb_bytes_are_what_trimesh_wrote(tmp_path):
    rng = np.random.default_rng(4)
    for k in range(8):
        v, faces, uv, face_uv = mesh(rng, n=40 + 30 * k, f=60 + 50 * k, dtype=(np.float32, np.float64)[k % 2])
        uv = uv.astype((np.float64, np.float32)[k // 2 % 2])
        tex = rng.integers(0, 256, size=(8 + 3 * k, 5 + 4 * k, 3), dtype=np.uint8)
        png = export.encode_png(tex) if k % 4 < 2 else None
        export.write_glb(tmp_path / "a.glb", v, faces, uv, face_uv, tex, png)
        ours = (tmp_path / "a.glb").read_bytes()
        text, binary = glb_parts(trimesh_glb(v, faces, uv, face_uv, tex, png))
        text = text.replace('"generator":"https://github.com/mikedh/trimesh"', f'"generator":"{export.GLB_GENERATOR}"')
        assert glb_parts(ours) == (text, binary)  # the JSON's padding to 4 bytes follows its length
        assert ours[:4] == b"glTF" and len(ours) % 4 == 0


def test_glb_embeds_the_texture_png_bytes(tmp_path):
    rng = np.random.default_rng(3)
    v, faces, uv, face_uv = mesh(rng, n=60, f=80)
    tex = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    png = export.write_png(tmp_path / "skin.png", tex)
    export.write_glb(tmp_path / "a.glb", v, faces, uv, face_uv, tex, png)
    export.write_glb(tmp_path / "b.glb", v, faces, uv, face_uv, tex)  # encoded with PIL's defaults
    data = (tmp_path / "a.glb").read_bytes()
    assert png in data
    a, b = (trimesh.load(tmp_path / n, force="mesh") for n in ("a.glb", "b.glb"))
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
    assert np.array_equal(np.asarray(a.visual.material.baseColorTexture)[..., :3], tex)

"""``avatar eval make-set``: photos of bodies whose shape we know, with every nuisance a real photo
has drawn from a stated range.

Two presets:
- ``wide`` (the default): ``WIDE`` below states each range: pose (arms, elbows, stance, toes,
  lean, head, weight on one leg, the body turned), the whole adult age range and Anny's
  proportions, camera (distance, height and so pitch, focal length with and without EXIF,
  off-centre and tight framing), photo size and aspect (720 px to 12 MP, portrait and
  landscape), JPEG quality, lighting, background (wall-and-floor, plain, noise, a cluttered room,
  wallpaper) and clothing that is not skin-tight (garments pushed out along the normals, more at
  the hem than at the shoulders; short or long sleeves). The truth stays the body under the
  clothes, measured in the standard A-pose.
- ``studio``: the narrow set the fit was first developed on (A-pose, tight clothes, 50 mm lens
  ~3 m away, 768x1024 PNG).

Each case is ``case_XXX/{photo.jpg|photo.png, truth.json, truth_mesh.npz, truth_mask.png}``;
``truth.json`` holds the phenotypes, height, mass, measurements, the inputs a user a little off
would type, the camera (at the photo's size) and, for ``wide``, the drawn ``scene``.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from inference.bodies.base import (L_ELBOW, L_SHOULDER, L_WRIST, LIMB, R_ELBOW, R_SHOULDER, R_WRIST,
                                   rotate, rotvec_between)
from inference.types import Camera, focal_px_from_35mm

GENDERS = ("male", "female")
PRESETS = ("wide", "studio")

# The population: adults of both genders, 150-200 cm, lean to heavy, low to high muscle, kept to
# plausible people by the body-mass index of the result.
HEIGHT_CM = (150.0, 200.0)
BMI = (17.0, 40.0)

# The wide preset's ranges (uniform unless said otherwise). Angles in degrees, lengths in metres.
WIDE = {
    "age": (0.77, 0.86),  # Anny's adult range, 18 to ~80 years
    "proportions": (0.0, 1.0),
    "arm_abduction": (20.0, 60.0),  # each arm, from hanging straight down
    "elbow_bend": (0.0, 25.0),  # each elbow, the forearm forward
    "stance": (0.0, 8.0),  # each thigh outward: feet together to about shoulder-wide
    "toe_out": (0.0, 20.0),  # each thigh turned out
    "lean_forward": (-5.0, 5.0), "lean_side": (-4.0, 4.0), "twist": (-6.0, 6.0),
    "head_turn": (-15.0, 15.0), "head_tilt": (-8.0, 8.0),
    "relaxed_knee": (3.0, 12.0),  # one knee bent (weight on the other leg), on 40 % of photos
    "body_yaw": (-12.0, 12.0),  # the body turned away from the camera
    "camera_distance": (2.0, 5.0),  # further when the lens needs it to fit the body in
    "camera_height": (0.8, 1.8),
    "focal_35mm": (24.0, 85.0),
    "exif_focal": 0.5,  # share of photos with the focal length in EXIF
    "off_centre": (-0.25, 0.25),  # aim point shifted by this share of the body's height
    "margin": (0.02, 0.15),  # free border around the body, share of the half image
    "short_side_px": (720, 3000),
    "aspects": ((3, 4), (2, 3), (9, 16), (4, 3), (1, 1)),  # width:height
    "jpeg_quality": (60, 95),
    "key_light": (1.2, 4.0), "ambient": (0.1, 0.45),
    "backgrounds": ("gradient", "plain", "noise", "cluttered", "patterned"),
    "cloth_top": (0.0, 0.03),  # how far the top stands off the body at the hem
    "cloth_bottom": (0.0, 0.03),  # trousers
    "long_sleeves": 0.5,
}
RENDER_LONG_SIDE = 1600  # rendered at most this large, then resized to the photo's size


def sample_phenotypes(rng: np.random.Generator, gender: str, preset: str = "wide") -> dict:
    age = WIDE["age"] if preset == "wide" else (0.77, 0.86)
    prop = WIDE["proportions"] if preset == "wide" else (0.25, 0.75)
    return {
        "gender": gender,
        "age": float(rng.uniform(*age)),
        "muscle": float(rng.uniform(0.0, 1.0)),
        "weight": float(rng.uniform(0.0, 1.0)),
        "height": float(rng.uniform(0.15, 0.65)),
        "proportions": float(rng.uniform(*prop)),
    }


def plausible(height_cm: float, weight_kg: float) -> bool:
    bmi = weight_kg / (height_cm / 100.0) ** 2
    return HEIGHT_CM[0] <= height_cm <= HEIGHT_CM[1] and BMI[0] <= bmi <= BMI[1]


def sample_scene(rng: np.random.Generator) -> dict:
    """One draw of every nuisance of the wide preset (plain numbers, stored in truth.json)."""
    u = lambda key: float(rng.uniform(*WIDE[key]))  # noqa: E731
    s = {
        "pose": {
            "left_arm_abduction": u("arm_abduction"), "right_arm_abduction": u("arm_abduction"),
            "left_elbow_bend": u("elbow_bend"), "right_elbow_bend": u("elbow_bend"),
            "left_stance": u("stance"), "right_stance": u("stance"),
            "left_toe_out": u("toe_out"), "right_toe_out": u("toe_out"),
            "lean_forward": u("lean_forward"), "lean_side": u("lean_side"), "twist": u("twist"),
            "head_turn": u("head_turn"), "head_tilt": u("head_tilt"),
            "relaxed_knee": u("relaxed_knee") if rng.random() < 0.4 else 0.0,
            "relaxed_side": str(rng.choice(["left", "right"])),
            "body_yaw": u("body_yaw"),
        },
        "camera": {
            "distance": u("camera_distance"), "height": u("camera_height"), "focal_35mm": u("focal_35mm"),
            "exif": bool(rng.random() < WIDE["exif_focal"]),
            "off_centre_x": u("off_centre"), "off_centre_y": u("off_centre"), "margin": u("margin"),
        },
        "photo": {
            "short_side": int(rng.integers(WIDE["short_side_px"][0], WIDE["short_side_px"][1] + 1)),
            "aspect": list(WIDE["aspects"][int(rng.integers(len(WIDE["aspects"])))]),
            "jpeg_quality": int(rng.integers(WIDE["jpeg_quality"][0], WIDE["jpeg_quality"][1] + 1)),
            "background": str(rng.choice(WIDE["backgrounds"])),
        },
        "light": {"key": u("key_light"), "ambient": u("ambient"),
                  "direction": [float(rng.uniform(-0.8, 0.8)), float(rng.uniform(-0.2, 0.9)), 1.0]},
        "clothing": {"top": u("cloth_top"), "bottom": u("cloth_bottom"),
                     "long_sleeves": bool(rng.random() < WIDE["long_sleeves"])},
    }
    return s


def photo_pose(body, shape: torch.Tensor, pose: dict) -> torch.Tensor:
    """(1, S) shape and a drawn ``pose`` (degrees) → (1, L, 3) limb rotations (see
    ``BodyModel.standard_pose``: each limb's direction is set in the body frame)."""
    r = math.radians
    with torch.no_grad():
        kp = body.rest(shape).keypoints
        limbs = body.zero_limbs(1)
        fwd = torch.tensor([0.0, 0.0, 1.0], dtype=kp.dtype, device=kp.device)
        for side, sign, (sh, el, wr) in (("left", 1.0, (L_SHOULDER, L_ELBOW, L_WRIST)),
                                         ("right", -1.0, (R_SHOULDER, R_ELBOW, R_WRIST))):
            a = r(pose[f"{side}_arm_abduction"])
            down = torch.tensor([sign * math.sin(a), -math.cos(a), 0.0], dtype=kp.dtype, device=kp.device)
            r_upper = rotvec_between(kp[:, el] - kp[:, sh], down[None])
            limbs[:, LIMB[f"{side}_upper_arm"]] = r_upper
            b = r(pose[f"{side}_elbow_bend"])
            fore_dir = down * math.cos(b) + fwd * math.sin(b)
            fore = rotate(r_upper, kp[:, wr] - kp[:, el])
            limbs[:, LIMB[f"{side}_forearm"]] = rotvec_between(fore, fore_dir[None])
            thigh = [0.0, sign * r(pose[f"{side}_toe_out"]), sign * r(pose[f"{side}_stance"])]
            if pose["relaxed_side"] == side and pose["relaxed_knee"] > 0:
                thigh[0] = -0.5 * r(pose["relaxed_knee"])
                limbs[:, LIMB[f"{side}_shin"]] = torch.tensor([r(pose["relaxed_knee"]), 0.0, 0.0])
            limbs[:, LIMB[f"{side}_thigh"]] = torch.tensor(thigh)
        limbs[:, LIMB["spine"]] = torch.tensor([r(pose["lean_forward"]), r(pose["twist"]), r(pose["lean_side"])])
        limbs[:, LIMB["neck"]] = torch.tensor([r(pose["head_tilt"]), r(pose["head_turn"]), 0.0])
    return limbs


def top_offset(top: float, t):
    """A top's offset along the normals ``t`` of the way from the shoulders (0) to its hem (1):
    a third of the hem's at the shoulders (a loose shirt hangs from them)."""
    return top * (0.33 + 0.67 * t)


def dress(vertices: np.ndarray, faces: np.ndarray, masks: dict, clothing: dict) -> np.ndarray:
    """The body's surface pushed out along its normals where the garments are: the top by up to
    ``clothing["top"]`` metres at the hem (a third of that at the shoulders: a loose shirt hangs
    from them), the trousers by ``clothing["bottom"]`` (less toward the ankle)."""
    from inference.stages.render import vertex_normals

    v = vertices
    n = vertex_normals(v, faces)
    off = np.zeros(len(v))
    top, bottom = masks["top"], masks["bottom"]
    if top.any():
        y = v[top, 1]
        t = (y.max() - y) / max(np.ptp(y), 1e-6)  # 0 at the shoulders, 1 at the hem
        off[top] = top_offset(clothing["top"], t)
    if bottom.any():
        y = v[bottom, 1]
        t = (y - y.min()) / max(np.ptp(y), 1e-6)  # 0 at the ankles, 1 at the waist
        off[bottom] = clothing["bottom"] * (0.5 + 0.5 * t)
    return v + n * off[:, None]


def scene_camera(vertices: np.ndarray, cam: dict, width: int, height: int) -> Camera:
    """A camera ``cam["distance"]`` from the body (further if the body would not fit in the frame
    with ``cam["margin"]`` to spare), at ``cam["height"]``, aimed at the body's centre shifted
    by the off-centre shares (so it looks down or up), the body turned by the pose's yaw."""
    from inference.stages.render import _hull_points, _look_rotation

    f = focal_px_from_35mm(cam["focal_35mm"], width, height)
    lo, hi = vertices.min(0), vertices.max(0)
    centre = (lo + hi) / 2
    tall = hi[1] - lo[1]
    yaw = math.radians(cam.get("yaw", 0.0))
    direction = np.array([math.sin(yaw), 0.0, math.cos(yaw)])
    target = centre + np.array([cam["off_centre_x"] * tall * math.cos(yaw), cam["off_centre_y"] * tall,
                                -cam["off_centre_x"] * tall * math.sin(yaw)])
    pts = _hull_points(vertices)
    mx, my = width / 2 * cam["margin"], height / 2 * cam["margin"]

    def make(d: float) -> Camera:
        C = centre + direction * d
        C[1] = cam["height"]
        R = _look_rotation(target - C)
        return Camera(f, f, (width - 1) / 2, (height - 1) / 2, width, height, R, -R @ C)

    def fits(c: Camera) -> bool:
        if np.any(pts @ c.R[2] + c.t[2] <= 0.3):
            return False
        uv = c.project(pts)
        return bool(np.all((uv[:, 0] >= mx) & (uv[:, 0] <= width - mx) & (uv[:, 1] >= my) & (uv[:, 1] <= height - my)))

    d = cam["distance"]
    while not fits(make(d)):
        d *= 1.05
        if d > 60:
            raise ValueError("cannot frame this body")
    cam["distance_used"] = round(d, 3)
    return make(d)


def render_wide(truth, body, renderer, rng: np.random.Generator, scene: dict):
    """→ (photo (H, W, 3) uint8, true silhouette of the dressed body (H, W) bool, camera, posed
    undressed vertices (V, 3)) at the photo's size."""
    import cv2

    from inference.eval.scenes import SKINS, outfit, outfit_masks, synthetic_photo

    shape = torch.tensor([[truth.phenotypes[n] for n in _phenotype_names()]], dtype=body.dtype)
    st = body.posed(shape, photo_pose(body, shape, scene["pose"]))
    posed = st.vertices[0].cpu().numpy().astype(np.float64)
    kp = st.keypoints[0].cpu().numpy()
    masks = outfit_masks(posed, kp, long_sleeves=scene["clothing"]["long_sleeves"])
    dressed = dress(posed, body.faces, masks, scene["clothing"])
    labels, clothing = outfit(masks, rng)

    aw, ah = scene["photo"]["aspect"]
    short = scene["photo"]["short_side"]
    width, height = (short, round(short * ah / aw)) if aw <= ah else (round(short * aw / ah), short)
    scale = min(1.0, RENDER_LONG_SIDE / max(width, height))
    rw, rh = max(round(width * scale), 64), max(round(height * scale), 64)
    cam_spec = {**scene["camera"], "yaw": scene["pose"]["body_yaw"]}
    cam = scene_camera(dressed, cam_spec, rw, rh)
    scene["camera"]["distance_used"] = cam_spec["distance_used"]
    photo = synthetic_photo(renderer, dressed, body.faces, cam, skin=SKINS[int(rng.integers(len(SKINS)))],
                            clothing=clothing, clothing_mask=labels, hair_mask=masks["hair"],
                            background=scene["photo"]["background"], rng=rng, key_light=scene["light"]["key"],
                            ambient=scene["light"]["ambient"], key_direction=scene["light"]["direction"])
    mask = renderer.render_mesh(dressed, body.faces, cam)[2]
    if (rw, rh) != (width, height):
        photo = cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC)
        mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
        s = width / rw
        cam = Camera(cam.fx * s, cam.fy * s, (width - 1) / 2, (height - 1) / 2, width, height, cam.R, cam.t)
    return photo, mask, cam, posed


def _phenotype_names():
    from inference.bodies.anny_body import PHENOTYPES

    return PHENOTYPES


def save_jpeg(photo: np.ndarray, path: Path, quality: int, focal_35mm: float | None) -> None:
    """JPEG at ``quality``; with ``focal_35mm`` the EXIF FocalLengthIn35mmFilm tag a phone writes."""
    img = Image.fromarray(photo)
    exif = Image.Exif()
    if focal_35mm is not None:
        exif.get_ifd(0x8769)[0xA405] = int(round(focal_35mm))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(quality), exif=exif.tobytes())
    path.write_bytes(buf.getvalue())


def make_set(out_dir: Path, n: int = 24, seed: int = 0, preset: str = "wide", log=print) -> list[Path]:
    """Write ``n`` cases under ``out_dir`` (see the module's docstring)."""
    from inference.bodies.anny_body import AnnyBody
    from inference.eval.truth import render_truth, truth_for
    from inference.stages.render import Renderer

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, not {preset!r}")
    rng = np.random.default_rng(seed)
    body = AnnyBody()
    renderer = Renderer("cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = []
    try:
        for i in range(n):
            gender = GENDERS[i % 2]
            while True:  # redraw until the body is a plausible adult
                ph = sample_phenotypes(rng, gender, preset)
                truth = truth_for(body, **ph)
                if plausible(truth.height_cm, truth.weight_kg):
                    break
            case = out_dir / f"case_{i:03d}"
            case.mkdir(exist_ok=True)
            extra: dict = {"preset": preset, "seed": seed}
            if preset == "wide":
                scene = sample_scene(rng)
                photo, mask, cam, posed = render_wide(truth, body, renderer, rng, scene)
                name = "photo.jpg"
                save_jpeg(photo, case / name, scene["photo"]["jpeg_quality"],
                          scene["camera"]["focal_35mm"] if scene["camera"]["exif"] else None)
                extra["scene"] = scene
            else:
                photo, mask, cam = render_truth(truth, body, renderer, rng, with_mask=True)
                posed = truth.vertices
                name = "photo.png"
                Image.fromarray(photo).save(case / name)
            Image.fromarray(mask.astype(np.uint8) * 255).save(case / "truth_mask.png")
            # what a user who is a little off would type
            given = {"height_cm": round(truth.height_cm + float(rng.choice([-2.0, 2.0])), 1),
                     "weight_kg": round(truth.weight_kg + float(rng.choice([-5.0, 5.0])), 1)}
            camera = {"fx": cam.fx, "fy": cam.fy, "cx": cam.cx, "cy": cam.cy, "width": cam.width,
                      "height": cam.height, "R": np.asarray(cam.R).tolist(), "t": np.asarray(cam.t).tolist()}
            (case / "truth.json").write_text(json.dumps(
                {**truth.to_json(), "photo": name, "perturbed_input": given, "camera": camera, **extra}, indent=2))
            np.savez_compressed(case / "truth_mesh.npz", vertices=truth.vertices.astype(np.float32),
                                photo_vertices=np.asarray(posed, np.float32))
            cases.append(case)
            log(f"{case.name}: {gender:6s} {truth.height_cm:5.1f} cm {truth.weight_kg:5.1f} kg "
                f"chest {truth.measurements['chest']:.1f} waist {truth.measurements['waist']:.1f} "
                f"hip {truth.measurements['hip']:.1f}" + (f"  [{describe(extra['scene'])}]" if "scene" in extra else ""))
    finally:
        renderer.close()
    return cases


def photo_path(case: Path) -> Path:
    """The case's photo (``truth.json`` names it; older sets have ``photo.png``)."""
    truth = json.loads((case / "truth.json").read_text())
    return case / truth.get("photo", "photo.png")


def describe(scene: dict | None) -> str:
    """What is unusual about a wide-preset photo, in a few words (for the worst-case list)."""
    if not scene:
        return "studio"
    p, c, ph, cl = scene["pose"], scene["camera"], scene["photo"], scene["clothing"]
    out = []
    arms = (p["left_arm_abduction"], p["right_arm_abduction"])
    if min(arms) < 30 or max(arms) > 50:
        out.append(f"arms {arms[0]:.0f}/{arms[1]:.0f}°")
    if max(p["left_elbow_bend"], p["right_elbow_bend"]) > 15:
        out.append(f"elbows {p['left_elbow_bend']:.0f}/{p['right_elbow_bend']:.0f}°")
    if p["left_stance"] + p["right_stance"] > 10:
        out.append("wide stance")
    if p["relaxed_knee"] > 0:
        out.append(f"{p['relaxed_side']} knee {p['relaxed_knee']:.0f}°")
    if abs(p["body_yaw"]) > 8:
        out.append(f"turned {p['body_yaw']:+.0f}°")
    if max(abs(p["lean_forward"]), abs(p["lean_side"])) > 3:
        out.append("leaning")
    cloth = max(cl["top"], cl["bottom"]) * 100
    if cloth > 1.5:
        out.append(f"loose clothes {cl['top'] * 100:.1f}/{cl['bottom'] * 100:.1f} cm")
    if cl["long_sleeves"]:
        out.append("long sleeves")
    if c["focal_35mm"] < 30 or c["focal_35mm"] > 70:
        out.append(f"{c['focal_35mm']:.0f} mm" + (" (EXIF)" if c["exif"] else " (no EXIF)"))
    elif not c["exif"]:
        out.append(f"{c['focal_35mm']:.0f} mm, no EXIF")
    if abs(c["height"] - 1.3) > 0.35:
        out.append(f"camera at {c['height']:.1f} m")
    if max(abs(c["off_centre_x"]), abs(c["off_centre_y"])) > 0.15 or c["margin"] < 0.05:
        out.append("off-centre/tight")
    if ph["background"] in ("cluttered", "patterned"):
        out.append(ph["background"])
    if ph["jpeg_quality"] < 70:
        out.append(f"JPEG q{ph['jpeg_quality']}")
    aw, ah = ph["aspect"]
    if aw > ah:
        out.append("landscape")
    return ", ".join(out) or "nothing unusual"

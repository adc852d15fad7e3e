"""Photos of bodies whose shape we know: the ground truth for tests and ``avatar eval``'s
"studio" preset.

An Anny body with chosen phenotypes stands in the standard A-pose, dressed in form-fitting
clothing colours, and is rendered with the project's own renderer by a ~50 mm-equivalent camera
about 3 m away, in front of a wall-and-floor background. Its truth is what the pipeline should
recover: height, mass (volume × density), measurements by the project's own measure stage.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from inference.bodies.anny_body import GENDER_VALUE, PHENOTYPES, AnnyBody
from inference.stages.fit import DENSITY, mesh_volume
from inference.stages.measure import measure



@dataclass
class Truth:
    gender: str
    phenotypes: dict[str, float]
    height_cm: float
    weight_kg: float
    measurements: dict[str, float]
    vertices: np.ndarray  # (V, 3) A-pose mesh, metres, body frame

    def to_json(self) -> dict:
        return {"gender": self.gender, "phenotypes": self.phenotypes,
                "height_cm": self.height_cm, "weight_kg": self.weight_kg,
                "measurements": self.measurements}


def truth_for(body: AnnyBody, gender: str, age: float = 0.8, muscle: float = 0.5,
              weight: float = 0.5, height: float = 0.5, proportions: float = 0.5) -> Truth:
    values = {"gender": GENDER_VALUE[gender], "age": age, "muscle": muscle, "weight": weight,
              "height": height, "proportions": proportions}
    shape = torch.tensor([[values[n] for n in PHENOTYPES]], dtype=body.dtype, device=body.device)
    with torch.no_grad():
        st = body.posed(shape, body.standard_pose(shape, "apose"))
        v, kp = st.vertices, st.keypoints
        mass = float(mesh_volume(v, torch.as_tensor(body.faces, device=body.device))[0]) * DENSITY
    v_np, kp_np = v[0].cpu().numpy().astype(np.float64), kp[0].cpu().numpy().astype(np.float64)
    m = measure(v_np, body.faces, kp_np)
    return Truth(gender=gender, phenotypes=values, height_cm=m["height"], weight_kg=round(mass, 2),
                 measurements=m, vertices=v_np)


def render_truth(truth: Truth, body: AnnyBody, renderer, rng: np.random.Generator,
                 size: tuple[int, int] = (768, 1024), distance: float = 3.0,
                 focal_35mm: float = 50.0, with_mask: bool = False):
    """A photo of ``truth``'s body: (H, W, 3) uint8 RGB; with ``with_mask`` → (photo, its true
    silhouette (H, W) bool (what a perfect segmenter would return), the camera)."""
    from inference.eval.scenes import SKINS, outfit, outfit_masks, synthetic_photo
    from inference.stages.render import focal_px_from_35mm, look_at_camera

    w, h = size
    v = truth.vertices
    kp = body.keypoints_from_vertices(torch.as_tensor(v[None], dtype=body.dtype, device=body.device))
    masks = outfit_masks(v, kp[0].cpu().numpy())
    labels, clothing = outfit(masks, rng)
    f = focal_px_from_35mm(focal_35mm, w, h)
    cam = look_at_camera(v, "front", width=w, height=h, focal_px=f, distance=distance,
                         camera_height=float(rng.uniform(1.2, 1.5)))
    background = "gradient" if rng.random() < 0.7 else "noise"
    photo = synthetic_photo(
        renderer, v, body.faces, cam, skin=SKINS[int(rng.integers(len(SKINS)))], clothing=clothing,
        clothing_mask=labels, hair_mask=masks["hair"], background=background, rng=rng,
    )
    if not with_mask:
        return photo
    return photo, renderer.render_mesh(v, body.faces, cam)[2], cam

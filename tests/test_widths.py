"""The trunk width profile (fit stage C) reads the photo's mask and the model alike, and the
fitter corrects the model's keypoints to the pose detector's convention."""
import numpy as np
import pytest
import torch

from inference.bodies.base import L_ANKLE, L_HIP, R_ANKLE, R_HIP
from inference.stages import widths as W
from inference.stages.render import focal_px_from_35mm, look_at_camera
from inference.eval.truth import truth_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def body(pipeline):
    return pipeline.body_for("other")


@pytest.fixture(scope="module")
def scene(pipeline, body):
    """A heavy body in the A-pose, its renderer silhouette, projected vertices and keypoints."""
    truth = truth_for(body, "female", muscle=0.3, weight=0.8)
    v = truth.vertices
    cam = look_at_camera(v, "front", width=768, height=1024, focal_px=focal_px_from_35mm(50.0, 768, 1024),
                         distance=3.0, camera_height=1.35)
    mask = pipeline.renderer.render_mesh(v, body.faces, cam)[2]
    kp = body.keypoints_from_vertices(torch.as_tensor(v[None], dtype=body.dtype))[0].numpy()
    return {"mask": mask, "uv": cam.project(v), "kp_uv": cam.project(kp.astype(np.float64)),
            "labels": W.part_labels(body)}


def test_rasterize_matches_the_renderers_silhouette(body, scene):
    own = W.rasterize(scene["uv"], body.faces, scene["mask"].shape)
    mask = scene["mask"]
    assert (own & mask).sum() / (own | mask).sum() > 0.99
    a = W.mask_widths(mask, scene["uv"], scene["labels"], scene["kp_uv"])
    b = W.mask_widths(own, scene["uv"], scene["labels"], scene["kp_uv"])
    both = a.valid & b.valid
    assert both.sum() >= 15
    assert np.abs(a.width_px[both] - b.width_px[both]).mean() < 0.7
    assert abs(a.height_px - b.height_px) <= 2


def test_mask_widths_follow_the_mask(scene):
    """A mask grown by 3 px on each side reads 6 px wider in every trusted band; the arms stay
    out of the trunk's width (bands where an arm touches the trunk are not trusted)."""
    import cv2

    mask = scene["mask"]
    a = W.mask_widths(mask, scene["uv"], scene["labels"], scene["kp_uv"])
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    b = W.mask_widths(grown, scene["uv"], scene["labels"], scene["kp_uv"])
    both = a.valid & b.valid
    assert both.sum() >= 10
    assert np.median(b.width_px[both] - a.width_px[both]) == pytest.approx(6.0, abs=1.0)
    # the trunk is narrower than the whole silhouette's extent at shoulder height (arms excluded)
    ys, xs = np.nonzero(mask)
    assert np.nanmax(a.width_px) < 0.8 * (xs.max() - xs.min())


def test_limb_widths_read_the_mask_and_the_body_alike(body, scene):
    """Across the limbs, the neck and the shoulders (learned prior features): the renderer's
    silhouette and the body's own rasterised one read the same widths, and a mask grown by 3 px
    on each side reads 6 px wider across every limb that reads."""
    import cv2

    mask, kp_uv = scene["mask"], scene["kp_uv"]
    torso = W.band_edges(kp_uv)[1]
    a = W.limb_widths(mask, kp_uv, torso)
    own = W.limb_widths(W.rasterize(scene["uv"], body.faces, mask.shape), kp_uv, torso)
    assert a.shape == (W.N_LIMB_FEATURES,)
    read = np.isfinite(a) & np.isfinite(own)
    assert read.sum() >= 4  # in the A-pose: upper arm, forearm, calf, neck at least
    assert np.abs(a[read] - own[read]).max() < 2.0
    limbs = a[:len(W.LIMB_SITES) + 1]  # the limbs and the neck, not the trunk
    assert np.all((limbs[np.isfinite(limbs)] > 5) & (limbs[np.isfinite(limbs)] < 0.5 * torso))
    shoulders = a[len(W.LIMB_SITES) + 1:]  # across both shoulders: wider than the trunk below
    assert np.all(shoulders > 0.6 * torso) and shoulders[0] > shoulders[1]
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))  # 3 px in every direction
    grown = cv2.dilate(mask.astype(np.uint8), disc).astype(bool)
    b = W.limb_widths(grown, kp_uv, torso)
    both = np.isfinite(a) & np.isfinite(b)
    k = len(W.LIMB_SITES) + 1  # across a limb the walk meets the edge square on: 6 px
    assert np.allclose((b - a)[:k][both[:k]], 6.0, atol=1.5)
    assert np.all((b - a)[k:] >= 5.0)  # a row across the shoulders' slope meets it obliquely: more


def test_a_limb_against_the_trunk_does_not_read():
    """A walk across a limb that runs into the trunk (arm held against the body) gives nan, not
    the trunk's width; an arm apart from it reads its own width."""
    mask = np.zeros((400, 400), bool)
    mask[100:300, 150:250] = True  # trunk
    mask[100:300, 250:270] = True  # right arm, against the trunk (20 px wide)
    mask[100:300, 110:130] = True  # left arm, 20 px apart from it
    kp = np.zeros((17, 2))
    kp[5], kp[6] = (120, 100), (260, 100)  # shoulders (5: left side of the image here)
    kp[7], kp[8] = (120, 200), (260, 200)  # elbows
    kp[9], kp[10] = (120, 290), (260, 290)  # wrists
    kp[0] = (200, 40)
    w = W.limb_widths(mask, kp, torso_px=200.0)
    assert w[0] == pytest.approx(20.0, abs=1.0)  # the upper arm: only the free one read
    gone = mask.copy()
    gone[:, 100:140] = False  # no free arm: nothing reads
    assert np.isnan(W.limb_widths(gone, kp, torso_px=200.0)[0])


def test_detector_keypoints_shift_by_the_measured_table(body):
    v = truth_for(body, "male").vertices
    kp = body.keypoints_from_vertices(torch.as_tensor(v[None], dtype=body.dtype))
    moved = body.detector_keypoints(kp)[0].numpy()
    kp = kp[0].numpy()
    torso = np.linalg.norm(0.5 * (kp[5] + kp[6]) - 0.5 * (kp[L_HIP] + kp[R_HIP]))
    d = (moved - kp) / torso
    off = np.array(body.detector_offsets)
    # left is +x, right -x: outward means away from the mid-line on each side
    assert d[L_ANKLE, 0] == pytest.approx(off[L_ANKLE, 0], abs=1e-4)
    assert d[R_ANKLE, 0] == pytest.approx(-off[R_ANKLE, 0], abs=1e-4)
    assert d[L_ANKLE, 1] == pytest.approx(off[L_ANKLE, 1], abs=1e-4)
    assert d[L_HIP, 1] > 0.03 and d[L_ANKLE, 1] < -0.03  # detector hips higher, ankles lower
    assert np.allclose(d[:, 2], 0.0)


def test_a_mask_that_lost_the_feet_or_the_heads_top_is_read_to_the_bodys_end(body, scene):
    """The scale every width is read against is the silhouette's height: a mask that lost the
    feet (dark shoes on a dark floor) or the top of the head read every width that much wider.
    Where the mask's bottom comes up to the ankles or its top down to the eyes, the height runs
    to the end of the body's own rasterised silhouette there; a whole mask keeps its own extent,
    hair above the body included, even where the body as placed stands out of it (a height
    typed off: its scale is off, not the mask)."""
    mask, uv, kp_uv, labels = scene["mask"], scene["uv"], scene["kp_uv"], scene["labels"]
    raster = W.rasterize(uv, body.faces, mask.shape)
    rows = np.flatnonzero(mask.any(1))
    h = W.mask_widths(mask, uv, labels, kp_uv).height_px
    # where the detector reads them on whole masks: the ankles ~6 % of the height above the
    # soles, the eyes ~6 % below the top (the model's own ankle joints sit higher)
    kp = np.c_[kp_uv, np.ones(len(kp_uv))]
    kp[[15, 16], 1] = rows.max() - 0.06 * h
    kp[[1, 2], 1] = rows.min() + 0.06 * h

    no_feet = mask.copy()
    no_feet[rows.max() - int(0.06 * h):] = False  # the lowest 6 % gone
    no_head = mask.copy()
    no_head[:rows.min() + int(0.04 * h)] = False  # the top 4 % gone
    hair = mask.copy()
    hair[rows.min() - int(0.03 * h):rows.min(), 370:400] = True  # hair standing 3 % above the head
    tall = raster.copy()  # the body placed 3 % taller than the person at both ends
    tall[rows.min() - int(0.03 * h):rows.min(), 370:400] = True
    tall[rows.max():rows.max() + int(0.03 * h), 370:400] = True
    for cut, body_sil, expected in ((mask, raster, h), (no_feet, raster, h), (no_head, raster, h),
                                    (hair, raster, h + int(0.03 * h)), (mask, tall, h)):
        t = W.mask_widths(cut, uv, labels, kp_uv)
        if cut is no_feet or cut is no_head:
            assert t.height_px < h - 0.03 * h  # what the mask's extent alone says
        W.whole_height(t, cut, body_sil, kp, 0.3)
        assert t.height_px == pytest.approx(expected, abs=3.0)
    unseen = kp.copy()
    unseen[[15, 16], 2] = 0.0  # ankles not seen: nothing says the feet were lost
    t = W.mask_widths(no_feet, uv, labels, kp_uv)
    W.whole_height(t, no_feet, raster, unseen, 0.3)
    assert t.height_px < h - 0.03 * h

"""The one list of artefact names a run writes (the CLI, the worker and the API all use it)."""

AVATAR_GLB = "avatar_textured.glb"
SKIN_TEXTURE = "skin_texture.png"
BODY_ORIGINAL = "body_original.obj"
BODY_TPOSE = "body_tpose.obj"
BODY_APOSE = "body_apose.obj"
KEYPOINTS = "keypoints.json"
MEASUREMENTS = "measurements.json"
PREVIEW = "preview.png"
OVERLAY = "overlay.png"
TIMINGS = "timings.json"
SMPL_PARAMS = "smpl_params.npz"
ANNY_PARAMS = "anny_params.npz"


def params_name(body_model: str) -> str:
    return {"smpl": SMPL_PARAMS, "anny": ANNY_PARAMS}[body_model]


def expected(body_model: str) -> tuple[str, ...]:
    """Every file a successful run leaves in its output folder."""
    return (
        AVATAR_GLB, SKIN_TEXTURE, BODY_ORIGINAL, BODY_TPOSE, BODY_APOSE, params_name(body_model),
        KEYPOINTS, MEASUREMENTS, PREVIEW, OVERLAY, TIMINGS,
    )

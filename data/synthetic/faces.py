"""Identities for the synthetic benchmark: a real face, aligned, varied, and its action-unit displacement fields.

An identity is built once per subject: dlib landmarks on the source image, the similarity onto the canonical
points, a per-subject colour and geometry variation, a canvas (output frame plus a margin for head motion) in
canonical coordinates, and one smooth displacement field per action unit. A frame is then a linear combination of
those fields, so rendering never touches landmarks again. With `appearance.enabled`, the identity also holds one
shading layer per AU (data/synthetic/appearance.py), drawn from its own seed stream so the warp-only draws stay
as they were.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from data.common.assets import carphone_video
from data.common.errors import DataError
from data.common.video_io import read_frames
from data.faces import landmarks as lm
from data.synthetic import real_faces
from data.synthetic.appearance import au_layers

# Action units we animate. Expression AUs come first; blink and jaw drive the distractors.
ACTION_UNITS = ("brow_raise", "inner_brow_raise", "brow_lower", "eye_narrow",
                "lip_corner_pull", "lip_corner_depress", "lip_press", "blink", "jaw_open")
AU_INDEX = {name: i for i, name in enumerate(ACTION_UNITS)}
AU_REGIONS = {
    "brow_raise": ("brows",), "inner_brow_raise": ("brows",), "brow_lower": ("brows",),
    "eye_narrow": ("eyes",), "blink": ("eyes",),
    "lip_corner_pull": ("mouth",), "lip_corner_depress": ("mouth",), "lip_press": ("mouth",), "jaw_open": ("mouth",),
}
# Gaussian RBF width per AU in IOD units: lids are thin, so blink and eye narrowing need a tighter kernel.
AU_SIGMA = {"blink": 0.1, "eye_narrow": 0.15}
DEFAULT_SIGMA = 0.2
SHAPE_SIGMA = 0.35
# A ridge this large trades exact interpolation at the landmarks for no overshoot between close landmarks that
# move differently (inner vs outer lip): the fields stay within ~1.2x of the landmark moves and never ring.
RIDGE = 0.1

# Mirror pairs of the 68-point scheme, to reuse a face flipped left-right as another identity.
_MIRROR = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + list(range(27, 31)) + list(range(35, 30, -1))
           + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
           + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65])


@dataclass
class Identity:
    source: str
    flipped: bool
    base: np.ndarray        # uint8 [C, C, 3]: the neutral face on the canvas (canonical coords + margin)
    margin: int             # canvas pixel (x, y) = canonical (x - margin, y - margin)
    landmarks: np.ndarray   # float32 [68, 2]: neutral landmarks in output-frame (canonical) coordinates
    fields: np.ndarray      # float32 [K, C/2, C/2, 2]: displacement per unit amplitude of each AU, half resolution
    params: dict            # the colour / geometry draws, for the meta file
    shading: np.ndarray | None = None  # float32 [K, C, C]: each AU's shading at full activation; None = warp only

    @property
    def iod(self) -> float:
        return float(np.linalg.norm(self.landmarks[lm.LEFT_EYE].mean(0) - self.landmarks[lm.RIGHT_EYE].mean(0)))


def _read_rgb(path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError("cannot read as an image", path=path, fix="pass a JPEG or PNG file")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@functools.lru_cache(maxsize=16)
def source_image(name: str) -> np.ndarray:
    """RGB uint8 image of a built-in face ('astronaut', 'grace_hopper', 'carphone:N'), a real-face source
    (data.synthetic.real_faces, e.g. 'insightface_t1:2') or an image file."""
    if name == "astronaut":
        from skimage import data as skdata

        return np.ascontiguousarray(skdata.astronaut()[..., :3])
    if name == "grace_hopper":
        import matplotlib

        return _read_rgb(f"{matplotlib.get_data_path()}/sample_data/grace_hopper.jpg")
    if name.startswith("carphone:"):

        return read_frames(carphone_video(), [int(name.split(":", 1)[1])])[0]
    if real_faces.is_real(name):
        return real_faces.photograph(name)
    return _read_rgb(name)


@functools.lru_cache(maxsize=16)
def source_landmarks(name: str) -> np.ndarray:
    if real_faces.is_real(name):  # a photograph with several faces: the setup found which is which
        return real_faces.landmarks(name)
    image = source_image(name)
    found = lm.face_landmarks(image, upsample=1 if min(image.shape[:2]) < 300 else 0)
    if found is None:
        raise DataError("dlib finds no face in this image", path=name, field="identity.sources",
                        fix="use a frontal face image, at least ~60 px between the eyes")
    return found


def rbf_fields(points: np.ndarray, disp: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth fields [M, H, W, 2] that equal disp[m] [N, 2] at `points` [N, 2], decaying as Gaussians away from them."""
    d2 = ((points[:, None] - points[None]) ** 2).sum(-1)
    phi = np.exp(-d2 / (2 * sigma**2))
    m = disp.shape[0]
    rhs = disp.transpose(1, 0, 2).reshape(len(points), 2 * m)
    weights = np.linalg.solve(phi + RIDGE * np.eye(len(points)), rhs).astype(np.float32)
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    grid = np.stack([xs.ravel(), ys.ravel()], 1)
    pts = points.astype(np.float32)
    g2 = (grid**2).sum(1)[:, None] + (pts**2).sum(1)[None] - 2 * grid @ pts.T  # squared distances, one matmul
    kernel = np.exp(-np.maximum(g2, 0) / np.float32(2 * sigma**2))
    return (kernel @ weights).reshape(h, w, m, 2).transpose(2, 0, 1, 3)


def _unit(moves: dict[int, tuple[float, float]]) -> np.ndarray:
    disp = np.zeros((68, 2), np.float32)
    for idx, vec in moves.items():
        disp[idx] = vec
    return disp / np.abs(disp).max()


def au_displacements(landmarks: np.ndarray) -> np.ndarray:
    """Landmark displacements [K, 68, 2] in pixels for unit amplitude (1 IOD at the most-moved point).

    Blink is the exception: unit amplitude brings the upper lids onto the lower lids.
    Image x grows to the subject's left, y grows downwards.
    """
    iod = float(np.linalg.norm(landmarks[lm.LEFT_EYE].mean(0) - landmarks[lm.RIGHT_EYE].mean(0)))
    up, down = (0.0, -1.0), (0.0, 1.0)
    table = {
        "brow_raise": {**{i: up for i in range(18, 26)}, 17: (0, -0.7), 26: (0, -0.7),
                       37: (0, -0.15), 38: (0, -0.15), 43: (0, -0.15), 44: (0, -0.15)},
        "inner_brow_raise": {21: up, 22: up, 20: (0, -0.6), 23: (0, -0.6), 19: (0, -0.25), 24: (0, -0.25)},
        "brow_lower": {**{i: (0, 0.6) for i in range(17, 27)}, 20: (0.3, 0.9), 21: (0.45, 1.0),
                       22: (-0.45, 1.0), 23: (-0.3, 0.9)},
        "eye_narrow": {40: (0, -1.0), 41: (0, -1.0), 46: (0, -1.0), 47: (0, -1.0),
                       37: (0, 0.4), 38: (0, 0.4), 43: (0, 0.4), 44: (0, 0.4)},
        "lip_corner_pull": {48: (-0.8, -0.6), 54: (0.8, -0.6), 60: (-0.6, -0.4), 64: (0.6, -0.4),
                            49: (-0.4, -0.3), 53: (0.4, -0.3), 59: (-0.4, -0.2), 55: (0.4, -0.2)},
        "lip_corner_depress": {48: (-0.2, 1.0), 54: (0.2, 1.0), 60: (-0.1, 0.7), 64: (0.1, 0.7),
                               59: (0, 0.4), 55: (0, 0.4)},
        "lip_press": {**{i: (0, 0.6) for i in (49, 50, 51, 52, 53)}, **{i: (0, -0.6) for i in (55, 56, 57, 58, 59)},
                      **{i: (0, 0.2) for i in (61, 62, 63)}, **{i: (0, -0.2) for i in (65, 66, 67)},
                      48: (0.15, 0), 54: (-0.15, 0)},
        "jaw_open": {**{i: down for i in (7, 8, 9, 56, 57, 58, 65, 66, 67)},
                     **{i: (0, 0.6) for i in (6, 10, 55, 59)}, **{i: (0, 0.3) for i in (5, 11)}},
    }
    out = np.zeros((len(ACTION_UNITS), 68, 2), np.float32)
    for name, moves in table.items():
        out[AU_INDEX[name]] = _unit(moves) * iod
    blink = out[AU_INDEX["blink"]]
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        blink[upper] = landmarks[lower] - landmarks[upper]
    return out


FIELD_STEP = 2  # fields are smooth (sigma >= 4 px), so half resolution loses nothing and quarters the work


def au_fields(landmarks: np.ndarray, margin: int, canvas: int) -> np.ndarray:
    """Per-AU displacement fields [K, C/2, C/2, 2] (pixel units), sampled every FIELD_STEP canvas pixels."""
    iod = float(np.linalg.norm(landmarks[lm.LEFT_EYE].mean(0) - landmarks[lm.RIGHT_EYE].mean(0)))
    points = (landmarks.astype(np.float64) + margin) / FIELD_STEP
    disp = au_displacements(landmarks)
    n = -(-canvas // FIELD_STEP)
    fields = np.zeros((len(ACTION_UNITS), n, n, 2), np.float32)
    sigmas = sorted({AU_SIGMA.get(name, DEFAULT_SIGMA) for name in ACTION_UNITS})
    for sigma in sigmas:
        idx = [i for i, name in enumerate(ACTION_UNITS) if AU_SIGMA.get(name, DEFAULT_SIGMA) == sigma]
        fields[idx] = rbf_fields(points, disp[idx], (n, n), sigma * iod / FIELD_STEP)
    return fields


def _shape_displacement(landmarks: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """A per-subject face-shape change: jaw width, chin length, brow height (pixels, [68, 2])."""
    iod = float(np.linalg.norm(landmarks[lm.LEFT_EYE].mean(0) - landmarks[lm.RIGHT_EYE].mean(0)))
    jaw_w, chin_h, brow_h = rng.uniform(-amount, amount, 3) * iod
    eye_y = landmarks[36:48, 1].mean()
    chin_y = landmarks[8, 1]
    cx = landmarks[27:31, 0].mean()
    disp = np.zeros((68, 2), np.float32)
    for j in range(17):
        low = np.clip((landmarks[j, 1] - eye_y) / max(chin_y - eye_y, 1.0), 0, 1)
        disp[j] = (jaw_w * np.sign(landmarks[j, 0] - cx) * low, chin_h * low**2)
    disp[17:27, 1] = brow_h * 0.5
    return disp


def _similarity(rng: np.random.Generator, src_landmarks: np.ndarray, size: int, cfg) -> tuple[np.ndarray, dict]:
    """Source -> canonical affine: the alignment similarity, then a per-subject scale and aspect about the nose."""
    matrix = lm.similarity_to_canonical(src_landmarks, size).astype(np.float64)
    scale = rng.uniform(*cfg.scale)
    aspect = rng.uniform(*cfg.aspect)
    centre = lm.canonical_points(size)[2].astype(np.float64)
    stretch = np.diag([scale * np.sqrt(aspect), scale / np.sqrt(aspect)])
    linear = stretch @ matrix[:, :2]
    shift = stretch @ (matrix[:, 2] - centre) + centre
    return np.hstack([linear, shift[:, None]]), {"scale": float(scale), "aspect": float(aspect)}


def _colour(image: np.ndarray, rng: np.random.Generator, cfg) -> tuple[np.ndarray, dict]:
    gains = np.exp(rng.normal(0, cfg.white_balance, 3))
    tone = rng.uniform(*cfg.tone)
    gamma = rng.uniform(*cfg.gamma)
    out = 255.0 * (image / 255.0) ** gamma * (tone * gains)
    params = {"white_balance": [float(g) for g in gains], "tone": float(tone), "gamma": float(gamma)}
    return np.rint(np.clip(out, 0, 255)).astype(np.uint8), params


def build_identity(cfg, subject_index: int) -> Identity:
    """The subject's face: source = sources[i % n], mirrored on every other reuse, varied by its own seed."""
    import cv2

    sources = cfg.identity.sources
    source = sources[subject_index % len(sources)]
    flipped = (subject_index // len(sources)) % 2 == 1
    rng = np.random.default_rng([cfg.seed, 1, subject_index])
    image = source_image(source)
    src_lm = source_landmarks(source)
    if flipped:
        image = np.ascontiguousarray(image[:, ::-1])
        src_lm = np.stack([image.shape[1] - 1 - src_lm[:, 0], src_lm[:, 1]], 1)[_MIRROR].astype(np.float32)

    size = cfg.size
    margin = int(round(cfg.identity.margin * size))
    canvas = size + 2 * margin
    affine, geo = _similarity(rng, src_lm, size, cfg.identity)
    neutral = lm.transform_points(src_lm, affine.astype(np.float32)).astype(np.float64)
    shape_disp = _shape_displacement(neutral, rng, cfg.identity.shape_warp)
    iod = float(np.linalg.norm(neutral[lm.LEFT_EYE].mean(0) - neutral[lm.RIGHT_EYE].mean(0)))
    shape_field = rbf_fields(neutral + margin, shape_disp[None], (canvas, canvas), SHAPE_SIGMA * iod)[0]

    # Canvas pixel -> canonical (minus margin) -> undo the shape warp -> source pixel.
    ys, xs = np.mgrid[0:canvas, 0:canvas].astype(np.float32)
    cx = xs - margin - shape_field[..., 0]
    cy = ys - margin - shape_field[..., 1]
    inv = cv2.invertAffineTransform(affine.astype(np.float32))
    map_x = (inv[0, 0] * cx + inv[0, 1] * cy + inv[0, 2]).astype(np.float32)
    map_y = (inv[1, 0] * cx + inv[1, 1] * cy + inv[1, 2]).astype(np.float32)
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    base, colour = _colour(warped.astype(np.float32), rng, cfg.identity)

    landmarks = (neutral + shape_disp).astype(np.float32)
    params = {"source": source, "flipped": flipped, **geo, **colour,
              "shape": [[float(v) for v in row] for row in shape_disp[[0, 8, 16, 19]]]}
    identity = Identity(source, flipped, base, margin, landmarks, au_fields(landmarks, margin, canvas), params)
    return with_appearance(identity, cfg, subject_index) if cfg.appearance.enabled else identity


def with_appearance(identity: Identity, cfg, subject_index: int) -> Identity:
    """The identity with its AU shading layers (zero for AUs without one); their draws join its params."""
    canvas = identity.base.shape[0]
    rng = np.random.default_rng([cfg.seed, 3, subject_index])
    layers, params = au_layers(identity.landmarks, identity.margin, canvas, cfg.appearance, rng)
    shading = np.zeros((len(ACTION_UNITS), canvas, canvas), np.float32)
    for name, layer in layers.items():
        shading[AU_INDEX[name]] = layer
    return dataclasses.replace(identity, shading=shading, params={**identity.params, **params})

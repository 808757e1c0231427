"""Dense optical flow and the classical spotting cues built on it (DESIGN.md §5).

For a face video and a frame gap k: flow from frame i to frame i+k on greyscale frames, head motion removed
(the published nose-bridge mean, or by default an affine field fitted on nose + forehead), eyeballs masked out
(blinks), then per region (brows, eyes, mouth) flow magnitude and optical strain statistics (FEATURES).
The result is one curve per region and feature, indexed by i.

Region geometry comes from landmarks: one fixed set (the canonical aligned face) or one set per frame (tracked
faces); `RegionGeometry.from_landmarks` turns either into masks.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Sequence

import numpy as np

from data.common.errors import ConfigError, DataError
from data.common.video_io import read_frames, video_info
from data.faces import landmarks as lmk

METHODS = ("dis", "dis_fast", "farneback", "tvl1")
HEAD_MODELS = ("affine", "mean")
REGIONS = ("brows", "eyes", "mouth")
# Per region: mean flow magnitude, mean strain, and the same over the region's most-moving TOP_FRACTION of
# pixels ("_top"), which a small local motion (a lip corner) does not get diluted in.
FEATURES = ("flow", "strain", "flow_top", "strain_top")
TOP_FRACTION = 0.1

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def make_flow(method: str = "dis") -> FlowFn:
    """A function (prev_grey, next_grey) -> flow [H, W, 2] float32 (dx, dy) for one of METHODS."""
    import cv2

    if method in ("dis", "dis_fast"):
        # "dis" is OpenCV's MEDIUM preset; "dis_fast" its FAST preset (~3-6x quicker, coarser patches).
        preset = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM if method == "dis" else cv2.DISOPTICAL_FLOW_PRESET_FAST
        dis = cv2.DISOpticalFlow_create(preset)
        return lambda a, b: dis.calc(a, b, None)
    if method == "farneback":
        return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 11, 3, 5, 1.1, 0)
    if method == "tvl1":
        if not hasattr(cv2, "optflow"):
            raise ConfigError("TV-L1 needs cv2.optflow", field="method",
                              fix="pip install opencv-contrib-python-headless (instead of opencv-python)")
        # OpenCV's defaults take ~1 s per 160x160 pair here; fewer scales/warps/iterations and no median filter
        # are ~5x faster and still recover 0.3-4 px shifts to ~0.05 px (tests/test_flow.py).
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(nscales=3, warps=2, innnerIterations=15, outerIterations=3,
                                                      epsilon=0.02, medianFiltering=1)
        return lambda a, b: tvl1.calc(a, b, None)
    raise ConfigError(f"unknown flow method {method!r}", field="method", fix=f"use one of {list(METHODS)}")


def k_from_duration(fps: float, mean_duration_s: float) -> int:
    """The published frame gap k = int((mean duration in frames + 1) / 2), at least 1."""
    return max(1, int((mean_duration_s * fps + 1) / 2))


def optical_strain(flow: np.ndarray) -> np.ndarray:
    """Strain magnitude sqrt(e_xx^2 + e_yy^2 + 2 e_xy^2), e_xy = (du/dy + dv/dx) / 2, per pixel."""
    u, v = flow[..., 0], flow[..., 1]
    du_dy, du_dx = np.gradient(u)
    dv_dy, dv_dx = np.gradient(v)
    e_xy = 0.5 * (du_dy + dv_dx)
    return np.sqrt(du_dx ** 2 + dv_dy ** 2 + 2.0 * e_xy ** 2)


def affine_solver(reference: np.ndarray):
    """(ys, xs, pinv [3, N]) to fit a 6-parameter motion field on the pixels of `reference`, or None when the
    mask is too small or too thin to pin down rotation and scale. Compute once per mask, reuse per frame."""
    ys, xs = np.nonzero(reference)
    if len(xs) < 12 or np.ptp(xs) < 4 or np.ptp(ys) < 4:
        return None
    h, w = reference.shape
    # Centred coordinates keep the fit well conditioned.
    design = np.column_stack([np.ones(len(xs)), xs - w / 2.0, ys - h / 2.0])
    return ys, xs, np.linalg.pinv(design).astype(np.float32)


def remove_head_motion(flow: np.ndarray, reference: np.ndarray, model: str = "affine", solver=None) -> np.ndarray:
    """Subtract the head's motion, estimated on the rigid pixels of the boolean `reference` mask.

    "mean": the published correction, one translation (the mean flow of the nose-bridge patch).
    "affine": a 6-parameter motion field fitted by least squares on the reference pixels; it also removes
    the in-plane rotation and scaling of head moves, which a translation leaves as spurious motion that
    grows with the distance from the nose (brows, mouth). `solver`: affine_solver(reference), precomputed.
    """
    if not reference.any():
        return flow
    if model not in HEAD_MODELS:
        raise ConfigError(f"unknown head motion model {model!r}", field="head_model", fix="use 'affine' or 'mean'")
    solver = solver if solver is not None or model == "mean" else affine_solver(reference)
    if model == "mean" or solver is None:
        return flow - flow[reference].mean(axis=0)
    ys, xs, pinv = solver
    coef = pinv @ flow[ys, xs]  # [3, 2]: translation, d/dx, d/dy
    h, w = reference.shape
    x = (np.arange(w, dtype=np.float32) - w / 2.0)[None, :, None]
    y = (np.arange(h, dtype=np.float32) - h / 2.0)[:, None, None]
    return flow - (coef[0] + x * coef[1] + y * coef[2])


def _box_mask(shape: tuple[int, int], box) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = box
    mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return mask


def eye_mask(shape: tuple[int, int], polygons: Sequence[np.ndarray], dilate: int = 2) -> np.ndarray:
    """True on the eye openings (filled outlines, grown by `dilate` px so lid edges go too)."""
    import cv2

    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(mask, [np.asarray(p, dtype=np.int32) for p in polygons], 1)
    if dilate > 0:
        mask = cv2.dilate(mask, np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8))
    return mask.astype(bool)


def _iod(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[lmk.LEFT_EYE].mean(0) - points[lmk.RIGHT_EYE].mean(0)))


def _rigid_mask(points: np.ndarray, shape: tuple[int, int], boxes: dict) -> np.ndarray:
    """Pixels that move with the skull, not with expressions: the nose (landmarks 27-35) and a forehead band
    above the brow boxes (brow raises stay inside those boxes)."""
    nose = points[lmk.NOSE_BRIDGE:36]
    x0, y0 = nose.min(0)
    x1, y1 = nose.max(0)
    mask = _box_mask(shape, (int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))))
    iod = _iod(points)
    top = min(boxes["right_brow"][1], boxes["left_brow"][1])
    left, right = boxes["right_brow"][0], boxes["left_brow"][2]
    band = (left, int(top - 0.35 * iod), right, top)
    # The nostrils sit just above the mouth box: keep lip motion out of the head-motion fit.
    return (mask | _box_mask(shape, band)) & ~_box_mask(shape, boxes["mouth"])


@dataclasses.dataclass(frozen=True)
class RegionGeometry:
    """Boolean masks [H, W]: each region in REGIONS (eyeballs excluded) and the head-motion references."""

    regions: dict[str, np.ndarray]
    nose: np.ndarray  # the nose-bridge patch: the published translation-only reference
    rigid: np.ndarray  # nose bridge to tip plus a forehead band: wide enough to fit rotation and scale

    @functools.cached_property
    def rigid_solver(self):
        return affine_solver(self.rigid)

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray, size: tuple[int, int], scale: float = 1.0) -> RegionGeometry:
        """Masks for a (width, height) image from 68 landmarks given at scale 1 (multiplied by `scale`)."""
        points = np.asarray(landmarks, dtype=np.float32) * scale
        w, h = size
        boxes = lmk.region_boxes(points, (w, h))
        # Grown by ~0.08 IOD: a fixed landmark set only approximates each face's eyes, and lids must not leak.
        eyes = eye_mask((h, w), lmk.eye_polygons(points), dilate=max(1, round(0.08 * _iod(points))))

        def union(*names):
            return np.logical_or.reduce([_box_mask((h, w), boxes[n]) for n in names]) & ~eyes

        regions = {"brows": union("right_brow", "left_brow"), "eyes": union("right_eye", "left_eye"),
                   "mouth": union("mouth")}
        return cls(regions=regions, nose=_box_mask((h, w), boxes["nose"]),
                   rigid=_rigid_mask(points, (h, w), boxes) & ~eyes)


def region_values(flow: np.ndarray, geometry: RegionGeometry, head_model: str = "affine") -> np.ndarray:
    """[F, R]: each of FEATURES per region (REGIONS order), head motion removed."""
    if head_model == "mean":
        flow = remove_head_motion(flow, geometry.nose, "mean")
    else:
        flow = remove_head_motion(flow, geometry.rigid, head_model, geometry.rigid_solver)
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    strain = optical_strain(flow)
    out = np.zeros((len(FEATURES), len(REGIONS)), dtype=np.float32)
    for r, name in enumerate(REGIONS):
        mask = geometry.regions[name]
        if mask.any():
            for f, values in enumerate((magnitude[mask], strain[mask])):
                top = max(1, int(len(values) * TOP_FRACTION))
                out[f, r] = values.mean()
                out[f + 2, r] = np.partition(values, len(values) - top)[-top:].mean()
    return out


def region_curves(grey: np.ndarray, k: int, geometry: RegionGeometry | Sequence[RegionGeometry],
                  flow_fn: FlowFn, progress: Callable[[int], None] | None = None,
                  head_model: str = "affine") -> np.ndarray:
    """[F, T, R] float32 (FEATURES x frames x REGIONS): value at i describes the motion from frame i to
    frame i+k (zeros for i >= T-k).

    `grey` is uint8 [T, H, W]; `geometry` is one RegionGeometry or one per frame (frame i's is used for pair i).
    """
    t = len(grey)
    per_frame = not isinstance(geometry, RegionGeometry)
    if per_frame and len(geometry) != t:
        raise DataError(f"got {len(geometry)} region geometries for {t} frames", field="landmarks",
                        fix="pass one landmark set per frame, or one fixed set")
    out = np.zeros((len(FEATURES), t, len(REGIONS)), dtype=np.float32)
    for i in range(max(0, t - k)):
        flow = flow_fn(grey[i], grey[i + k])
        out[:, i] = region_values(flow, geometry[i] if per_frame else geometry, head_model)
        if progress is not None:
            progress(1)
    return out


def to_grey(frames: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """RGB uint8 [T, H, W, 3] -> grey uint8 [T, h, w], resized by `scale` (area filter when shrinking)."""
    import cv2

    out = []
    for frame in frames:
        g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if scale != 1.0:
            size = (max(8, round(g.shape[1] * scale)), max(8, round(g.shape[0] * scale)))
            g = cv2.resize(g, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        out.append(g)
    return np.stack(out) if out else np.zeros((0, 8, 8), np.uint8)


def read_grey(path, scale: float = 1.0, chunk: int = 256) -> tuple[np.ndarray, float]:
    """All frames of a video as grey uint8 [T, h, w] (decoded in chunks to bound RGB memory), and its fps."""

    info = video_info(path)
    parts = [to_grey(read_frames(path, range(s, min(s + chunk, info["num_frames"]))), scale)
             for s in range(0, info["num_frames"], chunk)]
    return np.concatenate(parts), info["fps"]


@functools.lru_cache(maxsize=4)
def canonical_landmarks(size: int = lmk.CANONICAL_SIZE) -> np.ndarray:
    """68 landmarks of a real face (skimage's astronaut) aligned to the canonical `size` x `size` crop.

    Stands in for per-video tracked landmarks on face-aligned videos: alignment puts every face's eyes and nose
    on the same canonical points, so one landmark set gives usable region boxes for all of them.
    """
    import cv2
    from skimage import data as skdata

    image = skdata.astronaut()
    first = lmk.face_landmarks(image)
    if first is None:
        raise DataError("no face found in skimage.data.astronaut()", fix="reinstall scikit-image")
    crop = cv2.warpAffine(image, lmk.similarity_to_canonical(first, size), (size, size), flags=cv2.INTER_LINEAR)
    aligned = lmk.face_landmarks(crop, upsample=1 if size >= 120 else 2)
    # Detection can fail on tiny crops; the transformed first-pass landmarks are then the best estimate.
    if aligned is None:
        aligned = lmk.transform_points(first, lmk.similarity_to_canonical(first, size))
    aligned.setflags(write=False)
    return aligned


def check_method(method: str, field: str = "method") -> str:
    if method not in METHODS:
        raise ConfigError(f"unknown flow method {method!r}", field=field, fix=f"use one of {list(METHODS)}")
    return method


def check_scale(scale: float, field: str = "scale") -> float:
    if not (0 < scale <= 4) or math.isnan(scale):
        raise ConfigError(f"scale must be in (0, 4], got {scale}", field=field)
    return scale

"""The stabilised stream: a face video on a canonical time grid, each frame aligned to the canonical face, grey.

Frozen encoder features of raw aligned clips are dominated by identity, and head pose and lighting swamp
expression motion. This module turns any face video into the stream the encoder should see:

1. **Canonical rate.** Frames are resampled onto a fixed time grid (`rate_hz`; grid step j is time j / rate_hz).
   A 30 fps video maps one-to-one; a 200 fps one takes the nearest source frame (or the mean of each bin), so
   everything downstream works in seconds and costs the same per second whatever the camera's rate. The frames
   and the face track come from data.faces.face_video (one decode, one track per video).
2. **Per-frame stabilisation.** dlib landmarks tracked through the video give a similarity per frame onto the
   canonical face (data.faces.align, reference="frame"); an ECC refinement on the rigid pixels (nose and
   forehead) against the video's median face removes the residual landmark jitter and the lag of the smoothed
   track during quick head moves.

What the encoder then sees of the stream (lighting normalisation, temporal contrast) is data.faces.motion_view.

The cache (`prepare`) holds per video the grid's source-frame indices, the landmarks, the alignment matrices
and the stabilised grey crops (uint8); lighting and contrast are cheap and applied on read. Its format and
`StabiliseConfig.key` are those of the research prototype (data/stabilise.py), so its caches stay valid.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from data.common.config import Config, setting
from data.common.errors import ConfigError, DataError
from data.common.npz_cache import read_npz, write_npz
from data.faces.align import align_landmarks, alignment_matrices
from data.faces.face_video import FaceVideo
from data.faces.track import track_faces
from data.flow.regions import RegionGeometry, canonical_landmarks

log = logging.getLogger(__name__)

# below this a "stabilised" stream would be mostly landmarks copied from other frames: refuse it
MIN_FACE_FRACTION = 0.5


def one_of(value, options, field: str) -> None:
    if value not in options:
        raise ConfigError(f"unknown {field} {value!r}", field=field, fix=f"use one of {list(options)}")


@dataclasses.dataclass
class StabiliseConfig(Config):
    """How the stabilised stream of one video is made (everything here goes into the cache key)."""
    rate_hz: float = setting(30.0, gt=0)  # canonical time grid
    resample: Literal["nearest", "mean"] = "nearest"  # how a faster camera's frames become grid frames
    size: int = setting(160, ge=32)  # crop side (the encoder's img_size)
    align_smooth: int = setting(5, ge=1)  # frames of temporal smoothing of the per-frame similarity
    align: Literal["frame", "none"] = "frame"  # "none": the grid frames as they are (the raw-input ablation)
    refine: Literal["none", "ecc"] = "ecc"  # ECC refinement on rigid pixels against the median face
    ecc_iterations: int = setting(30, ge=1)
    detect_every: int = setting(10, ge=1)  # dlib detection schedule (data.faces.track.track_faces)

    def check(self) -> None:
        one_of(self.resample, ("nearest", "mean"), "resample")
        one_of(self.align, ("frame", "none"), "align")
        one_of(self.refine, ("none", "ecc"), "refine")

    def key(self) -> str:
        # fields added after caches were written stay out of the key while at their default (caches stay valid)
        raw = {k: v for k, v in dataclasses.asdict(self).items()
               if not (k in _LATE_FIELDS and v == _LATE_FIELDS[k])}
        return json.dumps(raw, sort_keys=True)


_LATE_FIELDS = {"align": "frame"}


# ----------------------------------------------------------------------------------------------- time grid
def grid_length(num_frames: int, fps: float, rate_hz: float) -> int:
    """Grid steps covering the video: floor(duration * rate), at least 1."""
    return max(1, int(np.floor(num_frames / fps * rate_hz + 1e-6)))


def grid_bins(num_frames: int, fps: float, rate_hz: float) -> np.ndarray:
    """[N + 1] source-frame bin edges: grid step j stands for source frames edges[j] .. edges[j+1]-1
    (at least one frame each; a camera slower than the grid repeats frames)."""
    n = grid_length(num_frames, fps, rate_hz)
    edges = np.floor(np.arange(n + 1) * fps / rate_hz + 1e-6).astype(np.int64)
    edges = np.minimum(edges, num_frames)
    return edges


def grid_sources(num_frames: int, fps: float, rate_hz: float) -> np.ndarray:
    """[N] the source frame nearest to each grid time j / rate."""
    n = grid_length(num_frames, fps, rate_hz)
    return np.minimum(np.round(np.arange(n) * fps / rate_hz).astype(np.int64), num_frames - 1)


def seconds_to_frames(onset_s: float, offset_s: float, fps: float, num_frames: int) -> tuple[int, int]:
    """A [onset_s, offset_s) time span -> inclusive source-frame interval."""
    on = int(np.clip(round(onset_s * fps), 0, num_frames - 1))
    off = int(np.clip(round(offset_s * fps) - 1, on, num_frames - 1))
    return on, off


def grid_frames(frames: np.ndarray, fps: float, cfg: StabiliseConfig) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 [N, H, W, 3] grid frames, [N] source index of each) of a video's frames: the nearest source
    frame of each grid time, or (resample "mean", a camera faster than the grid) the mean of each step's bin."""
    total = len(frames)
    sources = grid_sources(total, fps, cfg.rate_hz)
    if not (cfg.resample == "mean" and fps > cfg.rate_hz * 1.01):
        return frames[sources], sources
    edges = grid_bins(total, fps, cfg.rate_hz)
    means = [np.rint(frames[lo:max(hi, lo + 1)].astype(np.float32).mean(0)).astype(np.uint8)
             for lo, hi in zip(edges[:-1], edges[1:])]
    return np.stack(means), sources


# ------------------------------------------------------------------------------------------ stabilisation
def rigid_mask(size: int) -> np.ndarray:
    """Pixels of the canonical crop that move with the skull (nose + forehead band, eyes excluded)."""
    return RegionGeometry.from_landmarks(canonical_landmarks(size), (size, size)).rigid


def to_grey(frames: np.ndarray) -> np.ndarray:
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])


def warp_grey(grey: np.ndarray, matrices: np.ndarray, size: int) -> np.ndarray:
    out = np.empty((len(grey), size, size), np.uint8)
    for i, (g, m) in enumerate(zip(grey, matrices)):
        out[i] = cv2.warpAffine(g, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 affine outer o inner."""
    a = np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]])
    return a[:2].astype(np.float32)


def ecc_refine(grey: np.ndarray, matrices: np.ndarray, size: int, iterations: int = 30) -> np.ndarray:
    """Per-frame Euclidean correction (rotation + shift) of the crops onto the median crop, fitted by ECC on
    the rigid pixels only, composed into the alignment matrices (one interpolation, not two).

    The landmark similarity carries dlib's jitter (a few tenths of a pixel, everywhere on the face) and the lag
    of its temporal smoothing during quick head moves; both look like motion to a contrast view.
    """
    crops = warp_grey(grey, matrices, size)
    reference = np.median(crops[:: max(1, len(crops) // 200)], axis=0).astype(np.float32)
    mask = rigid_mask(size).astype(np.uint8)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-4)
    out = matrices.copy()
    failed = 0
    for i, crop in enumerate(crops):
        warp = np.eye(2, 3, dtype=np.float32)
        try:
            _, warp = cv2.findTransformECC(reference, crop.astype(np.float32), warp, cv2.MOTION_EUCLIDEAN,
                                           criteria, mask, 5)
        except cv2.error:
            failed += 1
            continue
        # ECC gives warp W with crop(W x) ~ reference(x): the corrected crop samples the source at
        # M^-1 W x, i.e. the new source->crop matrix is W^-1 o M.
        inv = cv2.invertAffineTransform(warp)
        out[i] = _compose(inv, matrices[i])
    if failed:
        log.info("ECC did not converge on %d of %d frames (kept the landmark alignment there)", failed, len(crops))
    return out


@dataclasses.dataclass
class StableVideo:
    """One video's stabilised stream on the canonical grid."""
    video: str
    fps: float  # the source video's rate
    num_frames: int  # source frames
    rate_hz: float
    sources: np.ndarray  # [N] source frame of each grid step
    crops: np.ndarray  # uint8 [N, S, S] stabilised grey face
    landmarks: np.ndarray  # float32 [N, 68, 2] tracked landmarks in crop coordinates (NaN-free)
    raw_landmarks: np.ndarray  # float32 [N, 68, 2] tracked landmarks in grid-frame coordinates (NaN-free)
    matrices: np.ndarray  # float32 [N, 2, 3] grid frame -> crop

    @property
    def times(self) -> np.ndarray:
        return np.arange(len(self.crops)) / self.rate_hz


def _unaligned(frames: np.ndarray, cfg: StabiliseConfig):
    """The raw-input ablation: no tracking, the frames resized to the crop."""
    scale = cfg.size / frames.shape[2]
    matrices = np.repeat(np.array([[scale, 0, 0], [0, scale, 0]], np.float32)[None], len(frames), 0)
    lm = np.repeat(canonical_landmarks(cfg.size)[None], len(frames), 0)
    return warp_grey(to_grey(frames), matrices, cfg.size), lm, lm / scale, matrices, None


def stabilise(frames: np.ndarray, cfg: StabiliseConfig, track=None, path=None):
    """(crops uint8 [N, S, S], crop landmarks, frame landmarks, matrices, track) from RGB grid frames.

    Raises DataError naming `path` when a face is found in fewer than MIN_FACE_FRACTION of the frames."""
    if cfg.align == "none":
        return _unaligned(frames, cfg)
    if track is None:
        track = track_faces(frames, detect_every=cfg.detect_every)
    if track.face_fraction < MIN_FACE_FRACTION:
        raise DataError(f"a face was found in only {track.face_fraction:.0%} of the frames (need "
                        f"{MIN_FACE_FRACTION:.0%})", path=path,
                        fix="check the video shows one frontal face at least ~40 px wide throughout")
    matrices = alignment_matrices(track, cfg.size, "frame", cfg.align_smooth)
    grey = to_grey(frames)
    if cfg.refine == "ecc":
        matrices = ecc_refine(grey, matrices, cfg.size, cfg.ecc_iterations)
    crops = warp_grey(grey, matrices, cfg.size)
    filled = track.filled_landmarks()
    return crops, align_landmarks(filled, matrices), filled, matrices, track


def stabilise_video(source: FaceVideo, cfg: StabiliseConfig) -> StableVideo:
    """The stabilised stream of one video, computed from its frames and face track (nothing is written). The
    grid's landmarks are the video's track at each grid step's source frame."""
    frames, sources = grid_frames(source.frames, source.fps, cfg)
    track = source.track.subset(sources) if cfg.align != "none" else None
    crops, lm, raw_lm, matrices, _ = stabilise(frames, cfg, track, path=source.where)
    return StableVideo(source.name, source.fps, source.num_frames, cfg.rate_hz, sources, crops,
                       lm.astype(np.float32), raw_lm.astype(np.float32), matrices)


def cache_path(cache_dir, video: str) -> Path:
    return Path(cache_dir) / f"{video}.npz"


def _stable_arrays() -> tuple[str, ...]:
    """The cache's arrays: the config key, then StableVideo's fields under their own names."""
    return ("key", *(f.name for f in dataclasses.fields(StableVideo)))


def save_stable(path, sv: StableVideo, cfg: StabiliseConfig) -> None:
    write_npz(path, {"key": cfg.key(), **{name: getattr(sv, name) for name in _stable_arrays()[1:]}})


def load_stable(path, cfg: StabiliseConfig | None = None) -> StableVideo | None:
    """The cached stream, or None when absent, unreadable or made with another config."""
    z = read_npz(path, _stable_arrays(), lambda z: None if cfg is None or str(z["key"]) == cfg.key()
                 else "made with another stabilisation config")
    if z is None:
        return None
    return StableVideo(str(z["video"]), float(z["fps"]), int(z["num_frames"]), float(z["rate_hz"]), z["sources"],
                       z["crops"], z["landmarks"], z["raw_landmarks"], z["matrices"])


def prepare(source: FaceVideo, cfg: StabiliseConfig, cache_dir=None) -> StableVideo:
    """The stabilised stream of one video, from `cache_dir` when made with the same config (None: no cache)."""
    if cache_dir is None:
        return stabilise_video(source, cfg)
    cached = load_stable(cache_path(cache_dir, source.name), cfg)
    if cached is not None:
        return cached
    sv = stabilise_video(source, cfg)
    save_stable(cache_path(cache_dir, source.name), sv, cfg)
    return sv

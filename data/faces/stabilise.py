"""Motion-centric model input: a canonical-rate, per-frame stabilised, lighting-normalised grey face stream.

Frozen encoder features of raw aligned clips are dominated by identity, and head pose and lighting swamp
expression motion. This module turns any face video into the stream the encoder (and the flow cues) should see:

1. **Canonical rate.** Frames are resampled onto a fixed time grid (`rate_hz`; grid step j is time j / rate_hz).
   A 30 fps video maps one-to-one; a 200 fps one takes the nearest source frame (or the mean of each bin), so
   everything downstream works in seconds and costs the same per second whatever the camera's rate.
2. **Per-frame stabilisation.** dlib landmarks tracked on the grid frames give a similarity per frame onto the
   canonical face (data.faces.align, reference="frame"); an ECC refinement on the rigid pixels (nose and
   forehead) against the video's median face removes the residual landmark jitter and the lag of the smoothed
   track during quick head moves.
3. **Lighting normalisation** (`lighting_normalise`): "plane" fits log(frame / median face) over the face by a
   gain + linear gradient (the synthetic set's illumination model, a first-order model of real drifts) and
   divides it out; "gain" removes a global gain only; "highpass" divides by a blurred copy.
4. **Temporal contrast** (`contrast_view`): what one model window shows - the frames, each frame minus the
   window's first frame ("ref"), minus the window mean ("mean"), minus a causal running mean ("running"), minus
   the video's median face ("video"), minus the frame before ("diff"), or the normal-flow view ("normal").
   Static appearance (identity) cancels in all but "none".

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

from data.common.atomic import atomic_path
from data.common.config import Config, setting
from data.common.errors import ConfigError, DataError
from data.common.video_io import read_frames, video_info
from data.faces.align import align_landmarks, alignment_matrices
from data.faces.track import track_faces
from data.flow.regions import RegionGeometry, canonical_landmarks

log = logging.getLogger(__name__)

LIGHTING = ("none", "gain", "plane", "highpass")
CONTRAST = ("none", "ref", "mean", "running", "video", "diff", "normal")
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


def load_grid_frames(path, fps: float, cfg: StabiliseConfig, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 [N, H, W, 3] grid frames, [N] source index of each).

    The video is decoded sequentially in chunks (a faster camera's frames are never all in memory, and random
    access into H.264 would re-decode from the last keyframe for every grid frame: ~100x slower at 200 fps)."""
    total = video_info(path)["num_frames"]
    sources = grid_sources(total, fps, cfg.rate_hz)
    edges = grid_bins(total, fps, cfg.rate_hz)
    mean = cfg.resample == "mean" and fps > cfg.rate_hz * 1.01
    out = []
    for start in range(0, total, chunk):
        stop = min(total, start + chunk)
        frames = read_frames(path, range(start, stop))
        if not mean:
            pick = sources[(sources >= start) & (sources < stop)]
            out += list(frames[pick - start])
            continue
        for j in np.flatnonzero((edges[:-1] >= start) & (edges[:-1] < stop)):
            lo, hi = int(edges[j]), max(int(edges[j + 1]), int(edges[j]) + 1)
            if hi > stop:  # a bin across the chunk edge: decode it whole
                out.append(np.rint(read_frames(path, range(lo, hi)).astype(np.float32).mean(0)).astype(np.uint8))
            else:
                out.append(np.rint(frames[lo - start:hi - start].astype(np.float32).mean(0)).astype(np.uint8))
    return np.stack(out), sources


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


def stabilise_video(path, video: str, fps: float, cfg: StabiliseConfig) -> StableVideo:
    """The stabilised stream of one video file, computed (nothing is written)."""
    frames, sources = load_grid_frames(path, fps, cfg)
    crops, lm, raw_lm, matrices, _ = stabilise(frames, cfg, path=path)
    return StableVideo(video, fps, int(video_info(path)["num_frames"]), cfg.rate_hz, sources, crops,
                       lm.astype(np.float32), raw_lm.astype(np.float32), matrices)


def cache_path(cache_dir, video: str) -> Path:
    return Path(cache_dir) / f"{video}.npz"


def save_stable(path, sv: StableVideo, cfg: StabiliseConfig) -> None:
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, key=cfg.key(), video=sv.video, fps=sv.fps, num_frames=sv.num_frames, rate_hz=sv.rate_hz,
                 sources=sv.sources, crops=sv.crops, landmarks=sv.landmarks, raw_landmarks=sv.raw_landmarks,
                 matrices=sv.matrices)


def load_stable(path, cfg: StabiliseConfig | None = None) -> StableVideo | None:
    """The cached stream, or None when absent, unreadable or made with another config."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if cfg is not None and str(z["key"]) != cfg.key():
                return None
            return StableVideo(str(z["video"]), float(z["fps"]), int(z["num_frames"]), float(z["rate_hz"]),
                               z["sources"], z["crops"], z["landmarks"], z["raw_landmarks"], z["matrices"])
    except (OSError, ValueError, KeyError) as e:
        log.warning("recomputing %s: unreadable cache (%s)", path, e)
        return None


def prepare(path, video: str, fps: float, cfg: StabiliseConfig, cache_dir=None) -> StableVideo:
    """The stabilised stream of one video, from `cache_dir` when made with the same config (None: no cache)."""
    if cache_dir is None:
        return stabilise_video(path, video, fps, cfg)
    cached = load_stable(cache_path(cache_dir, video), cfg)
    if cached is not None:
        return cached
    sv = stabilise_video(path, video, fps, cfg)
    save_stable(cache_path(cache_dir, video), sv, cfg)
    return sv


# ---------------------------------------------------------------------------------------------- lighting
def face_mask(size: int, landmarks: np.ndarray | None = None) -> np.ndarray:
    """A boolean ellipse over the canonical face (where lighting is fitted), [S, S]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return ((xx - 0.5) / 0.36) ** 2 + ((yy - 0.55) / 0.45) ** 2 <= 1.0


def lighting_normalise(crops: np.ndarray, method: str = "plane", reference: np.ndarray | None = None,
                       mask: np.ndarray | None = None) -> np.ndarray:
    """float32 [N, S, S] grey in [0, 255] with the illumination change relative to `reference` removed.

    "plane": per frame, log(frame / reference) over the face mask is fitted by a + b x + c y (least squares, two
    rounds, the second ignoring the 20% largest residuals so expression changes do not bend the fit) and the
    frame is divided by exp(plane). "gain": a only. "highpass": frame / blur(frame) * mean (reference-free).
    """
    if method not in LIGHTING:
        raise ConfigError(f"unknown lighting {method!r}", field="lighting", fix=f"use one of {LIGHTING}")
    x = crops.astype(np.float32)
    if method == "none":
        return x
    n, s, _ = x.shape
    if method == "highpass":
        out = np.empty_like(x)
        for i in range(n):
            blur = cv2.GaussianBlur(x[i], (0, 0), s / 16)
            out[i] = x[i] / np.maximum(blur, 4.0) * 128.0
        return out
    if reference is None:
        reference = np.median(x[:: max(1, n // 200)], axis=0)
    if mask is None:
        mask = face_mask(s)
    ys, xs = np.nonzero(mask)
    design = np.column_stack([np.ones(len(xs)), (xs - s / 2) / s, (ys - s / 2) / s])
    if method == "gain":
        design = design[:, :1]
    log_ref = np.log(np.maximum(reference[ys, xs], 4.0))
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    full = np.stack([np.ones((s, s), np.float32), (xx - s / 2) / s, (yy - s / 2) / s])[:design.shape[1]]
    out = np.empty_like(x)
    for i in range(n):
        ratio = np.log(np.maximum(x[i][ys, xs], 4.0)) - log_ref
        coef, *_ = np.linalg.lstsq(design, ratio, rcond=None)
        resid = np.abs(ratio - design @ coef)
        keep = resid <= np.quantile(resid, 0.8)
        coef, *_ = np.linalg.lstsq(design[keep], ratio[keep], rcond=None)
        out[i] = x[i] / np.exp(np.tensordot(coef.astype(np.float32), full, axes=1))
    return out


# ---------------------------------------------------------------------------------------------- contrast
def contrast_view(clip: np.ndarray, method: str, video_reference: np.ndarray | None = None,
                  running: np.ndarray | None = None, diff_lag: int = 1) -> np.ndarray:
    """One window's frames float32 [T, S, S] -> its temporal-contrast view [T, S, S].

    "ref": minus the window's first frame (what changed since the window began); "mean": minus the window's
    mean frame; "video": minus the video's median face; "running": minus a causal running mean supplied per
    frame (`running`, same shape); "diff": minus the frame `diff_lag` before (the first frames repeat);
    "normal": the normal-flow view against the first frame (normal_motion, signed);
    "none": the frames themselves.
    """
    if method == "none":
        return clip
    if method == "ref":
        return clip - clip[:1]
    if method == "mean":
        return clip - clip.mean(0, keepdims=True)
    if method == "video":
        if video_reference is None:
            raise DataError("contrast 'video' needs the video's median face", field="contrast")
        return clip - video_reference[None]
    if method == "running":
        if running is None:
            raise DataError("contrast 'running' needs the running mean frames", field="contrast")
        return clip - running
    if method == "diff":
        prev = np.concatenate([np.repeat(clip[:1], diff_lag, 0), clip[:-diff_lag]])
        return clip - prev
    if method == "normal":
        return normal_motion(clip, clip[0])
    raise ConfigError(f"unknown contrast {method!r}", field="contrast", fix=f"use one of {CONTRAST}")


def normal_motion(clip: np.ndarray, reference: np.ndarray, floor: float = 4.0) -> np.ndarray:
    """Normal-flow magnitude (px) of each frame against `reference`: |frame - reference| / |grad reference|,
    regularised by `floor` grey levels per pixel (optical-flow constraint I_t + grad(I).v = 0). A pixel difference
    scales with the local texture, so a 1 px lip-corner shift on weak texture stays below the noise of strong edges;
    dividing by the gradient turns it into a displacement, as flow does, without computing flow."""
    gx = cv2.Sobel(reference, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(reference, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    grad2 = gx * gx + gy * gy
    diff = clip - reference[None]
    return (diff * np.sqrt(grad2)[None] / (grad2[None] + floor * floor)).astype(np.float32) * 16.0


def running_mean(frames: np.ndarray, tau_steps: float) -> np.ndarray:
    """Causal exponential mean of float frames [N, S, S] with time constant `tau_steps`; out[i] excludes i."""
    alpha = 1.0 / max(1.0, tau_steps)
    out = np.empty_like(frames)
    acc = frames[0].astype(np.float32).copy()
    for i in range(len(frames)):
        out[i] = acc
        acc += alpha * (frames[i] - acc)
    return out

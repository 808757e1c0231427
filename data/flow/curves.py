"""Per-video region motion curves (data.flow.regions), computed once and cached as one .npz per video.

The cache holds, for every frame gap k asked for so far, `k{K}` = float32 [F, T, R] (feature x frame x region;
data.flow.regions.FEATURES and REGIONS) plus the parameters that produced it. A later call with the same
parameters computes only the gaps it lacks. With a tracked landmark source (`tracked`, `tracked-frame`) the face
is tracked through the video (data.faces.face_video: one decode and one track serve the flow and the landmarks)
and the track is cached beside the curves folder (track_cache_path), so computing more gaps later does not track
again.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.common.errors import DataError
from data.common.npz_cache import read_npz, write_npz
from data.common.video_io import read_frames
from data.faces import landmarks as lmk
from data.faces.face_video import FaceVideo
from data.flow import regions as fl

log = logging.getLogger(__name__)

# Mean expression durations (s) behind the published k: CAS(ME)^2 micro k=6 and macro k=18 at 30 fps.
DEFAULT_DURATIONS = {"micro": 0.37, "macro": 1.2}
LANDMARK_SOURCES = ("auto", "canonical", "first-frame", "tracked", "tracked-frame")
# Sources that track the face through the whole video (data.faces.track): "tracked" = the per-video median of the
# tracked landmarks (stable boxes on this face), "tracked-frame" = each frame's own landmarks (boxes follow the head).
TRACKED_SOURCES = ("tracked", "tracked-frame")


def default_ks(fps: float) -> list[int]:
    return sorted({fl.k_from_duration(fps, s) for s in DEFAULT_DURATIONS.values()})


def video_landmarks(first_frame: np.ndarray, rgb_size: tuple[int, int], source: str, path) -> np.ndarray:
    """Landmarks at full resolution: the canonical face (aligned square crops) or dlib on the first frame."""
    w, h = rgb_size
    if source == "canonical" or (source == "auto" and w == h):
        if w != h:
            raise DataError(f"canonical landmarks need a square aligned face video, got {w}x{h}", path=path,
                            field="landmarks", fix="align faces first (python -m data faces) or use first-frame")
        return fl.canonical_landmarks(w)
    found = lmk.face_landmarks(first_frame, upsample=2 if min(w, h) < 300 else 1)
    if found is None:
        raise DataError("no face found in the first frame", path=path, field="landmarks",
                        fix="align faces first (python -m data faces) or pass --landmarks canonical")
    return found


def track_cache_path(npz_path) -> Path:
    """Where the face track behind a tracked source is cached: a `faces` folder beside the curves folder
    (OUT/curves/<video>.npz -> OUT/faces/<video>.npz), so listing the curves folder shows only curves."""
    npz_path = Path(npz_path)
    return npz_path.parent.parent / "faces" / npz_path.name


def tracked_landmarks(path, track_path, source: str = "tracked") -> np.ndarray:
    """Full-resolution landmarks from the tracked face: [68, 2] median ("tracked") or [T, 68, 2] per frame
    ("tracked-frame"); frames without a face take the nearest frame's landmarks. The track is cached at
    `track_path`."""
    return track_landmarks(FaceVideo(path, track_cache=track_path).track, source, path)


def track_landmarks(track, source: str, name) -> np.ndarray:
    """tracked_landmarks of a FaceTrack already at hand."""
    missing = 1.0 - track.face_fraction
    level = logging.WARNING if missing > 0.5 else logging.INFO
    log.log(level, "%s: no face in %.1f%% of %d frames (their regions come from the nearest frame with a face)",
            name, 100 * missing, track.num_frames)
    filled = track.filled_landmarks()  # raises DataError (naming the video) when no frame has a face
    if source == "tracked-frame":
        return filled
    # The median over frames with a face: one set on this face, unmoved by expressions, blinks and jitter.
    return np.median(filled[track.found], axis=0).astype(np.float32)


def _landmark_key(landmarks) -> str:
    if isinstance(landmarks, str):
        if landmarks not in LANDMARK_SOURCES:
            raise DataError(f"unknown landmark source {landmarks!r}", field="landmarks",
                            fix=f"use one of {list(LANDMARK_SOURCES)} or pass an array")
        return landmarks
    data = np.ascontiguousarray(landmarks, dtype=np.float32)
    return "array:" + hashlib.sha1(data.tobytes() + str(data.shape).encode()).hexdigest()[:16]


class _PerFrameGeometry(Sequence):
    """RegionGeometry per frame, built when asked for: all masks of a long video at once would take GBs."""

    def __init__(self, points: np.ndarray, size: tuple[int, int], scale: float):
        self.points, self.size, self.scale = points, size, scale

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i: int) -> fl.RegionGeometry:
        return fl.RegionGeometry.from_landmarks(self.points[i], self.size, self.scale)


def _geometry(path, landmarks, grey: np.ndarray, scale: float, first: np.ndarray | None = None):
    """Region masks at the flow's resolution: from a landmark source name, one [68, 2] set, or [T, 68, 2].
    `first`: the first RGB frame when at hand (else decoded from `path`)."""
    size = (grey.shape[2], grey.shape[1])
    if isinstance(landmarks, str):
        if first is None:
            first = read_frames(path, [0])[0]  # landmarks are found at full resolution, then scaled
        points = video_landmarks(first, (first.shape[1], first.shape[0]), landmarks, path)
        return fl.RegionGeometry.from_landmarks(points, size, scale)
    points = np.asarray(landmarks, dtype=np.float32)
    if points.shape == (68, 2):
        return fl.RegionGeometry.from_landmarks(points, size, scale)
    if points.ndim == 3 and points.shape[1:] == (68, 2) and len(points) == len(grey):
        return _PerFrameGeometry(points, size, scale)
    raise DataError(f"landmarks of shape {points.shape} do not fit {len(grey)} frames", path=path,
                    field="landmarks", fix="pass [68, 2] or [num_frames, 68, 2]")


def _params(method: str, scale: float, landmarks: str, head_model: str) -> dict:
    return {"method": method, "scale": float(scale), "landmarks": landmarks, "head_model": head_model,
            "features": list(fl.FEATURES)}


def load_curves(npz_path, params: dict | None = None) -> dict | None:
    """The cached curves as a dict (curves: k -> [F, T, R] array, fps, num_frames, params), or None when
    absent, unreadable or made with other parameters (any k: a cache holds whichever gaps were asked for so far)."""
    z = read_npz(npz_path, ("params", "fps", "num_frames", "ks"), lambda z: _stale(z, params))
    if z is None:
        return None
    return {"curves": {int(k): z[f"k{k}"] for k in z["ks"]}, "fps": float(z["fps"]),
            "num_frames": int(z["num_frames"]), "params": json.loads(str(z["params"]))}


def _stale(z: dict[str, np.ndarray], params: dict | None) -> str | None:
    """Why the cached arrays `z` do not serve `params` (None: they do); a listed gap without its curve is damage."""
    missing = [f"k{k}" for k in z["ks"] if f"k{k}" not in z]
    if missing:
        raise KeyError(f"no {', '.join(missing)}")
    return None if params is None or json.loads(str(z["params"])) == params else "made with other flow parameters"


def save_curves(npz_path, curves: dict[int, np.ndarray], fps: float, num_frames: int, params: dict) -> None:
    write_npz(npz_path, {"params": json.dumps(params), "fps": fps, "num_frames": num_frames,
                         "ks": np.array(sorted(curves), dtype=np.int64), "regions": np.array(fl.REGIONS),
                         **{f"k{k}": v for k, v in curves.items()}}, compressed=True)


def _check_params(method: str, scale: float, head_model: str) -> None:
    fl.check_method(method)
    fl.check_scale(scale)
    if head_model not in fl.HEAD_MODELS:
        raise DataError(f"unknown head motion model {head_model!r}", field="head_model",
                        fix=f"use one of {list(fl.HEAD_MODELS)}")


def _warn_short(num_frames: int, ks, name) -> None:
    """A gap as long as the video has no frame pair: its curve is all zero, which a user should hear about."""
    short = sorted({int(k) for k in ks if k >= num_frames})
    if short:
        log.warning("%s: %d frame(s), too short for frame gap(s) k=%s: no two frames are that far apart, so "
                    "those curves are all zero", name, num_frames, ", ".join(map(str, short)))


def _compute(grey: np.ndarray, ks, geometry, method: str, head_model: str, bar: tqdm | None) -> dict:
    """{k: [F, T, R]} for the gaps `ks`."""
    flow_fn = fl.make_flow(method)
    progress = bar.update if bar is not None else None
    return {k: fl.region_curves(grey, k, geometry, flow_fn, progress, head_model) for k in ks}


def video_curves(source, npz_path, ks=None, method: str = "dis", scale: float = 1.0, landmarks="auto",
                 bar: tqdm | None = None, head_model: str = "affine", track_path=None) -> dict:
    """Compute (or load from `npz_path`) the region curves of one video; `ks=None` derives k from its fps.

    source: a data.faces.face_video.FaceVideo (its frames and face track, decoded and tracked once for every
    consumer) or a video path (then a FaceVideo of it, its track cached at `track_path`, by default
    track_cache_path(npz_path)). `landmarks`: a LANDMARK_SOURCES name (a TRACKED_SOURCES name reads the face
    track), or an array at full resolution: [68, 2] fixed or [T, 68, 2] tracked.
    The result's "computed" lists the gaps computed now (empty: all came from the cache).
    """
    _check_params(method, scale, head_model)
    if not isinstance(source, FaceVideo):
        source = FaceVideo(source, track_cache=track_path or track_cache_path(npz_path))
    if ks is None:
        ks = default_ks(source.fps)
    params = _params(method, scale, _landmark_key(landmarks), head_model)
    cached = load_curves(npz_path, params) or {"curves": {}}
    missing = sorted(set(int(k) for k in ks) - set(cached["curves"]))
    if not missing:
        _warn_short(cached["num_frames"], ks, source.where)
        return {**cached, "computed": []}
    grey = fl.to_grey(source.frames, scale)
    _warn_short(len(grey), ks, source.where)
    if isinstance(landmarks, str) and landmarks in TRACKED_SOURCES:
        landmarks = track_landmarks(source.track, landmarks, source.where)
    geometry = _geometry(source.where, landmarks, grey, scale, first=source.frames[0])
    curves = {**cached["curves"], **_compute(grey, missing, geometry, method, head_model, bar)}
    save_curves(npz_path, curves, source.fps, len(grey), params)
    return {"curves": curves, "fps": source.fps, "num_frames": len(grey), "params": params, "computed": missing}


def frame_curves(frames: np.ndarray, fps: float, ks, method: str = "dis", scale: float = 1.0, landmarks="auto",
                 head_model: str = "affine", name: str = "<frames>", bar: tqdm | None = None) -> dict:
    """video_curves of RGB frames held in memory [T, H, W, 3]: nothing decoded, cached or written. The cues
    then see exactly these frames, not a lossy re-encoding of them. `name` names the video; `bar` counts the
    flow fields computed."""
    _check_params(method, scale, head_model)
    source = FaceVideo(frames=frames, fps=fps, name=name)
    grey = fl.to_grey(frames, scale)
    _warn_short(len(grey), ks, name)
    if isinstance(landmarks, str) and landmarks in TRACKED_SOURCES:
        landmarks = track_landmarks(source.track, landmarks, name)
    geometry = _geometry(name, landmarks, grey, scale, first=frames[0])
    ks = sorted({int(k) for k in ks})
    return {"curves": _compute(grey, ks, geometry, method, head_model, bar), "fps": float(fps),
            "num_frames": len(grey), "params": _params(method, scale, _landmark_key(landmarks), head_model),
            "computed": ks}

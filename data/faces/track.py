"""Face tracking through a video: dlib detection on a schedule, 68 landmarks every frame, temporal smoothing.

Detection (HOG, ~20 ms on a 2x upsampled 176x144 frame) runs every `detect_every` frames and whenever the
track looks lost; in between, the box is propagated from the previous frame's landmarks using the box/landmark
relation seen at the last detection, so the predictor always gets a detector-like box (~2 ms per frame).
Frames without a face are flagged (found=False, NaN landmarks), never an error.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from data.common.errors import ConfigError, DataError
from data.common.frames import FrameFolder
from data.common.npz_cache import write_npz
from data.common.video_io import read_frames, video_info
from data.faces import landmarks as lmk

log = logging.getLogger(__name__)

TRACK_ARRAYS = ("landmarks", "raw_landmarks", "boxes", "found", "detected")


@dataclasses.dataclass
class FaceTrack:
    """Per-frame face geometry in source-frame pixel coordinates; NaN where no face was found.

    landmarks: float32 [T, 68, 2], lightly smoothed (centred `smooth`-frame window: keeps micro-expressions).
    raw_landmarks: float32 [T, 68, 2], the predictor's output per frame, unsmoothed.
    boxes: float32 [T, 4] face box (x0, y0, x1, y1), smoothed harder (`box_smooth`): stable, not expressive.
    found: bool [T]; detected: bool [T] (True: the detector placed the box this frame; False: propagated).
    """

    landmarks: np.ndarray
    raw_landmarks: np.ndarray
    boxes: np.ndarray
    found: np.ndarray
    detected: np.ndarray
    frame_size: tuple[int, int]  # (width, height)
    source: str = ""

    @property
    def num_frames(self) -> int:
        return len(self.found)

    @property
    def face_fraction(self) -> float:
        return float(self.found.mean()) if len(self.found) else 0.0

    def filled_landmarks(self) -> np.ndarray:
        """landmarks with each missing frame taken from the nearest found frame (for consumers that need
        a value everywhere, e.g. region boxes); raises DataError when no frame has a face."""
        return fill_nearest(self.landmarks, self.found, self.source)

    def subset(self, frames: np.ndarray) -> FaceTrack:
        """The track at the frame indices `frames` (e.g. a time grid's source frames)."""
        return dataclasses.replace(self, **{name: getattr(self, name)[frames] for name in TRACK_ARRAYS})

    def summary(self) -> dict:
        return {"source": self.source, "num_frames": self.num_frames, "width": self.frame_size[0],
                "height": self.frame_size[1], "face_fraction": round(self.face_fraction, 6),
                "frames_found": int(self.found.sum()), "frames_detected": int(self.detected.sum())}


def fill_nearest(values: np.ndarray, valid: np.ndarray, source: str = "") -> np.ndarray:
    """Copy of values [T, ...] where invalid rows take the nearest valid row (earlier one on ties)."""
    idx = np.flatnonzero(valid)
    if not len(idx):
        raise DataError("no face found in any frame", path=source or None,
                        fix="check the video shows a frontal face at least ~40 px wide")
    pos = np.clip(np.searchsorted(idx, np.arange(len(valid))), 1, max(len(idx) - 1, 1))
    before, after = idx[pos - 1], idx[np.minimum(pos, len(idx) - 1)]
    nearest = np.where(np.arange(len(valid)) - before <= after - np.arange(len(valid)), before, after)
    return values[nearest].copy()


def centred_mean(values: np.ndarray, valid: np.ndarray, window: int) -> np.ndarray:
    """Triangular-weighted centred moving average over axis 0 using only valid rows; invalid rows become NaN.

    Zero lag (offline), and a 3-frame window keeps ~83% of the peak of a 7-frame micro-expression pulse while
    cutting i.i.d. jitter to ~61%.
    """
    values = np.asarray(values, np.float64)
    out = np.full(values.shape, np.nan)
    if window <= 1:
        out[valid] = values[valid]
        return out.astype(np.float32)
    half = window // 2
    weights = np.array([half + 1 - abs(k) for k in range(-half, half + 1)], np.float64)
    mask = valid.astype(np.float64).reshape((-1,) + (1,) * (values.ndim - 1))
    clean = np.where(mask > 0, values, 0.0)
    total = np.zeros(values.shape)
    norm = np.zeros(mask.shape)
    n = len(values)
    for k, w in zip(range(-half, half + 1), weights):
        lo, hi = max(0, -k), min(n, n - k)  # out[t] += w * values[t + k] for t in [lo, hi)
        if hi <= lo:
            continue  # a video shorter than the window: this offset reaches past both ends
        total[lo:hi] += w * clean[lo + k:hi + k]
        norm[lo:hi] += w * mask[lo + k:hi + k]
    out[valid] = (total / np.maximum(norm, 1e-12))[valid]
    return out.astype(np.float32)


DETECT_MIN_SIDE = 400  # the short side HOG detection works at: faces of >= ~80 px, no more pixels than needed


def auto_upsample(height: int, width: int) -> int:
    """HOG needs faces of ~80 px: upsample small frames (176x144 faces are ~45 px) once, large ones not at all."""
    return 1 if min(height, width) < DETECT_MIN_SIDE else 0


def auto_shrink(height: int, width: int) -> int:
    """The integer factor that brings a large frame's short side down to DETECT_MIN_SIDE..2x for detection:
    HOG cost grows with the pixels (~650 ms on a 2040x1088 SAMM-LV frame, ~30 ms at half size) while the face
    it finds there is still ~200 px wide. Landmarks are fitted on the full frame."""
    return max(1, min(height, width) // DETECT_MIN_SIDE)


def _box_relation(box, landmarks: np.ndarray) -> np.ndarray:
    """The detector box relative to the landmarks' centre and scale, to rebuild such a box later."""
    centre, scale = landmarks.mean(0), float(landmarks.std(0).mean())
    x0, y0, x1, y1 = box
    return np.array([((x0 + x1) / 2 - centre[0]) / scale, ((y0 + y1) / 2 - centre[1]) / scale,
                     (x1 - x0) / scale, (y1 - y0) / scale])


def _box_from_landmarks(landmarks: np.ndarray, relation: np.ndarray) -> tuple[float, float, float, float]:
    centre, scale = landmarks.mean(0), float(landmarks.std(0).mean())
    cx, cy = centre + relation[:2] * scale
    w, h = relation[2:] * scale
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def plausible(landmarks: np.ndarray, box, frame_shape, previous: np.ndarray | None = None) -> bool:
    """Cheap sanity checks on a landmark fit: the predictor always returns 68 points, even on a wall."""
    if not np.isfinite(landmarks).all():
        return False
    width = box[2] - box[0]
    spread = landmarks.max(0) - landmarks.min(0)
    centre = landmarks.mean(0)
    iod = float(np.linalg.norm(landmarks[lmk.LEFT_EYE].mean(0) - landmarks[lmk.RIGHT_EYE].mean(0)))
    h, w = frame_shape[:2]
    checks = [0.4 * width < spread[0] < 2.5 * width, iod > 0.2 * width,
              box[0] - 0.25 * width < centre[0] < box[2] + 0.25 * width,
              box[1] - 0.25 * width < centre[1] < box[3] + 0.25 * width,
              0 <= centre[0] < w, 0 <= centre[1] < h]
    if previous is not None:  # a jump of a third of the face in one frame means the fit slid off
        checks.append(float(np.linalg.norm(landmarks - previous, axis=1).mean()) < 0.3 * width)
    return all(checks)


PATCH_SIZE = 32
MIN_SIMILARITY = 0.25  # carphone frames score >= 0.4 (median 0.8) against their last detection; noise ~0


def face_patch(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
    """The aligned face as a small zero-mean unit-norm grey vector (None for a flat patch): an appearance
    fingerprint, because the predictor happily fits a face onto a wall once the person has left."""
    import cv2

    matrix = lmk.rigid_similarity_to_canonical(landmarks, PATCH_SIZE)
    patch = cv2.warpAffine(frame, matrix, (PATCH_SIZE, PATCH_SIZE), flags=cv2.INTER_LINEAR)
    patch = patch.astype(np.float32).reshape(PATCH_SIZE * PATCH_SIZE, -1).mean(1)  # grey after the warp: cheap
    patch -= patch.mean()
    norm = float(np.linalg.norm(patch))
    return patch / norm if norm > 1e-3 * PATCH_SIZE else None


class Tracker:
    """Frame-by-frame state machine: detect when due, else propagate; re-detect when the fit looks wrong.
    `track_faces` runs it over a whole video; the live spotter (spotting.live) feeds it one frame at a time."""

    def __init__(self, detect_every: int, upsample: int | None, max_missed: int):
        self.detect_every, self.upsample, self.max_missed = detect_every, upsample, max_missed
        self.last: np.ndarray | None = None  # landmarks of the last found frame
        self.relation: np.ndarray | None = None
        self.template: np.ndarray | None = None  # face_patch at the last detection
        self.since_detect = 0
        self.missed = 0  # consecutive frames whose detection attempt failed while propagating

    def _detect(self, frame: np.ndarray):
        boxes = self._detect_boxes(frame)
        if not boxes:
            return None
        if self.last is not None and self.relation is not None:  # stay on the tracked face
            guess = _box_from_landmarks(self.last, self.relation)
            best = max(boxes, key=lambda b: _iou(b, guess))
            if _iou(best, guess) > 0.2:
                return best
        return boxes[0]

    def _detect_boxes(self, frame: np.ndarray) -> list:
        if self.upsample is not None:
            return lmk.detect_faces(frame, self.upsample)
        shrink = auto_shrink(*frame.shape[:2])
        if shrink == 1:
            return lmk.detect_faces(frame, auto_upsample(*frame.shape[:2]))
        import cv2

        small = cv2.resize(frame, (frame.shape[1] // shrink, frame.shape[0] // shrink), interpolation=cv2.INTER_AREA)
        return [tuple(v * shrink for v in box) for box in lmk.detect_faces(small, 0)]

    def _fit(self, frame, box, previous=None):
        landmarks = lmk.predict_landmarks(frame, box)
        if not plausible(landmarks, box, frame.shape, previous):
            return None
        if previous is not None:  # propagated: the face must still look like the one last detected
            patch = face_patch(frame, landmarks)
            if patch is None or self.template is None or float(patch @ self.template) < MIN_SIMILARITY:
                return None
        return landmarks

    def step(self, frame: np.ndarray):
        """(landmarks, box, detected) for one frame, or None when no face."""
        tried = False
        if self.last is None or self.missed or self.since_detect >= self.detect_every:
            tried = True
            box = self._detect(frame)
            fit = None if box is None else self._fit(frame, box)
            if fit is not None:
                return self._accept(frame, fit, box, detected=True)
        if self.last is not None and self.missed < self.max_missed:
            box = _box_from_landmarks(self.last, self.relation)
            fit = self._fit(frame, box, previous=self.last)
            if fit is None and not tried:
                tried = True
                box = self._detect(frame)
                fit = None if box is None else self._fit(frame, box)
                if fit is not None:
                    return self._accept(frame, fit, box, detected=True)
            if fit is not None:
                self.missed += int(tried)
                return self._accept(frame, fit, box, detected=False)
        self.last, self.missed = None, 0  # lost: detect on every frame until a face comes back
        return None

    def _accept(self, frame, landmarks, box, detected: bool):
        if detected:
            self.relation = _box_relation(box, landmarks)
            self.template = face_patch(frame, landmarks)
            self.since_detect, self.missed = 0, 0
        else:
            self.since_detect += 1
        self.last = landmarks
        return landmarks, np.asarray(box, np.float32), detected


def iter_frame_chunks(source, chunk: int = 256) -> tuple[Iterator[np.ndarray], int, str]:
    """(chunks of RGB frames, frame count, name) from a video path, a FrameFolder or an array [T, H, W, 3]."""
    if isinstance(source, FrameFolder):
        return source.chunks(), source.num_frames, str(source.folder)
    if isinstance(source, (str, Path)):
        total = video_info(source)["num_frames"]

        def chunks():
            for start in range(0, total, chunk):
                try:
                    yield read_frames(source, range(start, min(total, start + chunk)))
                except DataError:
                    raise
                except Exception as e:  # decord errors on a stream corrupt past its header
                    raise DataError(f"cannot decode frames {start}..{min(total, start + chunk) - 1} "
                                    f"({type(e).__name__})", path=source, fix="re-encode the video") from None
        return chunks(), total, str(source)
    frames = np.asarray(source)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise DataError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}",
                        field="frames", fix="pass RGB uint8 frames or a video path")
    return (frames[i:i + chunk] for i in range(0, len(frames), chunk)), len(frames), ""


def track_faces(source, detect_every: int = 10, upsample: int | None = None, smooth: int = 3,
                box_smooth: int = 9, max_missed: int = 15, progress: bool = False,
                on_frames: Callable[[int], None] | None = None, name: str | None = None) -> FaceTrack:
    """Track the main face through a video path, a FrameFolder or frames [T, H, W, 3] (RGB uint8).

    detect_every: frames between scheduled detections (1 = detect every frame).
    upsample: dlib detector upsampling; None picks auto_upsample(H, W), and detects on a frame shrunk by
    auto_shrink(H, W) when the frame is large.
    smooth / box_smooth: centred window (frames) for landmarks / boxes; 1 turns smoothing off.
    max_missed: frames a face may be carried on propagated boxes while the detector fails to find it.
    on_frames: called with the number of frames after each chunk (progress reported across processes).
    name: what the progress bar and log call the video (default: the path's, or "frames").
    """
    if detect_every < 1 or max_missed < 0 or smooth < 1 or box_smooth < 1:
        raise ConfigError(f"detect_every={detect_every}, smooth={smooth}, box_smooth={box_smooth} must be >= 1 "
                          f"and max_missed={max_missed} >= 0", field="detect_every", fix="pass positive values")
    chunks, total, found_name = iter_frame_chunks(source)
    name = name or found_name
    tracker = Tracker(detect_every, upsample, max_missed)
    raw = np.full((total, 68, 2), np.nan, np.float32)
    boxes = np.full((total, 4), np.nan, np.float32)
    found = np.zeros(total, bool)
    detected = np.zeros(total, bool)
    size = (0, 0)
    from tqdm import tqdm

    t = 0
    with tqdm(total=total, desc=f"faces {Path(name).name or 'frames'}", unit="frame", disable=not progress,
              leave=False) as bar:
        for frames in chunks:
            size = (frames.shape[2], frames.shape[1])
            for frame in frames:
                result = tracker.step(frame)
                if result is not None:
                    raw[t], boxes[t], detected[t] = result
                    found[t] = True
                t += 1
            bar.update(len(frames))
            if on_frames is not None:
                on_frames(len(frames))
    log.debug("%s: face in %d/%d frames, %d detections", name, found.sum(), total, detected.sum())
    return FaceTrack(landmarks=centred_mean(raw, found, smooth), raw_landmarks=raw,
                     boxes=centred_mean(boxes, found, box_smooth), found=found, detected=detected,
                     frame_size=size, source=name)


def save_track(path, track: FaceTrack, **extra: np.ndarray) -> Path:
    """Write the track (plus extra named arrays, e.g. the alignment) to one .npz, atomically."""
    arrays = {name: getattr(track, name) for name in TRACK_ARRAYS}
    arrays["frame_size"] = np.asarray(track.frame_size, np.int64)
    arrays["source"] = np.asarray(track.source)
    arrays.update(extra)
    write_npz(path, arrays, compressed=True)
    return Path(path)


def load_track(path) -> tuple[FaceTrack, dict[str, np.ndarray]]:
    """Read a save_track file: (FaceTrack, the extra arrays). Never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise DataError("face track not found", path=path, fix="run `python -m data faces` first") from None
    except Exception as e:
        raise DataError(f"not a readable .npz ({type(e).__name__})", path=path,
                        fix="delete it and rerun `python -m data faces`") from None
    for name in TRACK_ARRAYS + ("frame_size", "source"):
        if name not in arrays:
            raise DataError("array missing", path=path, field=name, fix="rerun `python -m data faces`")
    total = len(arrays["found"])
    for name in TRACK_ARRAYS:
        if len(arrays[name]) != total:
            raise DataError(f"has {len(arrays[name])} frames, found has {total}", path=path, field=name,
                            fix="rerun `python -m data faces`")
    track = FaceTrack(**{name: arrays.pop(name) for name in TRACK_ARRAYS},
                      frame_size=tuple(int(v) for v in arrays.pop("frame_size")), source=str(arrays.pop("source")))
    return track, arrays


"""Face alignment: a similarity transform (eyes + nose tip onto canonical points) and a square crop.

Which transform, per `reference`:
- "first": one transform for the whole video, from the first frame with a face.
- "median": one transform from the per-point median landmarks over all frames with a face.
- "frame": a transform per frame, smoothed over time.
A per-video reference ("first"/"median") keeps all facial motion, head motion included, inside the crop: use it
when the spotter removes head motion itself (e.g. by subtracting nose-patch flow) or should see it. "frame"
cancels head motion (translation, in-plane rotation, scale) so the crop shows expression only; its residual
jitter is a few tenths of a pixel. Anchors are eye-corner midpoints (blink-stable) and the nose tip.
"""
from __future__ import annotations

import numpy as np

from data.common.errors import ConfigError, DataError
from data.faces import landmarks as lmk
from data.faces.track import FaceTrack, centred_mean, fill_nearest, iter_frame_chunks

REFERENCES = ("first", "median", "frame")


def check_align_args(size: int, reference: str) -> None:
    if reference not in REFERENCES:
        raise ConfigError(f"unknown reference {reference!r}", field="reference", fix=f"use one of {REFERENCES}")
    if not isinstance(size, (int, np.integer)) or size < 32 or size % 2:
        raise ConfigError(f"crop size must be an even integer >= 32, got {size!r}", field="size",
                          fix="use e.g. 160 (the model's input size)")


def alignment_matrices(track: FaceTrack, size: int = 160, reference: str = "first", smooth: int = 5) -> np.ndarray:
    """float32 [T, 2, 3] source -> crop transforms. Frames without a face get the nearest frame's transform."""
    check_align_args(size, reference)
    if not track.found.any():
        raise DataError("no face found in any frame: nothing to align", path=track.source or None,
                        fix="check the video shows a frontal face at least ~40 px wide")
    if reference == "first":
        matrix = lmk.rigid_similarity_to_canonical(track.landmarks[np.argmax(track.found)], size)
        return np.repeat(matrix[None], track.num_frames, axis=0)
    if reference == "median":
        median = np.median(track.landmarks[track.found], axis=0)
        return np.repeat(lmk.rigid_similarity_to_canonical(median, size)[None], track.num_frames, axis=0)
    per_frame = np.zeros((track.num_frames, 2, 3), np.float32)
    for t in np.flatnonzero(track.found):
        per_frame[t] = lmk.rigid_similarity_to_canonical(track.landmarks[t], size)
    # Similarity matrices [[a, -b, tx], [b, a, ty]] stay similarities under averaging, so smoothing is exact.
    smoothed = centred_mean(per_frame, track.found, smooth)
    return fill_nearest(smoothed, track.found, track.source)


def warp_frames(frames: np.ndarray, matrices: np.ndarray, size: int = 160) -> np.ndarray:
    """Crops uint8 [T, size, size, 3]; pixels from outside the frame repeat the border (no black wedges)."""
    import cv2

    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, (frame, matrix) in enumerate(zip(frames, matrices)):
        out[i] = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
    return out


def align_landmarks(landmarks: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Landmarks [T, 68, 2] mapped into crop coordinates (NaN stays NaN)."""
    return (np.einsum("tpj,tij->tpi", landmarks, matrices[:, :, :2]) + matrices[:, None, :, 2]).astype(np.float32)


def align_video(frames, track: FaceTrack, size: int = 160, reference: str = "first",
                smooth: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crops uint8 [T, size, size, 3], aligned landmarks float32 [T, 68, 2], matrices float32 [T, 2, 3]).

    frames: RGB uint8 [T, H, W, 3] or a video path (decoded in chunks); must match the track's frame count.
    """
    matrices = alignment_matrices(track, size, reference, smooth)
    chunks, total, name = iter_frame_chunks(frames)
    if total != track.num_frames:
        raise DataError(f"{total} frames but the face track has {track.num_frames}", path=name or None,
                        field="frames", fix="align the same video that was tracked")
    crops, start = [], 0
    for chunk in chunks:
        crops.append(warp_frames(chunk, matrices[start:start + len(chunk)], size))
        start += len(chunk)
    return np.concatenate(crops), align_landmarks(track.landmarks, matrices), matrices

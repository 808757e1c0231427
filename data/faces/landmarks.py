"""dlib 68-point face landmarks: detection, the point groups we use, region boxes and the canonical face.

Index conventions are dlib's (0-based): jaw 0-16, brows 17-21 / 22-26, nose 27-35, eyes 36-41 / 42-47, lips 48-67.
"Right"/"left" are the subject's: the subject's right eye is on the image's left.
"""
from __future__ import annotations

import functools

import numpy as np

from data.common.assets import dlib_landmark_model

RIGHT_BROW = list(range(17, 22))
LEFT_BROW = list(range(22, 27))
NOSE_BRIDGE = 27  # landmark 28 in the 1-based numbering papers use
RIGHT_EYE = list(range(36, 42))
LEFT_EYE = list(range(42, 48))
MOUTH = list(range(48, 68))
NOSE_TIP = 30

# Where alignment puts the eye centres and the nose tip in a 160x160 crop (scaled for other sizes).
CANONICAL_SIZE = 160
CANONICAL_POINTS = np.array([[56.0, 66.0], [104.0, 66.0], [80.0, 98.0]], dtype=np.float32)  # r-eye, l-eye, nose


@functools.lru_cache(maxsize=1)
def _dlib_models():
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(dlib_landmark_model()))


def load_models() -> None:
    """Load dlib's detector and predictor now: a live stream must not stall for them on its first frame."""
    _dlib_models()


def detect_faces(image: np.ndarray, upsample: int = 1) -> list[tuple[int, int, int, int]]:
    """Face boxes (x0, y0, x1, y1) in an RGB or grey uint8 image, largest first."""
    detector, _ = _dlib_models()
    rects = detector(np.ascontiguousarray(image), upsample)
    boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
    return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))


def detect_faces_scored(image: np.ndarray, upsample: int = 1) -> list[tuple[tuple[int, int, int, int], float]]:
    """(box, detector score) of every face, in the detector's order; a score near 0 is often not a face."""
    detector, _ = _dlib_models()
    rects, scores, _ = detector.run(np.ascontiguousarray(image), upsample, 0.0)
    return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]


def predict_landmarks(image: np.ndarray, box) -> np.ndarray:
    """68 (x, y) landmarks, float32 [68, 2], inside a face box."""
    import dlib

    _, predictor = _dlib_models()
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    shape = predictor(np.ascontiguousarray(image), dlib.rectangle(x0, y0, x1, y1))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def face_landmarks(image: np.ndarray, upsample: int = 1) -> np.ndarray | None:
    """Landmarks of the largest face, or None when no face is found."""
    boxes = detect_faces(image, upsample)
    return predict_landmarks(image, boxes[0]) if boxes else None


def anchor_points(landmarks: np.ndarray) -> np.ndarray:
    """The three points alignment uses: right-eye centre, left-eye centre, nose tip."""
    return np.stack([landmarks[RIGHT_EYE].mean(0), landmarks[LEFT_EYE].mean(0), landmarks[NOSE_TIP]]).astype(np.float32)


def canonical_points(size: int = CANONICAL_SIZE) -> np.ndarray:
    return CANONICAL_POINTS * (size / CANONICAL_SIZE)


def similarity_to_canonical(landmarks: np.ndarray, size: int = CANONICAL_SIZE) -> np.ndarray:
    """2x3 similarity transform (rotation, uniform scale, shift) taking the face onto the canonical points."""
    import cv2

    matrix, _ = cv2.estimateAffinePartial2D(anchor_points(landmarks), canonical_points(size), method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("degenerate landmarks: cannot estimate a similarity transform")
    return matrix.astype(np.float32)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def region_boxes(landmarks: np.ndarray, size: tuple[int, int] | None = None) -> dict[str, tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1), exclusive ends, for the spotting ROIs, scaled by the inter-ocular distance.

    Brow boxes reach up (brows rise) and down to the upper lid; the nose box is the rigid reference patch.
    """
    iod = float(np.linalg.norm(landmarks[LEFT_EYE].mean(0) - landmarks[RIGHT_EYE].mean(0)))
    pad = 0.15 * iod

    def around(idx, up=0.0, down=0.0):
        pts = landmarks[idx]
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        return [x0 - pad, y0 - pad - up * iod, x1 + pad, y1 + pad + down * iod]

    nose = landmarks[NOSE_BRIDGE + 1]
    half = 0.18 * iod
    boxes = {
        "right_brow": around(RIGHT_BROW, up=0.25, down=0.05),
        "left_brow": around(LEFT_BROW, up=0.25, down=0.05),
        "right_eye": around(RIGHT_EYE),
        "left_eye": around(LEFT_EYE),
        "mouth": around(MOUTH, up=0.05, down=0.1),
        "nose": [nose[0] - half, nose[1] - half, nose[0] + half, nose[1] + half],
    }
    out = {}
    for name, (x0, y0, x1, y1) in boxes.items():
        if size is not None:
            w, h = size
            x0, x1 = np.clip([x0, x1], 0, w)
            y0, y1 = np.clip([y0, y1], 0, h)
        out[name] = (int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1)))
    return out


def eye_polygons(landmarks: np.ndarray) -> list[np.ndarray]:
    """The two eye outlines (int32 [6, 2]) used to mask blinks out of flow."""
    return [np.round(landmarks[idx]).astype(np.int32) for idx in (RIGHT_EYE, LEFT_EYE)]


def rigid_anchor_points(landmarks: np.ndarray) -> np.ndarray:
    """Like anchor_points, but each eye is the midpoint of its two corners, which a blink does not move
    (the 6-point eye centre drops by a few pixels when the upper lid closes)."""
    right = (landmarks[36] + landmarks[39]) / 2
    left = (landmarks[42] + landmarks[45]) / 2
    return np.stack([right, left, landmarks[NOSE_TIP]]).astype(np.float32)


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2x3 similarity taking src [N, 2] onto dst [N, 2] using all points.

    cv2.estimateAffinePartial2D with LMEDS fits the best 2-point subset exactly; on 3 anchors the chosen subset
    changes from frame to frame, which shows up as jitter in aligned video.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    rows = np.zeros((2 * len(src), 4))
    rows[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(len(src)), np.zeros(len(src))])
    rows[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(len(src)), np.ones(len(src))])
    (a, b, tx, ty), *_ = np.linalg.lstsq(rows, dst.reshape(-1), rcond=None)
    if not np.isfinite([a, b, tx, ty]).all() or a * a + b * b < 1e-12:
        raise ValueError("degenerate landmarks: cannot estimate a similarity transform")
    return np.array([[a, -b, tx], [b, a, ty]], dtype=np.float32)


def rigid_similarity_to_canonical(landmarks: np.ndarray, size: int = CANONICAL_SIZE) -> np.ndarray:
    """Similarity onto the canonical points from blink-stable anchors, least squares over all three."""
    return fit_similarity(rigid_anchor_points(landmarks), canonical_points(size))

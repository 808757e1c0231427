"""SOFTNet-style network inputs: per frame pair (i, i+k), the (u, v, strain) images of three face regions.

Flow from frame i to i+k (data.flow.regions), head motion removed on the rigid patch, eye openings zeroed (blinks), then
three ROIs cut out and resized: right eye + brow, left eye + brow (top half, side by side) and the mouth
(bottom half), giving one `size` x `size` image per channel. SOFTNet (Liong et al. 2021) feeds u, v and strain
to its three streams this way at 42 x 42. Computed once per (video, k) and cached as .npz (float16).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data.common.errors import DataError
from data.common.npz_cache import read_npz, write_npz
from data.common.video_io import read_frames
from data.faces import landmarks as lmk
from data.flow import regions as fl
from data.flow.curves import video_landmarks

CHANNELS = ("u", "v", "strain")


def roi_boxes(points: np.ndarray, size: tuple[int, int]) -> dict[str, tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of the three ROIs: each eye united with its brow, and the mouth."""
    boxes = lmk.region_boxes(points, size)

    def union(a, b):
        return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))

    return {"right": union(boxes["right_brow"], boxes["right_eye"]),
            "left": union(boxes["left_brow"], boxes["left_eye"]), "mouth": boxes["mouth"]}


def compose(field: np.ndarray, boxes: dict, size: int) -> np.ndarray:
    """[size, size] image: the two eye ROIs on top (size/2 x size/2 each), the mouth below (size/2 x size)."""
    import cv2

    half = size // 2
    out = np.zeros((size, size), np.float32)
    layout = {"right": (0, 0, half, half), "left": (0, half, half, size - half),
              "mouth": (half, 0, size - half, size)}
    for name, (row, col, h, w) in layout.items():
        x0, y0, x1, y1 = boxes[name]
        crop = field[y0:y1, x0:x1]
        if crop.size:
            out[row:row + h, col:col + w] = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
    return out


def pair_images(flow: np.ndarray, geometry: fl.RegionGeometry, eyes: np.ndarray, boxes: dict,
                size: int) -> np.ndarray:
    """[3, size, size] (u, v, strain) of one flow field."""
    flow = fl.remove_head_motion(flow, geometry.rigid, "affine", geometry.rigid_solver)
    flow = np.where(eyes[..., None], 0.0, flow).astype(np.float32)
    strain = fl.optical_strain(flow).astype(np.float32)
    return np.stack([compose(flow[..., 0], boxes, size), compose(flow[..., 1], boxes, size),
                     compose(strain, boxes, size)])


def video_images(grey: np.ndarray, points: np.ndarray, k: int, size: int, method: str = "dis",
                 progress=None) -> np.ndarray:
    """[T, 3, size, size] float16: entry i holds the pair (i, i+k); zeros where i + k is past the end."""
    h, w = grey.shape[1:]
    geometry = fl.RegionGeometry.from_landmarks(points, (w, h))
    eyes = fl.eye_mask((h, w), lmk.eye_polygons(points), dilate=2)
    boxes = roi_boxes(points, (w, h))
    flow_fn = fl.make_flow(method)
    out = np.zeros((len(grey), len(CHANNELS), size, size), np.float16)
    for i in range(max(0, len(grey) - k)):
        out[i] = pair_images(flow_fn(grey[i], grey[i + k]), geometry, eyes, boxes, size)
        if progress is not None:
            progress(1)
    return out


def _cache_params(k: int, size: int, method: str) -> str:
    return json.dumps({"k": int(k), "size": int(size), "method": method, "channels": list(CHANNELS)})


def load_or_compute(path, cache: Path, ks: list[int], size: int, method: str = "dis",
                    progress=None) -> dict[int, np.ndarray]:
    """{k: [T, 3, size, size]} for one video, from `cache` (.npz per k) or computed from the decoded video."""

    out, missing = {}, []
    for k in ks:
        file = cache.with_name(f"{cache.stem}_k{k}_s{size}.npz")
        params = _cache_params(k, size, method)
        cached = read_npz(file, ("images", "params"),
                          lambda z, want=params: None if str(z["params"]) == want else "made with other settings")
        if cached is not None:
            out[k] = cached["images"]
        else:
            missing.append((k, file))
    if not missing:
        return out
    grey, _ = fl.read_grey(path)
    if len(grey) == 0:
        raise DataError("video has no frames", path=path, fix="re-encode or drop the video")
    first = read_frames(path, [0])[0]
    points = video_landmarks(first, (first.shape[1], first.shape[0]), "auto", path)
    for k, file in missing:
        out[k] = video_images(grey, points, k, size, method, progress)
        write_npz(file, {"images": out[k], "params": _cache_params(k, size, method)})
    return out


def appearance_features(path, cache, size: int = 16) -> np.ndarray:
    """[T, size * size] float32: each grey frame shrunk to size x size minus the video's median frame, so the
    identity's face drops out and what is left is how the face looks now compared with its rest state."""
    cached = read_npz(cache, ("features", "size"), lambda z: None if int(z["size"]) == size else "another size")
    if cached is not None:
        return cached["features"]
    import cv2

    grey, _ = fl.read_grey(path)
    if len(grey) == 0:
        raise DataError("video has no frames", path=path, fix="re-encode or drop the video")
    small = np.stack([cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA) for g in grey]).astype(np.float32)
    features = (small - np.median(small, axis=0)).reshape(len(small), -1) / 255.0
    write_npz(cache, {"features": features.astype(np.float32), "size": size})
    return features.astype(np.float32)

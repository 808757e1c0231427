"""Clip augmentation for pretraining: VideoMAE's multi-scale corner crop, resize back, normalisation.

One crop box is drawn per view and applied to every frame, so motion inside the clip is not distorted.
The crop rule follows VideoMAE (GroupMultiScaleCrop): crop sides are fractions of the short side, width and
height may differ by at most `max_distort` scale steps, sides within 3 px of the output size snap to it, and
the box sits at one of 13 fixed positions (corners, centre, edge midpoints, quarter points).
"""
from __future__ import annotations

import functools

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VIDEOMAE_SCALES = (1.0, 0.875, 0.75, 0.66)


def _snap(side: int, out: int) -> int:
    return out if abs(side - out) < 3 else side


def crop_box(height: int, width: int, out_size: int, rng: np.random.Generator,
             scales=VIDEOMAE_SCALES, max_distort: int = 1) -> tuple[int, int, int, int]:
    """A random multi-scale crop (x0, y0, crop_w, crop_h) inside a height x width frame."""
    base = min(height, width)
    sides = [_snap(int(base * s), out_size) for s in scales]
    pairs = [(w, h) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= max_distort]
    crop_w, crop_h = pairs[rng.integers(len(pairs))]
    crop_w, crop_h = min(crop_w, width), min(crop_h, height)
    x0, y0 = _fixed_offsets(width, height, crop_w, crop_h)[rng.integers(13)]
    return int(x0), int(y0), int(crop_w), int(crop_h)


def _fixed_offsets(width: int, height: int, crop_w: int, crop_h: int) -> list[tuple[int, int]]:
    """The 13 candidate positions on a 5x5 lattice of quarter steps."""
    ws, hs = (width - crop_w) // 4, (height - crop_h) // 4
    lattice = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0),
               (1, 1), (3, 1), (1, 3), (3, 3)]
    return [(i * ws, j * hs) for i, j in lattice]


def crop_resize(frames: np.ndarray, box: tuple[int, int, int, int], out_size: int,
                out: np.ndarray | None = None) -> np.ndarray:
    """Crop uint8 frames [T, H, W, 3] to `box`, resize each to out_size x out_size (bilinear), into `out`
    when given (e.g. a slot of a batch array: saves a copy per view)."""
    import cv2  # here, not at the top: the model (pretrain.targets) imports this module on machines without it

    x0, y0, w, h = box
    crop = frames[:, y0:y0 + h, x0:x0 + w]
    if out is None:
        out = np.empty((len(frames), out_size, out_size, frames.shape[-1]), dtype=frames.dtype)
    if w == out_size and h == out_size:
        out[...] = crop
        return out
    for t in range(len(frames)):
        cv2.resize(crop[t], (out_size, out_size), dst=out[t], interpolation=cv2.INTER_LINEAR)
    return out


def multi_scale_crop(frames: np.ndarray, out_size: int, rng: np.random.Generator,
                     scales=VIDEOMAE_SCALES, max_distort: int = 1) -> np.ndarray:
    """One random VideoMAE crop of a clip [T, H, W, 3], resized to [T, out_size, out_size, 3]."""
    _, h, w, _ = frames.shape
    return crop_resize(frames, crop_box(h, w, out_size, rng, scales, max_distort), out_size)


@functools.lru_cache(maxsize=16)
def channel_values(values: tuple[float, ...], device):
    """A per-channel constant as a float32 tensor [C, 1, 1, 1] on `device` (broadcasts over [..., C, T, H, W]).

    Made once per device: building it from a Python tuple on a GPU is a blocking host-to-device copy, which
    would put a host synchronisation into every train step that (un)normalises (and break CUDA graph capture).
    """
    import torch

    return torch.tensor(values, dtype=torch.float32, device=device).view(len(values), 1, 1, 1)


def normalise(video, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """uint8 torch video [..., 3, T, H, W] (channels at dim -4) -> contiguous float32 (x / 255 - mean) / std.

    Works on CPU or on the GPU, so a loader can ship uint8 (4x less to copy) and normalise on the device.
    """
    import torch

    m, s = channel_values(tuple(mean), video.device), channel_values(tuple(std), video.device)
    # one pass converts and makes the result contiguous, whatever the input's strides
    out = video.to(torch.float32, memory_format=torch.contiguous_format)
    return out.div_(255.0).sub_(m).div_(s)

"""Reconstruction targets, one row of `patch_values` numbers per token in raster order.

- "pixel": each tubelet's pixels normalised per channel (zero mean, unit std over the tubelet), as VideoMAE.
- "frame_diff": half appearance, half motion: the tubelet's first frame normalised per channel, and in place
  of the second frame its difference from the first, normalised the same way. A static tubelet has an
  all-zero motion half.
Row layout is (frame, row, column, channel), the same for both targets.
"""
from __future__ import annotations

import torch

# clips reach the model normalised by data.clips.augment.normalise; targets are computed on the [0, 1] pixels
from data.clips.augment import IMAGENET_MEAN, IMAGENET_STD

EPS = 1e-6


def unnormalize(video: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised [B, 3, T, H, W] -> pixels in [0, 1] (float32)."""
    shape = (1, -1, 1, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=video.device).view(shape)
    std = torch.tensor(IMAGENET_STD, device=video.device).view(shape)
    return video.float() * std + mean


def tubelets(video: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, N, tubelet, patch * patch, C] with tokens in raster order (t, h, w)."""
    b, c, t, h, w = video.shape
    x = video.reshape(b, c, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # b, t', h', w', frame, row, col, c
    return x.reshape(b, -1, tubelet, patch * patch, c)


def _normalise(x: torch.Tensor, dim) -> torch.Tensor:
    return (x - x.mean(dim=dim, keepdim=True)) / (x.var(dim=dim, unbiased=True, keepdim=True).sqrt() + EPS)


def pixel_target(pixels: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """Per-tubelet, per-channel normalised pixels [B, N, tubelet * patch * patch * C]."""
    x = tubelets(pixels, tubelet, patch)
    b, n, f, p, c = x.shape
    return _normalise(x.reshape(b, n, f * p, c), dim=2).reshape(b, n, -1)


def frame_diff_target(pixels: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """First frame of each tubelet, then (frame i - first frame) for the others; each normalised per channel."""
    x = tubelets(pixels, tubelet, patch)
    parts = torch.cat([x[:, :, :1], x[:, :, 1:] - x[:, :, :1]], dim=2)
    return _normalise(parts, dim=3).reshape(x.shape[0], x.shape[1], -1)


def make_target(video: torch.Tensor, kind: str, tubelet: int, patch: int) -> torch.Tensor:
    """Targets for every token [B, N, values] in float32, outside autocast and autograd."""
    with torch.no_grad(), torch.autocast(video.device.type, enabled=False):
        pixels = unnormalize(video)
        if kind == "pixel":
            return pixel_target(pixels, tubelet, patch)
        if kind == "frame_diff":
            return frame_diff_target(pixels, tubelet, patch)
    raise ValueError(f"unknown target kind {kind!r}")  # ModelConfig already restricts the choice

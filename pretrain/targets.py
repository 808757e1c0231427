"""Reconstruction targets, one row of `patch_values` numbers per token in raster order.

- "pixel": each tubelet's pixels normalised per channel (zero mean, unit std over the tubelet), as VideoMAE.
- "frame_diff": half appearance, half motion: the tubelet's first frame normalised per channel, and in place
  of the second frame its difference from the first, normalised the same way. A static tubelet has an
  all-zero motion half.
- "view": the values themselves, unnormalised. On the motion input (ModelConfig.input "motion"; with the
  default "ref" contrast, frames minus the window's first frame) that is the change since the window began, so
  the loss is carried by what moves;
  per-tubelet normalisation would instead make the sensor noise of still tubelets the target.
- "energy": the mean |value| per 4 x 4 pixel cell of each frame (on the motion view: how much each part of
  the face moved since the window began, without the sign, which depends on the texture the model cannot see).
Row layout is (frame, row, column, channel) for every target but "energy" (frame, cell row, cell column).
Rgb input is ImageNet-normalised and targets are computed on its [0, 1] pixels; motion input is used as it is.
"""
from __future__ import annotations

import torch

# clips reach the model normalised by data.clips.augment.normalise; targets are computed on the [0, 1] pixels
from data.clips.augment import IMAGENET_MEAN, IMAGENET_STD, channel_values

EPS = 1e-6


def unnormalize(video: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised [B, 3, T, H, W] -> pixels in [0, 1] (float32)."""
    # cached per device: a tensor built from a tuple on a GPU would be a host sync in every step
    mean, std = channel_values(IMAGENET_MEAN, video.device), channel_values(IMAGENET_STD, video.device)
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


def view_target(values: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """The tubelet's values as they are [B, N, tubelet * patch * patch * C]."""
    x = tubelets(values, tubelet, patch)
    return x.reshape(x.shape[0], x.shape[1], -1)


ENERGY_CELL = 4  # pixels: the "energy" target's cell side (ModelConfig.patch_values and check read it)


def energy_target(values: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """Mean |value| per ENERGY_CELL x ENERGY_CELL cell of each frame of the tubelet, channels averaged
    [B, N, tubelet * (patch / cell)^2]: where and how much the face moved, not the texture-dependent sign."""
    x = tubelets(values, tubelet, patch).abs().mean(-1)  # [B, N, tubelet, patch * patch]
    b, n, f, _ = x.shape
    cells = patch // ENERGY_CELL
    x = x.reshape(b, n, f, cells, ENERGY_CELL, cells, ENERGY_CELL).mean((4, 6))
    return x.reshape(b, n, -1)


def make_target(video: torch.Tensor, kind: str, tubelet: int, patch: int, source: str = "rgb") -> torch.Tensor:
    """Targets for every token [B, N, values] in float32, outside autocast and autograd; `source` is
    ModelConfig.input (rgb clips are ImageNet-normalised, motion views are taken as they are)."""
    with torch.no_grad(), torch.autocast(video.device.type, enabled=False):
        pixels = unnormalize(video) if source == "rgb" else video.float()
        if kind == "pixel":
            return pixel_target(pixels, tubelet, patch)
        if kind == "frame_diff":
            return frame_diff_target(pixels, tubelet, patch)
        if kind == "view":
            return view_target(pixels, tubelet, patch)
        if kind == "energy":
            return energy_target(pixels, tubelet, patch)
    raise ValueError(f"unknown target kind {kind!r}")  # ModelConfig already restricts the choice

"""Reconstruction targets of masked-video pretraining, one row of `patch_values` numbers per token in raster order.

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
- "flow" (masked motion modelling, after MME, Sun et al. CVPR 2023): the optical flow (data.flow.regions, DIS,
  the flow code of the cues) from the clip's first frame to each frame, less the head's motion (the affine field
  fitted on the canonical face's rigid pixels, as the cues remove it), averaged over each 4 x 4 pixel cell, in
  units of FLOW_UNIT_PX: where and how far each part of the face moved since the window began. Flow is smooth
  over the face, so a masked tubelet's motion can be inferred from its visible neighbours, unlike the signed pixel
  change of a textureless motion view; it is made from the grey clips in the loader's workers (`flow_target`).
  Without the head's motion removed the target is a smooth drift of the whole face (median 0.75 px on the
  stabilised corpus, a cell's flow correlating 0.998 with its neighbours'), which the model did not learn to
  predict (loss / floor 1.07 after 1,400 steps).
- "flow_magnitude": the length of that flow vector per cell and frame: how far each part of the face moved since
  the window began, in pixels, whatever its texture (where "energy" weighs a move by the texture it reveals).
Row layout is (frame, row, column, channel) for every target but "energy" (frame, cell row, cell column) and
"flow" (frame, cell row, cell column, (dx, dy)).
Rgb input is ImageNet-normalised and targets are computed on its [0, 1] pixels; motion input is used as it is.
"""
from __future__ import annotations

import numpy as np
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


CELL = 4  # pixels: the cell side of the "energy" and "flow" targets (ModelConfig.patch_values and check read it)
FLOW_UNIT_PX = 2.0  # "flow" target units: a 2 px displacement (a clear macro expression at 160 px) is 1
LOADER_TARGETS = ("flow", "flow_magnitude")  # made from the grey clips in the loader's workers, not from the input


def cell_means(x: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """[B, C, T, H, W] -> each CELL x CELL cell's mean per frame and channel [B, N, tubelet * (patch/CELL)^2 * C],
    tokens in raster order, values in (frame, cell row, cell column, channel) order."""
    t = tubelets(x, tubelet, patch)  # [B, N, tubelet, patch * patch, C]
    b, n, f, _, c = t.shape
    cells = patch // CELL
    t = t.reshape(b, n, f, cells, CELL, cells, CELL, c).mean((4, 6))
    return t.reshape(b, n, -1)


def energy_target(values: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """Mean |value| per CELL x CELL cell of each frame of the tubelet, channels averaged
    [B, N, tubelet * (patch / cell)^2]: where and how much the face moved, not the texture-dependent sign."""
    return cell_means(values.abs().mean(1, keepdim=True), tubelet, patch)


def clip_flow(grey: np.ndarray, flow_fn, rigid: np.ndarray, solver) -> np.ndarray:
    """Flow from a clip's first frame to every frame, the head's motion removed: uint8 [T, S, S] -> float32
    [2, T, S, S] (frame 0: zero)."""
    from data.flow.regions import remove_head_motion

    out = np.zeros((2,) + grey.shape, np.float32)
    for t in range(1, len(grey)):
        out[:, t] = remove_head_motion(flow_fn(grey[0], grey[t]), rigid, "affine", solver).transpose(2, 0, 1)
    return out


def flow_target(grey: np.ndarray, tubelet: int, patch: int, kind: str = "flow", method: str = "dis") -> torch.Tensor:
    """The "flow" (or "flow_magnitude") target of stabilised grey clips uint8 [B, T, S, S]:
    [B, N, tubelet * (patch / CELL)^2 * (2 or 1)]."""
    from data.faces.stabilise import rigid_mask
    from data.flow.regions import affine_solver, make_flow

    flow_fn = make_flow(method)
    rigid = rigid_mask(grey.shape[-1])
    solver = affine_solver(rigid)
    flows = torch.from_numpy(np.stack([clip_flow(clip, flow_fn, rigid, solver) for clip in grey])) / FLOW_UNIT_PX
    if kind == "flow_magnitude":
        flows = flows.square().sum(1, keepdim=True).sqrt()
    return cell_means(flows, tubelet, patch)


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
    if kind in LOADER_TARGETS:
        raise ValueError(f"the {kind!r} target is made by the loader from the grey clips (flow_target)")
    raise ValueError(f"unknown target kind {kind!r}")  # ModelConfig already restricts the choice

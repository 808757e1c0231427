"""SOFTNet (Liong et al. 2021): a shallow three-stream CNN regressing a per-frame-pair expression score.

Facts used (from the paper): each stream sees one of the optical-flow channels u, v, strain of a 42 x 42 ROI image
(spotting.published.inputs); streams have 3, 5 and 8 filters of 5 x 5, each followed by 3 x 3 max pooling (stride 3);
the streams are concatenated, pooled 2 x 2, flattened and fed to a 400-unit dense layer and one linear output,
trained as a regression (MSE) on pseudo-labels. Spotting: the score curve is smoothed over 2k frames, thresholded
at mean + p * (max - mean) with p = 0.55, peaks at least k apart, and each peak becomes [peak - k, peak + k].

Pseudo-label (the "overlap" rule): the sample of pair i covers frames [i, i+k]; it is positive when that window
overlaps any expression of the type, and its soft label is the window's largest IoU with one (in [0, 1]);
`soft=False` gives the plain 0/1 overlap label.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from spotting import intervals as iv

STREAM_FILTERS = (3, 5, 8)


def window_bounds(num_frames: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of every pair window [i, i+k], inclusive, for i in 0..num_frames-1 (end clipped)."""
    start = np.arange(num_frames)
    return start, np.minimum(start + k, num_frames - 1)


def _overlaps(start: np.ndarray, end: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """[W, G] frames shared by each window and each ground-truth [onset, offset] (inclusive)."""
    if len(gt) == 0:
        return np.zeros((len(start), 0))
    lo = np.maximum(start[:, None], gt[None, :, 0])
    hi = np.minimum(end[:, None], gt[None, :, 1])
    return np.clip(hi - lo + 1, 0, None).astype(np.float64)


def overlap_labels(start: np.ndarray, end: np.ndarray, gt: np.ndarray, soft: bool = True) -> np.ndarray:
    """SOFTNet's rule: label of each window = its largest IoU with a ground truth (soft) or 1 on any overlap."""
    inter = _overlaps(start, end, gt)
    if inter.shape[1] == 0:
        return np.zeros(len(start), np.float32)
    if not soft:
        return (inter.max(1) > 0).astype(np.float32)
    union = (end - start + 1)[:, None] + (gt[:, 1] - gt[:, 0] + 1)[None, :] - inter
    return (inter / union).max(1).astype(np.float32)


def best_match(start: np.ndarray, end: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Index of the ground truth each window overlaps most (-1 for none)."""
    inter = _overlaps(start, end, gt)
    if inter.shape[1] == 0:
        return np.full(len(start), -1)
    return np.where(inter.max(1) > 0, inter.argmax(1), -1)


class SoftNet(nn.Module):
    """Three streams (u, v, strain) -> shared 400-d features -> heads ("spot": 1 score; optional others)."""

    def __init__(self, size: int = 42, hidden: int = 400, extra_heads: dict[str, int] | None = None):
        super().__init__()
        self.streams = nn.ModuleList(nn.Conv2d(1, c, 5, padding=2) for c in STREAM_FILTERS)
        self.pool = nn.MaxPool2d(3, 3)
        self.merge_pool = nn.MaxPool2d(2, 2)
        side = (size // 3) // 2
        self.dense = nn.Linear(sum(STREAM_FILTERS) * side * side, hidden)
        self.heads = nn.ModuleDict({"spot": nn.Linear(hidden, 1)})
        for name, n in (extra_heads or {}).items():
            self.heads[name] = nn.Linear(hidden, n)
        # Per-channel input scale, set from the training data: flow is a fraction of a pixel, strain smaller.
        self.register_buffer("scale", torch.ones(3))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> [B, hidden]: the layers every head shares."""
        x = x / self.scale.view(1, 3, 1, 1)
        streams = [self.pool(torch.relu(conv(x[:, c:c + 1]))) for c, conv in enumerate(self.streams)]
        merged = self.merge_pool(torch.cat(streams, 1))
        return torch.relu(self.dense(merged.flatten(1)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        out = {name: head(f) for name, head in self.heads.items()}
        out["spot"] = out["spot"].squeeze(1)
        return out


def fit_scale(model: SoftNet, images: torch.Tensor) -> None:
    std = images.float().transpose(0, 1).reshape(3, -1).std(1)
    model.scale.copy_(torch.clamp(std, min=1e-4))


def loss_fn(out: dict, y: torch.Tensor, emotion: torch.Tensor | None, emotion_weight: float) -> torch.Tensor:
    loss = nn.functional.mse_loss(out["spot"], y)
    if emotion is not None and "emotion" in out:
        known = emotion >= 0
        if known.any():
            loss = loss + emotion_weight * nn.functional.cross_entropy(out["emotion"][known], emotion[known])
    return loss


def train_model(model: SoftNet, images: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, lr: float,
                seed: int, emotion: torch.Tensor | None = None, emotion_weight: float = 1.0,
                desc: str = "softnet") -> list[float]:
    """Adam on MSE (+ cross-entropy on labelled samples for an "emotion" head); returns the loss per epoch."""
    fit_scale(model, images)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    for _ in tqdm(range(epochs), desc=desc, unit="epoch", leave=False):
        order = torch.randperm(len(images), generator=gen)
        total = 0.0
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            out = model(images[idx].float())
            loss = loss_fn(out, y[idx], None if emotion is None else emotion[idx], emotion_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / max(1, len(images)))
    model.eval()
    return history


@torch.no_grad()
def predict(model: SoftNet, images: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Every head's output for every pair of a video: {"spot": [T], "emotion": [T, C] (if present)}."""
    model.eval()
    parts: dict[str, list] = {}
    for s in range(0, len(images), batch_size):
        out = model(torch.from_numpy(np.asarray(images[s:s + batch_size], np.float32)))
        for name, value in out.items():
            parts.setdefault(name, []).append(value.numpy())
    return {name: np.concatenate(v) for name, v in parts.items()}


def centre(score: np.ndarray, k: int) -> np.ndarray:
    """Move pair scores (index i = window [i, i+k]) to the window's centre frame i + k//2."""
    out = np.zeros_like(score)
    shift = k // 2
    out[shift:] = score[:len(score) - shift] if shift else score
    return out


def spot(score: np.ndarray, k: int, p: float, kind: str) -> list[iv.Interval]:
    """SOFTNet's spotting: smooth over 2k frames, threshold mean + p(max - mean), peaks k apart, [peak-k, peak+k]."""
    return iv.spot_curve(centre(score, k), k, p, kind, smooth_window=2 * k, distance=k, extent="fixed")

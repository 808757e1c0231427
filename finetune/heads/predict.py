"""Per-frame score curves for a long video at each granularity.

Windows (finetune.windows) slide over the video; each window's frame logits become probabilities that are
averaged over overlapping windows onto the source frame axis. With a frozen encoder the pooled window features
can be computed once (`pooled_features`) and every head trained later reuses them (`curves_from_pooled`).
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from data.clips.augment import crop_resize, normalise
from data.common.video_io import read_frames
from finetune.heads.model import EncoderHeads, SpottingHead, pool_features
from finetune.windows import CurveAccumulator, Window, batches, video_windows


def load_frames(path, size: int) -> np.ndarray:
    """All frames of a face video as uint8 [T, size, size, 3] (resized when the video is another size)."""
    return model_frames(read_frames(path), size)


def model_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Face frames uint8 [T, H, W, 3] at the model's size x size (resized when they are another size)."""
    _, h, w, _ = frames.shape
    if (h, w) != (size, size):
        frames = crop_resize(frames, (0, 0, w, h), size)
    return frames


def window_batch(frames: np.ndarray, windows: list[Window]) -> torch.Tensor:
    """Normalised model input [B, 3, T, H, W] for a list of windows of one video."""
    clips = np.stack([frames[w.indices] for w in windows])  # [B, T, H, W, 3]
    return normalise(torch.from_numpy(clips).permute(0, 4, 1, 2, 3))


@torch.no_grad()
def pooled_features(encoder, features_fn, frames: np.ndarray, windows: list[Window], rows: int,
                    batch_size: int = 16, progress: tqdm | None = None) -> torch.Tensor:
    """Frozen-encoder features of every window, pooled for the heads: [N, T', rows, D] float32."""
    encoder.eval()
    out = []
    for chunk in batches(windows, batch_size):
        out.append(pool_features(features_fn(encoder, window_batch(frames, chunk)), rows).float())
        if progress is not None:
            progress.update(len(chunk))
    return torch.cat(out)


def accumulate(windows: list[Window], probs: np.ndarray, num_frames: int) -> np.ndarray:
    """Average window probabilities [N, T, C] onto the frame axis -> [num_frames, C]."""
    acc = CurveAccumulator(num_frames, probs.shape[-1])
    for window, p in zip(windows, probs):
        acc.add(window, p)
    return acc.curve()


@torch.no_grad()
def curves_from_pooled(head: SpottingHead, pooled: torch.Tensor, windows: list[Window],
                       num_frames: int) -> np.ndarray:
    """One granularity's curve [num_frames, 4] from cached pooled features."""
    head.eval()
    probs = torch.sigmoid(head.forward_pooled(pooled)).numpy()
    return accumulate(windows, probs, num_frames)


@torch.no_grad()
def video_curves(spotter: EncoderHeads, frames: np.ndarray, fps: float, granularities, batch_size: int = 16,
                 progress: tqdm | None = None) -> dict[str, np.ndarray]:
    """Curves {granularity name: [num_frames, 4]} of one video's frames for every granularity."""
    spotter.eval()
    cfg = spotter.encoder.cfg
    out = {}
    for g in granularities:
        windows = video_windows("video", len(frames), fps, g.span_s, g.hop_s, cfg.frames)
        probs = []
        for chunk in batches(windows, batch_size):
            probs.append(torch.sigmoid(spotter(window_batch(frames, chunk), g.name)).numpy())
            if progress is not None:
                progress.update(len(chunk))
        out[g.name] = accumulate(windows, np.concatenate(probs), len(frames))
    return out


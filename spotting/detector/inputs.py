"""A detector's inputs on its time grid: a video's channels averaged (or interpolated) onto the grid, encoder
channels projected on principal directions of the training videos, everything standardised; the ground truth as
events on the same grid. One `Normaliser` per detector, fitted on its training videos and saved with it.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from data.common.errors import DataError
from data.faces.stabilise import grid_length
from spotting.channels.encoder import per_video_standardise
from spotting.channels.vocabulary import ENCODER, Channel, VideoFeatures, design
from spotting.detector.model import CLASSES


def on_grid(x: np.ndarray, fps: float, rate_hz: float) -> np.ndarray:
    """Per-frame channels [T, C] -> [C, N] on the grid: the mean of the frames inside each grid step (a video
    at the grid rate is unchanged), or linear interpolation at the step centres for a slower video."""
    t, n = x.shape[0], grid_length(x.shape[0], fps, rate_hz)
    if fps >= rate_hz:
        step = np.minimum((np.arange(t) * rate_hz / fps).astype(np.int64), n - 1)
        total = np.zeros((n, x.shape[1]))
        np.add.at(total, step, x)
        count = np.bincount(step, minlength=n)[:, None]
        return (total / np.maximum(count, 1)).T.astype(np.float32)
    centres = (np.arange(n) + 0.5) / rate_hz * fps - 0.5
    return np.stack([np.interp(centres, np.arange(t), x[:, c]) for c in range(x.shape[1])]).astype(np.float32)


PCA_STEPS = 4000  # time steps (evenly spaced) the principal directions are computed from: enough for 64


def principal_directions(x: np.ndarray, k: int) -> np.ndarray:
    """[k, C]: the leading principal directions of channels x [C, N], each signed so that its largest loading is
    positive (scikit-learn's PCA, svd_flip). The covariance_eigh solver is the exact eigendecomposition of the
    [C, C] covariance; scikit-learn's default here would be the randomized one, an approximation."""
    x = x[:, np.linspace(0, x.shape[1] - 1, min(x.shape[1], PCA_STEPS)).astype(np.int64)]
    if k > x.shape[1]:
        raise DataError(f"{k} principal directions need at least {k} time steps of training video, have "
                        f"{x.shape[1]}", field="detector.encoder_pca", fix="lower it, or add training videos")
    return PCA(k, svd_solver="covariance_eigh").fit(x.T).components_.astype(np.float32)


@dataclasses.dataclass
class Normaliser:
    """The channels a detector reads and how they become its input [C, N] on the grid. Encoder channels come
    first: with `basis`, projected on the leading principal directions of the training videos (thousands of
    pooled features, strongly correlated, would otherwise dominate the detector's first layer and its cost) and
    standardised per video again. Every other channel is standardised with the training videos' mean and std."""
    channels: list[Channel]
    mean: list[float]  # of the channels that are not encoder channels, in `channels` order
    std: list[float]
    basis: list[list[float]] | None = None  # [k, encoder channels]

    @property
    def groups(self) -> tuple[list[Channel], list[Channel]]:
        return ([c for c in self.channels if c.set == ENCODER], [c for c in self.channels if c.set != ENCODER])

    @property
    def width(self) -> int:
        encoder, other = self.groups
        return (len(self.basis) if self.basis else len(encoder)) + len(other)

    @classmethod
    def fit(cls, items: list[VideoFeatures], channels: list[Channel], rate_hz: float, pca: int = 0) -> Normaliser:
        norm = cls(channels, [], [])
        encoder, other = norm.groups
        if other:
            cat = np.concatenate([on_grid(design(it, other), it.fps, rate_hz) for it in items], 1)
            norm.mean, norm.std = cat.mean(1).tolist(), (cat.std(1) + 1e-6).tolist()
        if encoder and 0 < pca < len(encoder):
            cat = np.concatenate([on_grid(design(it, encoder), it.fps, rate_hz) for it in items], 1)
            norm.basis = principal_directions(cat, pca).tolist()
        return norm

    def apply(self, item: VideoFeatures, rate_hz: float) -> np.ndarray:
        encoder, other = self.groups
        parts = []
        if encoder:
            x = on_grid(design(item, encoder), item.fps, rate_hz)
            parts.append(per_video_standardise((np.asarray(self.basis, np.float32) @ x).T).T if self.basis else x)
        if other:
            x = on_grid(design(item, other), item.fps, rate_hz)
            parts.append((x - np.array(self.mean)[:, None]) / np.array(self.std)[:, None])
        return np.concatenate(parts, 0).astype(np.float32)


def events_on_grid(gt_video: pd.DataFrame, fps: float, rate_hz: float) -> np.ndarray:
    """A video's ground-truth rows -> [E, 3] (onset step, end step exclusive, class index) on the grid."""
    rows = [(int(r.onset) / fps * rate_hz, (int(r.offset) + 1) / fps * rate_hz, CLASSES.index(str(r.type)))
            for r in gt_video.itertuples(index=False)]
    return np.asarray(rows, np.float32).reshape(-1, 3)

"""Spotting heads: time-ordered encoder features -> per-frame logits for the CHANNELS of finetune.windows.

The head sees features [B, T', H', W', D] already in time order (the encoder un-permutes its regions), pools the
spatial grid to `rows` horizontal bands (2 = upper / lower face, where brow and mouth actions live), mixes a few
neighbouring tubelets with a temporal convolution and predicts 4 logits per tubelet, repeated over the tubelet's
frames. Each output frame depends only on tubelets within kernel // 2 of its own: scores stay where events are.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from finetune.windows import CHANNELS


def pool_features(features: torch.Tensor, rows: int) -> torch.Tensor:
    """[B, T', H', W', D] -> [B, T', rows, D]: mean over width and over `rows` bands of height."""
    b, t, h, w, d = features.shape
    x = features.mean(dim=3)  # [B, T', H', D]
    x = F.adaptive_avg_pool1d(x.permute(0, 1, 3, 2).reshape(b * t, d, h), rows)  # [B*T', D, rows]
    return x.reshape(b, t, d, rows).permute(0, 1, 3, 2).contiguous()


class SpottingHead(nn.Module):
    def __init__(self, dim: int, rows: int = 2, hidden: int = 64, kernel: int = 3, tubelet: int = 2,
                 eps: float = 1e-5):
        super().__init__()
        self.rows, self.tubelet = rows, tubelet
        self.norm = nn.LayerNorm(rows * dim, eps=eps)  # the encoder's eps: a release builds both with one value
        self.temporal = nn.Conv1d(rows * dim, hidden, kernel, padding=kernel // 2)
        self.out = nn.Linear(hidden, len(CHANNELS))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Time-ordered encoder features [B, T', H', W', D] -> logits [B, T' * tubelet, 4]."""
        return self.forward_pooled(pool_features(features, self.rows))

    def forward_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled features [B, T', rows, D] (cacheable for a frozen encoder) -> logits [B, T' * tubelet, 4]."""
        b, t = pooled.shape[:2]
        x = self.norm(pooled.reshape(b, t, -1))
        x = F.gelu(self.temporal(x.transpose(1, 2))).transpose(1, 2)  # [B, T', hidden]
        logits = self.out(x)
        return logits.repeat_interleave(self.tubelet, dim=1)


class EncoderHeads(nn.Module):
    """An encoder shared by one head per granularity."""

    def __init__(self, encoder: nn.Module, features_fn, dim: int, granularities: list[str], rows: int = 2,
                 hidden: int = 64, kernel: int = 3, tubelet: int = 2, eps: float = 1e-5):
        super().__init__()
        self.encoder = encoder
        self.features_fn = features_fn  # (encoder, video [B,3,T,H,W]) -> [B, T', H', W', D]
        self.heads = nn.ModuleDict({g: SpottingHead(dim, rows, hidden, kernel, tubelet, eps) for g in granularities})

    def pooled(self, video: torch.Tensor, rows: int) -> torch.Tensor:
        return pool_features(self.features_fn(self.encoder, video), rows)

    def forward(self, video: torch.Tensor, granularity: str) -> torch.Tensor:
        """Normalised video [B, 3, T, H, W] -> logits [B, T, 4] for one granularity's head."""
        return self.heads[granularity](self.features_fn(self.encoder, video))

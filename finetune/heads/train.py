"""The fine-tuning loop: spotting heads (and optionally the last encoder blocks) on labelled windows.

Two paths, one loss:
  - frozen: heads learn from cached pooled encoder features (finetune.heads.features) - seconds per head on CPU;
  - partial / full: windows are decoded and encoded every step; encoder blocks train with layer-wise lr decay.
Loss: BCE (or focal) on the presence channels with a positive-class weight (events are a few % of frames), plus
apex_weight x BCE on the soft apex-proximity targets.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from timm.optim import param_groups_weight_decay
from torch.nn import functional as F
from tqdm import tqdm

from finetune.encoder.layer_decay import encoder_param_groups
from finetune.encoder.load import encoder_features, load_encoder, require_rgb_input
from finetune.heads.config import FinetuneConfig, FinetuneTrainConfig
from finetune.heads.features import FeatureSet, compute_features, plan_windows
from finetune.heads.model import EncoderHeads, SpottingHead
from finetune.heads.predict import load_frames, window_batch
from finetune.windows import Window, frame_labels, window_labels

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def video_labels(videos: pd.DataFrame, gt: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-frame targets [num_frames, 4] of every video in the table."""
    return {str(r.video): frame_labels(gt[gt["video"] == r.video], int(r.num_frames))
            for r in videos.itertuples(index=False)}


def window_targets(labels: np.ndarray, windows: list[Window]) -> torch.Tensor:
    return torch.from_numpy(np.stack([window_labels(labels, w) for w in windows]))


def auto_pos_weight(targets: torch.Tensor, cap: float = 20.0) -> torch.Tensor:
    """negatives / positives per presence channel, capped: without it the heads learn 'never an event'."""
    present = targets[..., :2].reshape(-1, 2)
    pos = present.sum(0)
    neg = present.shape[0] - pos
    return torch.clamp(neg / pos.clamp(min=1.0), 1.0, cap)


def spotting_loss(logits: torch.Tensor, targets: torch.Tensor, cfg: FinetuneTrainConfig,
                  pos_weight: torch.Tensor) -> torch.Tensor:
    """logits, targets: [B, T, 4] in CHANNELS order (presence x2, apex x2)."""
    present_logits, present_t = logits[..., :2], targets[..., :2]
    if cfg.loss == "focal":
        bce = F.binary_cross_entropy_with_logits(present_logits, present_t, reduction="none")
        p_t = torch.exp(-bce)
        weight = torch.where(present_t > 0.5, pos_weight / (1 + pos_weight), 1 / (1 + pos_weight))
        presence = (weight * (1 - p_t) ** cfg.focal_gamma * bce).mean() * 2
    else:
        presence = F.binary_cross_entropy_with_logits(present_logits, present_t, pos_weight=pos_weight)
    apex = F.binary_cross_entropy_with_logits(logits[..., 2:], targets[..., 2:])
    return presence + cfg.apex_weight * apex


def train_head(head: SpottingHead, pooled: torch.Tensor, targets: torch.Tensor, cfg: FinetuneTrainConfig,
               desc: str = "head") -> SpottingHead:
    """Fit one head on cached pooled features [N, T', rows, D] and window targets [N, T, 4]."""
    seed_everything(cfg.seed)
    pos_weight = torch.full((2,), cfg.pos_weight) if cfg.pos_weight else auto_pos_weight(targets)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, cfg.epochs))
    head.train()
    n = len(pooled)
    for _ in tqdm(range(cfg.epochs), desc=desc, unit="epoch", leave=False):
        for idx in torch.randperm(n).split(cfg.batch_size):
            loss = spotting_loss(head.forward_pooled(pooled[idx]), targets[idx], cfg, pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    head.eval()
    return head


def fit_heads(spotter: EncoderHeads, features: FeatureSet, labels: dict[str, np.ndarray], videos: list[str],
              cfg: FinetuneConfig) -> EncoderHeads:
    """Frozen mode: train every granularity's head on the cached features of `videos` only."""
    for g in cfg.granularities:
        windows = features.windows[g.name]
        pooled = torch.cat([features.pooled[g.name][v] for v in videos])
        targets = torch.cat([window_targets(labels[v], windows[v]) for v in videos])
        train_head(spotter.heads[g.name], pooled, targets, cfg.train, desc=f"head {g.name}")
    return spotter


def param_groups(spotter: EncoderHeads, cfg: FinetuneTrainConfig) -> list[dict]:
    """The encoder's groups (encoder_param_groups) and the heads at the full lr."""
    groups = encoder_param_groups(spotter.encoder, cfg)
    spotter.heads.requires_grad_(True)
    return groups + [{**g, "lr": cfg.lr} for g in param_groups_weight_decay(spotter.heads, cfg.weight_decay)]


def fit_end_to_end(spotter: EncoderHeads, videos: pd.DataFrame, labels: dict[str, np.ndarray],
                   cfg: FinetuneConfig) -> EncoderHeads:
    """Partial / full mode: decode windows and train encoder blocks + heads together."""
    require_rgb_input(spotter.encoder, cfg.model.encoder)
    seed_everything(cfg.train.seed)
    model_cfg = spotter.encoder.cfg
    windows = plan_windows(videos, cfg, model_cfg.frames)
    frames = {str(r.video): load_frames(r.path, model_cfg.img_size) for r in videos.itertuples(index=False)}
    samples = [(g.name, v, w) for g in cfg.granularities for v, ws in windows[g.name].items() for w in ws]
    pos_weight = (torch.full((2,), cfg.train.pos_weight) if cfg.train.pos_weight else
                  auto_pos_weight(torch.from_numpy(np.concatenate([labels[v] for v in frames]))[None]))
    opt = torch.optim.AdamW(param_groups(spotter, cfg.train))
    spotter.encoder.set_grad_checkpointing(cfg.train.grad_checkpointing)
    spotter.train()
    for _ in tqdm(range(cfg.train.epochs), desc="fine-tune", unit="epoch"):
        random.shuffle(samples)
        for start in range(0, len(samples), cfg.train.batch_size):
            chunk = samples[start:start + cfg.train.batch_size]
            loss = 0.0
            for gran in {s[0] for s in chunk}:
                part = [s for s in chunk if s[0] == gran]
                video = torch.cat([window_batch(frames[v], [w]) for _, v, w in part])
                targets = torch.cat([window_targets(labels[v], [w]) for _, v, w in part])
                logits = spotter(video, gran)
                loss = loss + spotting_loss(logits, targets, cfg.train, pos_weight) * len(part) / len(chunk)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    spotter.eval()
    return spotter


def build_heads(encoder, cfg: FinetuneConfig) -> EncoderHeads:
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        return EncoderHeads(encoder, encoder_features, encoder.cfg.dim, [g.name for g in cfg.granularities],
                       cfg.model.pool_rows, cfg.model.head_hidden, cfg.model.head_kernel, encoder.cfg.tubelet,
                       encoder.cfg.layer_norm_eps)


def train_heads(cfg: FinetuneConfig, videos: pd.DataFrame, gt: pd.DataFrame, features: FeatureSet | None = None,
                  encoder=None) -> EncoderHeads:
    """Train a spotter on every video of `videos` (frozen: from `features`, computed if not given)."""
    torch.set_num_threads(cfg.train.threads)
    if encoder is None:  # stochastic depth only where the encoder learns (a frozen one runs in eval mode)
        drop_path = None if cfg.train.mode == "frozen" else cfg.train.drop_path
        encoder = load_encoder(cfg.model.encoder, cfg.model.name, cfg.train.seed, drop_path=drop_path)
    spotter = build_heads(encoder, cfg)
    labels = video_labels(videos, gt)
    if cfg.train.mode == "frozen":
        if features is None:
            cache = cfg.feature_cache or str(Path(cfg.out) / "features")
            features = compute_features(encoder, videos, cfg, cache)
        return fit_heads(spotter, features, labels, [str(v) for v in videos["video"]], cfg)
    return fit_end_to_end(spotter, videos, labels, cfg)

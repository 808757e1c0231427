"""Fine-tuning the encoder on the motion view (the stabilised, lighting-normalised, temporal-contrast input of
finetune.encoder.features) with labelled windows: the learning step of `spotting loso` inside each fold
(spotting.channels.tuned), so the encoder channels the detector reads come from an encoder that has seen
expressions.

What learns: `partial` the last `trainable_blocks` LGI blocks and the final norm (layer-wise lr decay, the
VideoMAE fine-tuning recipe), `full` everything; plus a window head on exactly what the detector will read
(landmark-region token means and spreads, finetune.encoder.features.pool_tokens, standardised per video and
granularity as spotting.channels.encoder standardises them) that predicts per tubelet whether a macro / a micro
expression is under way. The head is thrown away afterwards: the detector reads the pooled features, not the head.
Without the per-video standardisation the head reads identity: between-subject variance is most of the pooled
features' variance (DESIGN.md section 5), and the first bench fold's validation AUC stayed at 0.51-0.55. The video
statistics come from `stat_windows` evenly spaced windows per video and granularity, recomputed with the current
encoder before every epoch and every validation (no labels are read).
Each epoch samples `windows_per_epoch` windows of both granularities, `event_fraction` of them holding an event
(events are a few % of the time), augmented (mirror, contrast gain, a whole-clip shift, pixel noise).
Epoch 0 trains the head alone (linear probing before fine-tuning). Early stopping: after each epoch the mean
over types of the tubelet-level ROC AUC on the windows of the validation videos (training subjects held out of
the fitting; the caller picks them); the encoder of the best epoch is returned, epoch 0 (the encoder as given,
read by a fitted head) included, so tuning never hands back an encoder that scores worse on them than the one it
got.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from typing import Literal

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from data.common.config import Config, setting
from data.common.errors import ConfigError
from data.faces import stabilise as st
from data.faces.motion_view import MotionViewConfig, ViewStream, stream_windows, view_stream
from finetune.encoder import features as mf
from finetune.encoder.layer_decay import encoder_param_groups
from finetune.heads.train import auto_pos_weight
from finetune.windows import Window, batches, window_labels

log = logging.getLogger(__name__)


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative one (ties count half): scikit-learn's
    roc_auc_score; NaN without both classes or with a score that is not finite (a diverged head), where
    scikit-learn would warn or raise. The early-stopping score here and the encoder probe's
    (benchmarks/encoder_probe.py)."""
    positive = np.asarray(label) > 0.5
    score = np.asarray(score)
    if positive.all() or not positive.any() or not np.isfinite(score).all():
        return float("nan")
    return float(roc_auc_score(positive, score))


@dataclasses.dataclass
class AugmentConfig(Config):
    flip: bool = True  # mirror half the windows: a mirrored face shows the same expression
    gain_jitter: float = setting(0.25, ge=0)  # contrast gain exp(U(-j, j)): expressions differ in strength
    shift_px: int = setting(2, ge=0)  # circular whole-clip shift up to this many pixels: stabilisation error
    pixel_noise: float = setting(0.05, ge=0)  # Gaussian noise on the view (model units): sensor and coding noise


@dataclasses.dataclass
class EncoderTuningConfig(Config):
    # frozen: the encoder as loaded (its channels are computed once for all folds); partial: the last
    # `trainable_blocks` blocks and the final norm learn inside each fold; full: the whole encoder learns
    mode: Literal["frozen", "partial", "full"] = "frozen"
    trainable_blocks: int = setting(1, ge=1)
    epochs: int = setting(4, ge=1)
    patience: int = setting(2, ge=1)  # stop after this many epochs without a better validation AUC
    windows_per_epoch: int = setting(480, ge=1)
    event_fraction: float = setting(0.5, ge=0, le=1)  # share of each epoch's windows that hold an event
    batch_size: int = setting(8, ge=1)
    lr: float = setting(3e-4, gt=0)  # the final norm's; block i of n learns at lr * layer_decay ** (n - i)
    layer_decay: float = setting(0.75, gt=0, le=1)
    head_lr: float = setting(2e-3, gt=0)
    weight_decay: float = setting(0.05, ge=0)
    val_subjects: int = setting(1, ge=1)  # the last training subjects (sorted): early stopping reads them only
    val_windows: int = setting(240, ge=1)  # validation windows per epoch (a fixed random subset)
    stat_windows: int = setting(16, ge=1)  # windows per video and granularity for its feature mean and std
    probe_epochs: int = setting(20, ge=1)  # epoch 0: the head alone on the frozen encoder's features
    probe_windows: int = setting(4000, ge=1)  # training windows encoded for it (all, when fewer)
    seed: int = setting(0, ge=0)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)


@dataclasses.dataclass
class TuningVideo:
    """One labelled video as the tuning loop reads it: window_clips' inputs and presence targets on the grid."""
    video: str
    stream: ViewStream
    labels: np.ndarray  # float32 [N, 2] share of each grid step inside a macro / micro event


def grid_labels(frame_labels: np.ndarray, steps: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Per-frame presence [F, >= 2] -> per grid step [N, 2]: the mean over the frames each step holds (steps: the
    grid step of every frame, spotting.channels.encoder.frame_steps); a step that holds no frame (a video slower
    than the grid) takes its source frame's."""
    num_steps = len(sources)
    total = np.zeros((num_steps, 2))
    np.add.at(total, steps, frame_labels[:, :2])
    count = np.bincount(steps, minlength=num_steps)
    out = frame_labels[sources, :2].astype(np.float64)
    out[count > 0] = total[count > 0] / count[count > 0, None]
    return out.astype(np.float32)


def tuning_video(sv: st.StableVideo, labels: np.ndarray, steps: np.ndarray, view: MotionViewConfig) -> TuningVideo:
    return TuningVideo(sv.video, view_stream(sv, view), grid_labels(labels, steps, sv.sources))


@dataclasses.dataclass
class Sample:
    video: int  # index into the list of TuningVideo
    gran: str
    window: Window
    target: np.ndarray  # [T', 2] per tubelet


def window_samples(videos: list[TuningVideo], grans, frames: int, tubelet: int) -> list[Sample]:
    """Every window of every granularity, with per-tubelet targets (the mean over the grid steps it covers)."""
    out = []
    for i, tv in enumerate(videos):
        for g in grans:
            for w in mf.grid_windows(len(tv.labels), tv.stream.rate_hz, g, frames):
                per_frame = window_labels(tv.labels, w)  # [frames, 2]
                out.append(Sample(i, g.name, w, per_frame.reshape(-1, tubelet, 2).mean(1)))
    return out


Stats = dict  # (video index, granularity name) -> (mean [F], std [F]) of the pooled features


def pooled_features(encoder, video: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Model input [B, C, T, S, S] -> [B, T', F]: each tubelet's region means and spreads of the final tokens (what
    the detector reads with the default pooling; spotting.evaluation.loso refuses tuning for other layers and
    poolings)."""
    _, regions, spread = mf.pool_tokens(encoder.forward_all(video), weights)
    return torch.cat([regions.flatten(2), spread.flatten(2)], -1)


def standardise(x: torch.Tensor, batch: list[Sample], stats: Stats) -> torch.Tensor:
    mean = torch.stack([stats[(s.video, s.gran)][0] for s in batch])[:, None]
    std = torch.stack([stats[(s.video, s.gran)][1] for s in batch])[:, None]
    return (x - mean) / std


def augment(clip: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One window [C, T, S, S] of the motion view, transformed as a whole (every frame alike)."""
    if cfg.flip and rng.random() < 0.5:
        clip = clip[..., ::-1]
    if cfg.gain_jitter > 0:
        clip = clip * float(np.exp(rng.uniform(-cfg.gain_jitter, cfg.gain_jitter)))
    if cfg.shift_px > 0:
        dy, dx = rng.integers(-cfg.shift_px, cfg.shift_px + 1, 2)
        clip = np.roll(clip, (int(dy), int(dx)), axis=(-2, -1))
    if cfg.pixel_noise > 0:
        clip = clip + rng.normal(0, cfg.pixel_noise, clip.shape)
    return np.ascontiguousarray(clip, dtype=np.float32)


def clips(videos: list[TuningVideo], batch: list[Sample], view: MotionViewConfig) -> list[np.ndarray]:
    return [stream_windows(videos[s.video].stream, [s.window], view)[0] for s in batch]


@torch.no_grad()
def encoded(encoder, videos: list[TuningVideo], samples: list[Sample], view, weights, batch_size: int,
            stats: Stats | None = None) -> torch.Tensor:
    """[N, T', F] pooled features of `samples`, standardised with `stats` when given; no gradients."""
    parts = []
    for b in batches(samples, batch_size):
        x = pooled_features(encoder, torch.from_numpy(np.stack(clips(videos, b, view))), weights)
        parts.append(x if stats is None else standardise(x, b, stats))
    return torch.cat(parts)


@torch.no_grad()
def video_stats(encoder, videos: list[TuningVideo], samples: list[Sample], view, weights, cfg) -> Stats:
    """Per video and granularity the mean and std of the pooled features over the tubelets of `stat_windows`
    evenly spaced windows, with the encoder as it is now."""
    encoder.eval()
    groups: dict[tuple[int, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.video, s.gran), []).append(s)
    stats = {}
    for key, group in groups.items():
        pick = [group[i] for i in np.unique(np.linspace(0, len(group) - 1, cfg.stat_windows).round().astype(int))]
        feats = encoded(encoder, videos, pick, view, weights, cfg.batch_size).flatten(0, 1)
        stats[key] = (feats.mean(0), feats.std(0, correction=0) + 1e-6)
    return stats


@torch.no_grad()
def validation_auc(encoder, head: nn.Linear, videos, samples: list[Sample], everything: list[Sample], view,
                   weights, cfg) -> float:
    """Mean over macro / micro of the tubelet-level ROC AUC on `samples` (types without both classes are skipped;
    NaN when neither has); the video statistics come from `everything`, all the validation videos' windows."""
    stats = video_stats(encoder, videos, everything, view, weights, cfg)
    head.eval()
    score = head(encoded(encoder, videos, samples, view, weights, cfg.batch_size, stats)).reshape(-1, 2).numpy()
    truth = np.concatenate([s.target for s in samples]) > 0.5
    aucs = [roc_auc(score[:, k], truth[:, k]) for k in range(2)]
    return float(np.nanmean(aucs)) if not all(np.isnan(aucs)) else float("nan")


def epoch_samples(samples: list[Sample], cfg: EncoderTuningConfig, rng: np.random.Generator) -> list[Sample]:
    """`windows_per_epoch` windows, `event_fraction` of them holding an event (drawn with replacement when
    there are fewer); fewer windows when the videos hold no window of one kind."""
    has_event = np.array([s.target.max() > 0.5 for s in samples])
    events, rest = np.flatnonzero(has_event), np.flatnonzero(~has_event)
    n_events = round(cfg.windows_per_epoch * cfg.event_fraction) if len(events) else 0
    n_rest = cfg.windows_per_epoch - n_events if len(rest) else 0
    pick = np.concatenate([rng.choice(pool, n, replace=n > len(pool)) for pool, n in
                           ((events, n_events), (rest, n_rest)) if n]).astype(int)
    rng.shuffle(pick)
    return [samples[i] for i in pick]


def probe_head(enc, head: nn.Linear, train: list[TuningVideo], tr: list[Sample], view, weights,
               cfg: EncoderTuningConfig, rng: np.random.Generator, pos_weight: torch.Tensor) -> float:
    """Epoch 0: the head alone, `probe_epochs` passes over the frozen encoder's features of up to `probe_windows`
    training windows (encoded once, not augmented); the last pass's mean loss."""
    stats = video_stats(enc, train, tr, view, weights, cfg)
    pick = [tr[i] for i in sorted(rng.choice(len(tr), min(cfg.probe_windows, len(tr)), replace=False))]
    x = encoded(enc, train, pick, view, weights, cfg.batch_size, stats)
    y = torch.from_numpy(np.stack([s.target for s in pick]))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.head_lr, weight_decay=cfg.weight_decay)
    head.train()
    for _ in range(cfg.probe_epochs):
        losses = []
        for idx in torch.randperm(len(x)).split(32):
            loss = F.binary_cross_entropy_with_logits(head(x[idx]), y[idx], pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return float(np.mean(losses))


def train_epoch(enc, head: nn.Linear, opt, train: list[TuningVideo], tr: list[Sample], view, weights,
                cfg: EncoderTuningConfig, rng: np.random.Generator, pos_weight: torch.Tensor) -> float:
    """One epoch of sampled, augmented windows through encoder and head; the mean loss."""
    stats = video_stats(enc, train, tr, view, weights, cfg)
    enc.train()
    head.train()
    losses = []
    for batch in batches(epoch_samples(tr, cfg, rng), cfg.batch_size):
        video = torch.from_numpy(np.stack([augment(c, cfg.augment, rng) for c in clips(train, batch, view)]))
        target = torch.from_numpy(np.stack([s.target for s in batch]))
        loss = F.binary_cross_entropy_with_logits(head(standardise(pooled_features(enc, video, weights), batch,
                                                                   stats)), target, pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


def check_tuning(cfg: EncoderTuningConfig, encoder) -> None:
    """Refuse settings the encoder cannot take, before any fold starts."""
    if cfg.mode == "partial" and cfg.trainable_blocks > len(encoder.blocks):
        raise ConfigError(f"trainable_blocks={cfg.trainable_blocks} but the encoder has {len(encoder.blocks)} blocks",
                          field="encoder_tuning.trainable_blocks",
                          fix=f"at most {len(encoder.blocks)}, or encoder_tuning.mode=full")


def tune_encoder(encoder, train: list[TuningVideo], val: list[TuningVideo], view: MotionViewConfig, grans,
                 cfg: EncoderTuningConfig) -> tuple[object, dict]:
    """A copy of `encoder` fine-tuned on `train` (early stopping on `val`), in eval mode with gradients off, and
    {"best_epoch", "best_val_auc", "history": per epoch loss, validation AUC, seconds, encoder digest}.
    Epoch 0 fits the head alone on the encoder as given (probe_head: linear probing, then fine-tuning; the head
    is not random when the encoder starts to learn, and epoch 0's AUC is the frozen encoder's, the bar the tuned
    epochs must beat to be kept). The global torch RNG is left as it was."""
    check_tuning(cfg, encoder)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        enc, best, history, windows = _tune(copy.deepcopy(encoder), train, val, view, grans, cfg)
    enc.load_state_dict(best[2])
    enc.eval().requires_grad_(False)
    return enc, {"best_epoch": best[1], "best_val_auc": best[0], **windows, "history": history}


def _tune(enc, train, val, view, grans, cfg: EncoderTuningConfig):
    rng = np.random.default_rng(cfg.seed)
    weights = torch.from_numpy(mf.region_weights(enc.cfg.img_size, enc.cfg.patch))
    head = nn.Linear(2 * len(weights) * enc.cfg.dim, 2)  # per tubelet: macro, micro
    tr = window_samples(train, grans, enc.cfg.frames, enc.cfg.tubelet)
    va_all = window_samples(val, grans, enc.cfg.frames, enc.cfg.tubelet)
    va = [va_all[i] for i in sorted(rng.choice(len(va_all), min(cfg.val_windows, len(va_all)), replace=False))]
    opt = torch.optim.AdamW(encoder_param_groups(enc, cfg) + [{"params": list(head.parameters()), "lr": cfg.head_lr,
                                                               "weight_decay": cfg.weight_decay}])
    pos_weight = auto_pos_weight(torch.from_numpy(np.concatenate([s.target for s in tr])))
    history, best = [], None
    bar = tqdm(range(cfg.epochs + 1), desc="encoder tuning", unit="epoch", leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        loss = (train_epoch(enc, head, opt, train, tr, view, weights, cfg, rng, pos_weight) if epoch else
                probe_head(enc, head, train, tr, view, weights, cfg, rng, pos_weight))
        auc = validation_auc(enc, head, val, va, va_all, view, weights, cfg)
        history.append({"epoch": epoch, "loss": round(loss, 5), "val_auc": None if np.isnan(auc) else auc,
                        "seconds": round(time.perf_counter() - t0, 1), "digest": mf.encoder_digest(enc)})
        bar.set_postfix(val_auc=f"{auc:.3f}")
        if np.isnan(auc):  # nothing can be judged: keep what was judged last (at epoch 0, the encoder as given)
            log.warning("encoder tuning: no validation AUC at epoch %d (no event type with both classes, or "
                        "non-finite scores); keeping epoch %d", epoch, best[1] if best else 0)
            return enc, best or (None, 0, copy.deepcopy(enc.state_dict())), history, _sizes(tr, va)
        if best is None or auc > best[0]:
            best = (auc, epoch, copy.deepcopy(enc.state_dict()))
        elif epoch - best[1] >= cfg.patience:
            break
    return enc, best, history, _sizes(tr, va)


def _sizes(tr: list[Sample], va: list[Sample]) -> dict:
    return {"train_windows": len(tr), "val_windows": len(va)}

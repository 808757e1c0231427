"""One LOSO fold of the SOFTNet-family methods (softnet, lgnmnet, mean): build training windows from the
training subjects, train one network per expression type, spot the held-out subject's videos.

The methods differ only in labels (overlap IoU vs intersection rate), the extra emotion head (mean) and the
post-processing (SOFTNet peaks vs Savitzky-Golay + adjacent-peak pairing); everything else is shared here.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch

from data.common.tables import TYPES, empty_intervals
from spotting import intervals as iv
from spotting.published import lgnmnet, mean, softnet
from spotting.published.config import PublishedConfig


@dataclasses.dataclass
class VideoData:
    """One video with its ROI images per k and its ground truth."""
    subject: str
    video: str
    fps: float
    num_frames: int
    images: dict[int, np.ndarray]  # k -> [T, 3, S, S]
    gt: pd.DataFrame
    path: str = ""
    appearance_cache: str = ""  # where lgsnet caches the appearance stream


def emotion_classes(gt: pd.DataFrame) -> list[str]:
    return sorted(e for e in gt["emotion"].fillna("").astype(str).unique() if e)


def window_samples(method: str, v: VideoData, kind: str, k: int, classes: list[str]):
    """(pair indices, labels, emotion targets) of one video's valid windows for one type."""
    n = max(0, v.num_frames - k)  # pairs past the end have no second frame
    start, end = softnet.window_bounds(v.num_frames, k)
    start, end = start[:n], end[:n]
    rows = v.gt[v.gt["type"] == kind]
    gt = rows[["onset", "offset"]].to_numpy(np.int64).reshape(-1, 2)
    if method == "lgnmnet":
        y = lgnmnet.intersection_rate_labels(start, end, gt)
    else:
        y = softnet.overlap_labels(start, end, gt, soft=True)
    emo = mean.emotion_targets(start, end, gt, list(rows["emotion"].fillna("").astype(str)), classes)
    return np.arange(n), y, emo


def training_set(method: str, cfg: PublishedConfig, videos: list[VideoData], kind: str, classes: list[str], rng):
    """Images, labels and emotion targets: every positive window, negatives capped at neg_ratio x positives."""
    xs, ys, es = [], [], []
    for v in videos:
        k = cfg.type_k(kind, v.fps)
        idx, y, emo = window_samples(method, v, kind, k, classes)
        xs.append(v.images[k][idx])
        ys.append(y)
        es.append(emo)
    x, y, emo = np.concatenate(xs), np.concatenate(ys), np.concatenate(es)
    pos, neg = np.flatnonzero(y > 0), np.flatnonzero(y <= 0)
    keep_neg = min(len(neg), max(1, int(cfg.train.neg_ratio * max(1, len(pos)))))
    chosen = np.sort(np.concatenate([pos, rng.choice(neg, keep_neg, replace=False) if len(neg) else neg]))
    return (torch.from_numpy(x[chosen].astype(np.float32)), torch.from_numpy(y[chosen]),
            torch.from_numpy(emo[chosen]))


def train_type(method: str, cfg: PublishedConfig, videos: list[VideoData], kind: str, classes: list[str]):
    rng = np.random.default_rng(cfg.train.seed)
    x, y, emo = training_set(method, cfg, videos, kind, classes, rng)
    torch.manual_seed(cfg.train.seed)
    extra = {"emotion": len(classes)} if method == "mean" and classes else None
    model = softnet.SoftNet(cfg.image_size, extra_heads=extra)
    t = cfg.train
    softnet.train_model(model, x, y, t.epochs, t.batch_size, t.lr, t.seed, emo if extra else None,
                        t.emotion_weight, desc=f"{method} {kind}")
    return model


def spot_type(method: str, cfg: PublishedConfig, score: np.ndarray, k: int, kind: str, fps: float) -> list[iv.Interval]:
    if method == "lgnmnet":
        longest = cfg.micro_max_s if kind == "micro" else cfg.macro_max_s
        return lgnmnet.spot(score, k, cfg.p, kind, max(k, round(longest * fps)))
    return softnet.spot(score, k, cfg.p, kind)


def spot_video(method: str, cfg: PublishedConfig, models: dict, v: VideoData, classes: list[str]) -> pd.DataFrame:
    found, emotion = {}, {}
    for kind in TYPES:
        k = cfg.type_k(kind, v.fps)
        out = softnet.predict(models[kind], v.images[k])
        found[kind] = spot_type(method, cfg, out["spot"], k, kind, v.fps)
        if "emotion" in out:
            emotion[kind] = softnet.centre(mean.softmax(out["emotion"]), k)
    intervals = iv.final_intervals(found["macro"], found["micro"], cfg.micro_inside_macro)
    frame = iv.to_frame(intervals, v.subject, v.video)
    if emotion:
        frame["emotion"] = [mean.interval_emotion(emotion[t], on, off, classes)
                            for t, on, off in zip(frame["type"], frame["onset"], frame["offset"])]
    return frame


def run_fold(method: str, cfg: PublishedConfig, videos: list[VideoData], test_subject: str) -> pd.DataFrame:
    """Predictions for the held-out subject's videos; its labels are never read."""
    torch.set_num_threads(max(1, cfg.train.threads))
    train = [v for v in videos if v.subject != test_subject]
    classes = emotion_classes(pd.concat([v.gt for v in train])) if method == "mean" else []
    models = {kind: train_type(method, cfg, train, kind, classes) for kind in TYPES}
    frames = [empty_intervals(with_score=True)]
    frames += [spot_video(method, cfg, models, v, classes) for v in videos if v.subject == test_subject]
    return pd.concat(frames, ignore_index=True)

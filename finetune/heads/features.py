"""Frozen-encoder window features, computed once per (encoder, granularity, video) and cached on disk.

With a frozen encoder every LOSO fold and every ablation trains only heads, so the expensive part (decoding and
encoding every window) happens once. Cache files are safetensors under
<cache>/<encoder digest + pooling>/<granularity>/<video>.safetensors; a rerun skips files already there.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from data.common.atomic import atomic_path
from data.common.errors import DataError
from finetune.encoder.load import encoder_digest, encoder_features, load_safetensors, require_rgb_input
from finetune.heads.config import FinetuneConfig
from finetune.heads.predict import load_frames, pooled_features
from finetune.windows import Window, video_windows

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FeatureSet:
    """Windows and pooled features by granularity and video."""
    windows: dict[str, dict[str, list[Window]]]
    pooled: dict[str, dict[str, torch.Tensor]]

    def merge(self, other: FeatureSet) -> FeatureSet:
        """Both sets' videos (computed one video at a time)."""
        return FeatureSet({g: {**w, **other.windows[g]} for g, w in self.windows.items()},
                          {g: {**p, **other.pooled[g]} for g, p in self.pooled.items()})


def plan_windows(videos: pd.DataFrame, cfg: FinetuneConfig, frames: int) -> dict[str, dict[str, list[Window]]]:
    return {g.name: {str(r.video): video_windows(str(r.video), int(r.num_frames), float(r.fps), g.span_s,
                                                 g.hop_s, frames)
                     for r in videos.itertuples(index=False)}
            for g in cfg.granularities}


def _cache_file(root: Path, gran, video: str) -> Path:
    tag = f"{gran.name}_s{gran.span_s:g}_h{gran.hop_s:g}"
    return root / tag / f"{video}.safetensors"


def compute_features(encoder, videos: pd.DataFrame, cfg: FinetuneConfig, cache_dir, batch_size: int = 16,
                     frames_of=None) -> FeatureSet:
    """Pooled features for every window of every video in the video table, from cache where present.
    `frames_of(row)`: a video's frames at the model's size (default: decoded from its path)."""
    from safetensors.torch import save_file

    require_rgb_input(encoder, cfg.model.encoder)
    model_cfg = encoder.cfg
    root = Path(cache_dir) / f"{encoder_digest(encoder)}_rows{cfg.model.pool_rows}"
    windows = plan_windows(videos, cfg, model_cfg.frames)
    todo = [(g, r) for g in cfg.granularities for r in videos.itertuples(index=False)
            if not _cache_file(root, g, str(r.video)).is_file()]
    total = sum(len(windows[g.name][str(r.video)]) for g, r in todo)
    if todo:
        log.info("encoding %d windows of %d video/granularity pairs -> %s", total, len(todo), root)
    pooled: dict[str, dict[str, torch.Tensor]] = {g.name: {} for g in cfg.granularities}
    frames_cache: dict[str, np.ndarray] = {}
    with tqdm(total=total, desc="encode windows", unit="window", disable=not todo) as bar:
        for g, r in todo:
            video = str(r.video)
            if video not in frames_cache:
                frames_cache.clear()  # hold one video's frames at a time
                frames_cache[video] = (frames_of(r) if frames_of is not None
                                       else load_frames(r.path, model_cfg.img_size))
            feats = pooled_features(encoder, encoder_features, frames_cache[video], windows[g.name][video],
                                    cfg.model.pool_rows, batch_size, bar)
            with atomic_path(_cache_file(root, g, video)) as tmp:
                save_file({"pooled": feats.contiguous()}, str(tmp))
    for g in cfg.granularities:
        for r in videos.itertuples(index=False):
            video = str(r.video)
            feats = load_safetensors(_cache_file(root, g, video))["pooled"]
            if len(feats) != len(windows[g.name][video]):
                raise DataError(f"cached features of {video} have {len(feats)} windows, expected "
                                f"{len(windows[g.name][video])}", path=root, fix="delete the cache folder")
            pooled[g.name][video] = feats
    return FeatureSet(windows, pooled)

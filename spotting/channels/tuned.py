"""Encoder fine-tuning inside a LOSO fold (LosoConfig.encoder_tuning): the encoder learns from the fold's
training subjects, then every video's encoder channels are rebuilt with it.

The training subjects' videos are stabilised exactly as spotting.channels.encoder stabilises them (the same
cache); the last `val_subjects` of them (sorted) only judge the epochs (early stopping), the rest are fitted
(finetune.encoder.tuning). The channels of every video are then made by spotting.channels.encoder, the builder
`spot` calls with the encoder a final model carries, so `spot` gives a video the channels it got here. Features
are cached under the tuned encoder's own digest, and the tuned encoder itself under <cache>/tuned/<key>/ (key:
TUNING_VERSION, the encoder as given, both configs, the torch thread count, the subjects, their videos and
labels), so a rerun of a fold, or another run with the same tuning and cache (e.g. the full system after the
encoder-only row), tunes and encodes nothing twice.
Nothing here reads the labels of a subject outside `subjects`.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from data.common.atomic import write_json
from data.common.config import to_dict
from data.common.errors import DataError
from finetune.encoder import tuning as mt
from finetune.encoder.features import encoder_digest
from finetune.encoder.load import load_encoder, save_encoder
from spotting.channels.builder import ChannelBuilder
from spotting.channels.encoder import EncoderChannelsConfig, frame_steps, stable_video
from spotting.evaluation import protocol

log = logging.getLogger(__name__)
TUNING_VERSION = 1  # bump when finetune.encoder.tuning learns differently: cached tuned encoders are then stale


def tuning_videos(videos: pd.DataFrame, labels: dict[str, np.ndarray], names: list[str], frames: int,
                  builder: ChannelBuilder) -> list[mt.TuningVideo]:
    rows = videos.set_index(videos["video"].astype(str))
    cfg = builder.encoder_channels
    out = []
    for v in tqdm(names, desc="tuning inputs", unit="video", leave=False):
        r = rows.loc[v]
        source = builder.source(r["path"], v, float(r["fps"]))
        sv = stable_video(source, cfg, frames, builder.encoder_cache)
        steps = frame_steps(source.num_frames, source.fps, sv.rate_hz, len(sv.crops))
        out.append(mt.tuning_video(sv, labels[v], steps, cfg.view))
    return out


def tuning_key(encoder, videos: pd.DataFrame, labels: dict[str, np.ndarray], subjects: list[str],
               cfg: mt.EncoderTuningConfig, channels_cfg: EncoderChannelsConfig) -> str:
    # the thread count: float sums in another order give other weights
    h = hashlib.sha1(f"{TUNING_VERSION}:{encoder_digest(encoder)}:{torch.get_num_threads()}".encode())
    h.update(json.dumps([to_dict(cfg), to_dict(channels_cfg), sorted(subjects)], sort_keys=True).encode())
    rows = videos.set_index(videos["video"].astype(str))
    for v in protocol.videos_of(videos, subjects):
        r = rows.loc[v]
        h.update(f"{v}:{r['path']}:{float(r['fps'])}:{int(r['num_frames'])}".encode())
        h.update(np.ascontiguousarray(labels[v]).tobytes())
    return h.hexdigest()[:16]


def cached_tuning(folder: Path | None):
    """(encoder, record) tuned before into `folder`, or None (absent, cut off, or weights that are not the ones
    recorded: then it is tuned again)."""
    if folder is None or not (folder / "record.json").is_file():
        return None
    try:
        record = json.loads((folder / "record.json").read_text())
        encoder = load_encoder(folder / "encoder", field=None).eval().requires_grad_(False)
        recorded = record["history"][record["best_epoch"]]["digest"]
    except (ValueError, KeyError, IndexError, TypeError, DataError) as e:
        log.warning("%s: unreadable (%s); tuning again", folder, e)
        return None
    if encoder_digest(encoder) != recorded:
        log.warning("%s: the tuned encoder is not the one recorded; tuning again", folder)
        return None
    return encoder, record


def tune_on_subjects(encoder, videos: pd.DataFrame, labels: dict[str, np.ndarray], subjects: list[str],
                     cfg: mt.EncoderTuningConfig, builder: ChannelBuilder) -> tuple[object, dict]:
    """A copy of `encoder` tuned on the videos of `subjects` only, and what happened ({"fitted", "early_stopping"}
    subjects + finetune.encoder.tuning's record). The videos' stabilised streams come from `builder` (its
    encoder cache, where the tuned encoder is cached too)."""
    channels_cfg, cache_dir = builder.encoder_channels, builder.encoder_cache
    folder = (Path(cache_dir) / "tuned" / tuning_key(encoder, videos, labels, subjects, cfg, channels_cfg)
              if cache_dir is not None else None)
    cached = cached_tuning(folder)
    if cached is not None:
        log.info("encoder tuned on %s before: %s", sorted(subjects), folder)
        return cached
    fitted, judged = protocol.split_subjects(sorted(subjects), cfg.val_subjects)
    frames = encoder.cfg.frames

    def inputs(subs):
        return tuning_videos(videos, labels, protocol.videos_of(videos, subs), frames, builder)

    tuned, info = mt.tune_encoder(encoder, inputs(fitted), inputs(judged), channels_cfg.view,
                                  channels_cfg.granularities, cfg)
    log.info("encoder tuned on %s (early stopping on %s): best epoch %d, validation AUC %s", fitted, judged,
             info["best_epoch"], info["best_val_auc"])
    record = {"fitted": fitted, "early_stopping": judged, **info}
    if folder is not None:  # the record last: its presence says the encoder beside it is whole
        save_encoder(tuned, folder / "encoder")
        write_json(folder / "record.json", record)
    return tuned, record

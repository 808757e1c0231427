"""The motion input of pretraining: the view the spotter's encoder channels show the encoder, made from clips of
stabilised, lighting-normalised grey faces (`python -m data pack` with crop: stabilised).

The spotter (finetune.motion_features.window_clips) turns each window of the lighting-normalised grid into
data.faces.stabilise.contrast_view(...) * gain, replicated to 3 channels; this module does the same to a batch
of shard clips, with the same functions, so pretraining and spotting see one input. Contrast views that need
the whole video ("video", "running") cannot be made from a clip and are refused.
"""
from __future__ import annotations

import numpy as np
import torch

from data.common.errors import ConfigError, DataError
from data.faces import stabilise as st
from data.shards.format import MANIFEST, read_manifest
from finetune.motion_features import MotionInputConfig

VIDEO_CONTRASTS = ("video", "running")  # need the whole video's frames
CLIP_CONTRASTS = tuple(c for c in st.CONTRAST if c not in VIDEO_CONTRASTS)  # a clip alone determines these
GRID_HZ = 30.0  # the spotter's grid (data.faces.stabilise.StabiliseConfig.rate_hz default): fixes the diff lag


def check_motion_config(icfg: MotionInputConfig) -> None:
    if icfg.contrast not in CLIP_CONTRASTS:
        raise ConfigError(f"contrast {icfg.contrast!r} needs the whole video, pretraining sees clips",
                          field="motion.contrast", fix=f"use one of {CLIP_CONTRASTS}")
    if icfg.channels != "grey":
        raise ConfigError(f"channels {icfg.channels!r}: pretraining's motion input is grey only",
                          field="motion.channels", fix="set motion.channels=grey")
    if icfg.blur_px:
        raise ConfigError("pretraining's motion input has no blur", field="motion.blur_px", fix="set it to 0")


def check_motion_shards(shards, icfg: MotionInputConfig, packed: dict | None = None) -> None:
    """The shard set holds stabilised clips normalised with the lighting the config expects; `packed`: the
    manifest's pack config when the caller has read it already."""
    if packed is None:
        packed = (read_manifest(shards) or {}).get("config", {})
    if packed.get("crop") != "stabilised":
        raise DataError(f"model.input is 'motion' but these shards were packed with crop={packed.get('crop')!r}",
                        path=f"{shards}/{MANIFEST}", field="crop",
                        fix="pack with configs/data/pack_stabilised.yaml (crop: stabilised), or use model.input=rgb")
    rate = packed.get("stabilisation", {}).get("rate_hz")
    if rate != GRID_HZ:
        raise DataError(f"the shards' grid is {rate} Hz, the motion input is made on the spotter's {GRID_HZ:g} Hz "
                        "grid", path=f"{shards}/{MANIFEST}", field="stabilisation.rate_hz",
                        fix=f"re-pack with stabilisation.rate_hz={GRID_HZ:g}")
    if packed.get("lighting") != icfg.lighting:
        raise DataError(f"the shards were lighting-normalised with {packed.get('lighting')!r}, motion.lighting is "
                        f"{icfg.lighting!r}", path=f"{shards}/{MANIFEST}", field="lighting",
                        fix="set motion.lighting to the shards' lighting, or re-pack")


def motion_view(video: torch.Tensor, icfg: MotionInputConfig, rate_hz: float = GRID_HZ) -> torch.Tensor:
    """uint8 [B, 3, T, S, S] stabilised grey clips (the 3 channels equal) -> float32 model input [B, 3, T, S, S]."""
    if video.dtype != torch.uint8:
        raise ConfigError(f"the motion input needs the loader's uint8 clips, got {video.dtype}",
                          field="data.output", fix="set data.output=uint8")
    grey = video[:, 0].float().numpy()
    lag = max(1, round(icfg.diff_lag_s * rate_hz))
    out = np.empty((grey.shape[0], 3) + grey.shape[1:], np.float32)
    for i, clip in enumerate(grey):
        view = st.contrast_view(clip, icfg.contrast, diff_lag=lag)
        if icfg.contrast == "none":
            view = view - 128.0  # appearance, centred (as the spotter does)
        out[i] = (view * icfg.gain)[None]
    return torch.from_numpy(out)

"""Clips of the stabilised stream for pretraining: what the spotter's encoder sees (issue 15).

A source becomes data.faces.stabilise's canonical grid (per-frame similarity from dlib landmarks + ECC, grey
crops), its illumination change is removed (data.faces.motion_view.lighting_normalise over the whole video, as
the spotter's motion view does) and clips are cut from that grid. The grey frames are stored in all three
channels of the H.264 clip; the temporal-contrast view is made from them by the loader (data.shards.loader,
data.faces.motion_view), as it is per window in the spotter.
"""
from __future__ import annotations

import numpy as np

from data.faces import stabilise as st
from data.faces.face_video import FaceVideo
from data.faces.motion_view import lighting_normalise


def normalised_grid(cfg, src: dict) -> np.ndarray:
    """uint8 [N, S, S]: the source's stabilised, lighting-normalised grid frames (cached in stabilise_cache)."""
    source = FaceVideo(src["path"], src["video"], src["fps"], detect_every=cfg.stabilisation.detect_every)
    sv = st.prepare(source, cfg.stabilisation, cfg.stabilise_cache)
    grey = lighting_normalise(sv.crops, cfg.lighting)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def stabilised_clips(cfg, src: dict, starts: list[int], span: int):
    """(start, crop [T, S, S, 3], crop metadata, fps) for each clip start (grid steps) of one source; a clip
    covers `span` grid steps (data.shards.pack.clip_span)."""
    grid = normalised_grid(cfg, src)
    meta = {"crop": "stabilised", "face_box": None, "landmarks": None, "lighting": cfg.lighting,
            "rate_hz": cfg.stabilisation.rate_hz}
    for start in starts:
        clip = grid[start:start + span:cfg.frame_step]
        yield start, np.repeat(clip[..., None], 3, axis=-1), meta, cfg.stabilisation.rate_hz / cfg.frame_step

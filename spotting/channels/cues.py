"""The flow channel sets: `cues` (the flow baseline's score of each type, overall and from each face region alone)
and `flow` (each frame gap's region motion, the evidence behind those scores), from one video's region curves
(spotting.baseline: optical flow between frame pairs, head motion removed, per face region).
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from data.common.tables import TYPES
from data.faces.face_video import FaceVideo
from data.flow import curves
from data.flow import regions as fl
from data.flow.curves import TRACKED_SOURCES
from spotting import baseline as bl
from spotting.channels.vocabulary import ANY, CUES, FLOW, Channel


def cue_channels(source: FaceVideo, bcfg: bl.BaselineConfig, cache_path=None) -> dict[Channel, np.ndarray]:
    """The `cues` and `flow` channels of one video (its frames and face track); the flow is cached at
    `cache_path` (spotting.baseline.video_region_curves; None: computed, nothing written). A FaceVideo made with
    `progress` shows a bar over the flow fields (the slowest part of a long video's channels)."""
    # the flow fields to compute (read from the header only with a bar to show: a cached video is never opened)
    pairs = sum(max(0, source.num_frames - k) for k in set(bl.needed_ks(bcfg, source.fps))) if source.progress else None
    with tqdm(total=pairs, desc=f"flow {source.name}", unit="pair", disable=not source.progress, leave=False) as bar:
        if cache_path is None:
            result = bl.frame_region_curves(source.frames, source.fps, bcfg, track_landmarks(source, bcfg),
                                            source.name, bar)
        else:
            result = bl.video_region_curves(source, bcfg, cache_path, bar=bar)
    return region_channels(result, bcfg)


def track_landmarks(source: FaceVideo, bcfg: bl.BaselineConfig):
    """The landmark source the cues read, from the video's own track when it is a tracked one (no second track)."""
    if bcfg.landmarks in TRACKED_SOURCES:
        return curves.track_landmarks(source.track, bcfg.landmarks, source.where)
    return None


def region_channels(result: dict, bcfg: bl.BaselineConfig) -> dict[Channel, np.ndarray]:
    """Region curves (spotting.baseline.video_region_curves' result) -> the cue and flow channels."""
    curves, fps, n = result["curves"], result["fps"], result["num_frames"]
    out = pair_channels(curves, bl.needed_ks(bcfg, fps))
    for kind in TYPES:
        out[Channel(CUES, kind, "all", "motion")] = bl.type_score(curves, bcfg, kind, fps, n)
        for region in fl.REGIONS:
            out[Channel(CUES, kind, region, "motion")] = bl.type_score(curves, bcfg, kind, fps, n, regions=[region])
    return out


def pair_channels(curves: dict, ks: list[int]) -> dict[Channel, np.ndarray]:
    """FLOW channels: each frame gap's region motion (flow and strain), less its median over the video, centred
    (the value at frame j is the pair around j, not the pair ending there), so a detector sees where and how
    fast the face moves rather than only the baseline's apex score."""
    out = {}
    for i, k in enumerate(sorted(ks)):
        shift = k // 2
        for f, feature in enumerate(fl.FEATURES[:2]):
            vals = np.clip(curves[k][f] - np.median(curves[k][f], axis=0), 0, None)  # [T, R]
            centred = np.zeros_like(vals)
            if shift < len(vals):  # a video shorter than half the gap has no pair to centre: zeros
                centred[shift:] = vals[:len(vals) - shift]
            for r, region in enumerate(fl.REGIONS):
                out[Channel(FLOW, ANY, f"gap{i}.{region}", feature)] = centred[:, r]
    return out

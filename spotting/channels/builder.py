"""The one builder of a spotter's label-free channel sets (`cues`, `flow`, `encoder`) for any video.

LOSO (every video of a dataset) and `python -m spotting spot` (a new video) both call `ChannelBuilder.channels`,
so a fitted reader finds at prediction time exactly the channels it was fitted on. Each video is a
data.faces.face_video.FaceVideo: decoded once, its face tracked once, and every set derives from those frames and
that track; with warm caches nothing is decoded at all. The `heads` set needs trained heads, so LOSO makes it per
fold (spotting.evaluation.loso) and `spot` from the spotter folder's heads (spotting.spot).

Caches under `cache` (None: nothing written): cues/<video>.npz (the flow's region curves; the flow baseline row
of LOSO reads the same files) and faces/<video>.npz (the face track); the encoder channels' stabilised streams
and features under `encoder_cache` (spotting.channels.encoder).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from data.common.config import to_dict
from data.common.npz_cache import read_npz, write_npz
from data.faces.face_video import MAX_SHORT_SIDE, FaceVideo
from spotting.baseline import BaselineConfig, needed_ks
from spotting.channels.causal import CausalConfig, causal_channels, cue_channel_list
from spotting.channels.cues import cue_channels
from spotting.channels.encoder import EncoderChannelsConfig, encoder_channels
from spotting.channels.vocabulary import CUES, ENCODER, FLOW, Channel


@dataclasses.dataclass
class ChannelBuilder:
    sets: tuple[str, ...]  # the channel sets to build (spotting.channels.vocabulary.CHANNEL_SETS; heads are skipped)
    baseline: BaselineConfig  # how the cues and flow channels are made
    encoder_channels: EncoderChannelsConfig  # how the encoder channels are made
    encoder: object | None = None  # the encoder the encoder channels read
    cache: Path | None = None
    encoder_cache: Path | None = None
    max_short_side: int | None = MAX_SHORT_SIDE  # larger frames are decoded scaled down (data.faces.face_video)
    live: CausalConfig | None = None  # the causal channels of `spotting live` instead (spotting.channels.causal)

    def source(self, path, name: str, fps: float | None = None, progress: bool = False,
               frames: np.ndarray | None = None) -> FaceVideo:
        """The video as every set reads it (a file at `path`, or RGB `frames` [T, H, W, 3] already in memory, then
        used at their size); its face track cached under `cache` (faces/<name>.npz)."""
        track = self.cache / "faces" / f"{name}.npz" if self.cache is not None else None
        return FaceVideo(path, name, fps, frames=frames, track_cache=track, max_short_side=self.max_short_side,
                         detect_every=self.encoder_channels.stabilisation.detect_every, progress=progress)

    def channels(self, source: FaceVideo) -> dict[Channel, np.ndarray]:
        """{Channel: float curve [num_frames]} of every set in `sets` but heads."""
        if self.live is not None:
            return self.causal(source)[0]
        out: dict[Channel, np.ndarray] = {}
        if CUES in self.sets or FLOW in self.sets:
            cache = self.cache / "cues" / f"{source.name}.npz" if self.cache is not None else None
            out.update({c: v for c, v in cue_channels(source, self.baseline, cache).items() if c.set in self.sets})
        if ENCODER in self.sets:
            out.update(encoder_channels(source, self.encoder, self.encoder_channels, self.encoder_cache))
        return out

    def causal(self, source: FaceVideo) -> tuple[dict[Channel, np.ndarray], np.ndarray]:
        """(the causal channels of `sets`, face found per frame), cached under `cache` (causal/<video>.npz, with
        the settings that made them)."""
        key = json.dumps({"baseline": to_dict(self.baseline), "live": to_dict(self.live)}, sort_keys=True)
        path = self.cache / "causal" / f"{source.name}.npz" if self.cache is not None else None
        cached = (read_npz(path, ("key", "face"), lambda z: None if str(z["key"]) == key else "other settings")
                  if path is not None else None)
        if cached is None:
            channels, face = causal_channels(source, self.baseline, self.live)
            cached = {"key": key, "face": face, **{c.name: v for c, v in channels.items()}}
            if path is not None:
                write_npz(path, cached)
        names = {c.name: c for c in cue_channel_list(self.baseline, needed_ks(self.baseline, source.fps))}
        return {names[n]: cached[n] for n in names if names[n].set in self.sets}, cached["face"]

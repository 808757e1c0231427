"""The channel vocabulary: the per-frame curves a reader turns into intervals, as one typed structure.

A `Channel` says what a curve is: the channel set that made it, the expression type it speaks for ("any" when it
speaks for none), where it comes from (a granularity, a face region) and which signal it is. The sets:
- `cues`: the flow baseline's per-region scores of each type (spotting.channels.cues);
- `flow`: the region motion of each frame pair behind those scores (spotting.channels.cues), type "any";
- `encoder`: pooled encoder features of the stabilised face (spotting.channels.encoder), type "any";
- `heads`: the spotting heads' presence and apex probabilities per granularity (spotting.channels.heads).
A config names the sets its reader reads (`channels: [cues, flow, encoder]`); those words are CHANNEL_SETS.
A new set is one more function returning {Channel: curve}; names are never parsed back.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from data.common.errors import DataError

CUES, FLOW, ENCODER, HEADS = "cues", "flow", "encoder", "heads"
CHANNEL_SETS = (CUES, FLOW, ENCODER, HEADS)
ChannelSet = Literal["cues", "flow", "encoder", "heads"]  # a config's word for one of CHANNEL_SETS
TYPED_SETS = (CUES, HEADS)  # sets whose channels each speak for one expression type
ANY = "any"  # the type of a channel that speaks for no one expression type
# How a channel is named in files (logistic.json, detector.json, <video>_curves.npz) and messages; never parsed
# back. Readers order their inputs by these names.
_NAMES = {HEADS: "{source}.{type}_{signal}", CUES: "cue.{type}.{source}", FLOW: "flow.{source}.{signal}",
          ENCODER: "encoder.{source}.{signal}"}


@dataclasses.dataclass(frozen=True)
class Channel:
    set: str  # one of CHANNEL_SETS
    type: str  # the expression type the curve speaks for (data.common.tables.TYPES), or ANY
    source: str  # HEADS: the granularity; CUES: the face region, or "all" (the baseline's combined score);
    #              FLOW: "gap<i>.<region>", the i-th shortest frame gap of the baseline (same name at any fps);
    #              ENCODER: "<granularity>.<region or band>"
    signal: str  # HEADS: "present" or "apex" (finetune.windows.SIGNALS); CUES: "motion"; FLOW: the flow feature;
    #              ENCODER: "mean<i>" or "std<i>"

    @property
    def name(self) -> str:
        return _NAMES.get(self.set, "{set}.{source}.{type}_{signal}").format(**dataclasses.asdict(self))


@dataclasses.dataclass
class VideoFeatures:
    """Everything a spotter reads about one video: its per-frame curves by channel (and, from the causal channels
    of spotting.live, which frames had a face: a live decision never spans a frame without one)."""
    subject: str
    video: str
    fps: float
    num_frames: int
    curves: dict[Channel, np.ndarray]
    face: np.ndarray | None = None  # bool [num_frames]; None: every frame

    def channels(self, sets: tuple[str, ...], kind: str) -> list[Channel]:
        """The channels of `sets` that speak for type `kind`, in name order (the order fits are stored in)."""
        return sorted((c for c in self.curves if c.set in sets and c.type == kind), key=lambda c: c.name)

    def all_channels(self, sets: tuple[str, ...]) -> list[Channel]:
        """Every channel of `sets`, whatever type it speaks for, in name order."""
        return sorted((c for c in self.curves if c.set in sets), key=lambda c: c.name)

    def matrix(self, channels: list[Channel]) -> np.ndarray:
        """[num_frames, len(channels)] float64."""
        missing = [c.name for c in channels if c not in self.curves]
        if missing:
            raise DataError(f"channels {missing} missing for video {self.video}", field="channels",
                            fix="compute the same channel sets as at fitting time")
        return np.stack([np.asarray(self.curves[c], dtype=np.float64) for c in channels], axis=1)


def video_features(subject: str, video: str, fps: float, num_frames: int,
                   *channel_sets: dict[Channel, np.ndarray] | None) -> VideoFeatures:
    """One video's features from any number of channel sets (None = a set not computed)."""
    curves: dict[Channel, np.ndarray] = {}
    for channels in channel_sets:
        curves.update(channels or {})
    return VideoFeatures(subject, video, float(fps), int(num_frames), curves)


def design(item: VideoFeatures, channels: list[Channel]) -> np.ndarray:
    """A reader's input [num_frames, channels]: flow magnitudes (cues, pair motion) compressed with log1p (long
    tails); head probabilities and encoder features as they are."""
    x = item.matrix(channels)
    flow = np.array([c.set in (CUES, FLOW) for c in channels])
    x[:, flow] = np.log1p(np.clip(x[:, flow], 0, None))
    return x

"""Per-video feature channels: the per-frame curves a spotter reads, as one typed structure.

A `Channel` says what a curve is: the feature set that made it (`model`: the spotting heads; `cue`: the flow
baseline's region scores; `flow`: the region motion of each frame pair behind those scores; `encoder`: pooled
encoder features of the stabilised face, spotting.encoder_channels), the expression type it speaks for ("any" for
`flow` and `encoder`), where it comes from (a granularity, a face region)
and which signal it is. `video_features` is the one builder: LOSO (training and held-out videos) and
`python -m spotting spot` (a new video) both call it, so a fitted spotter finds at prediction time exactly the
channels it was fitted on. A new feature set is one more function returning {Channel: curve}; no names are parsed.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from data.common.errors import DataError
from data.common.tables import TYPES
from data.flow import regions as fl
from finetune.windows import CHANNEL_PARTS
from spotting import baseline as bl

MODEL, CUE, FLOW, ENCODER = "model", "cue", "flow", "encoder"
ANY = "any"  # the type of a channel that speaks for no one expression type
# How a channel is named in files (fusion.json, <video>_curves.npz) and messages; never parsed back.
_NAMES = {MODEL: "{source}.{type}_{signal}", CUE: "cue.{type}.{source}", FLOW: "flow.{source}.{signal}",
          ENCODER: "encoder.{source}.{signal}"}


@dataclasses.dataclass(frozen=True)
class Channel:
    set: str  # the feature set: MODEL, CUE or FLOW
    type: str  # the expression type the curve speaks for (data.common.tables.TYPES), or ANY
    source: str  # MODEL: the granularity; CUE: the face region, or "all" (the baseline's combined score);
    #              FLOW: "gap<i>.<region>", the i-th shortest frame gap of the baseline (same name at any fps)
    signal: str  # MODEL: "present" or "apex" (finetune.windows.SIGNALS); CUE: "motion"; FLOW: the flow feature

    @property
    def name(self) -> str:
        return _NAMES.get(self.set, "{set}.{source}.{type}_{signal}").format(**dataclasses.asdict(self))


@dataclasses.dataclass
class VideoFeatures:
    """Everything a spotter reads about one video: its per-frame curves by channel."""
    subject: str
    video: str
    fps: float
    num_frames: int
    curves: dict[Channel, np.ndarray]

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
            raise DataError(f"channels {missing} missing for video {self.video}", field="curves",
                            fix="compute the same model and cue channels as at fitting time")
        return np.stack([np.asarray(self.curves[c], dtype=np.float64) for c in channels], axis=1)


def video_features(subject: str, video: str, fps: float, num_frames: int,
                   *channel_sets: dict[Channel, np.ndarray] | None) -> VideoFeatures:
    """One video's features from any number of channel sets (None = a set not computed)."""
    curves: dict[Channel, np.ndarray] = {}
    for channels in channel_sets:
        curves.update(channels or {})
    return VideoFeatures(subject, video, float(fps), int(num_frames), curves)


def model_channels(curves: dict[str, np.ndarray]) -> dict[Channel, np.ndarray]:
    """The heads' curves {granularity: [T, 4] in finetune.windows.CHANNELS order} as channels."""
    return {Channel(MODEL, kind, gran, signal): curve[:, i]
            for gran, curve in curves.items() for i, (kind, signal) in enumerate(CHANNEL_PARTS)}


def cue_channels(path, bcfg: bl.BaselineConfig, cache_path, landmarks=None) -> dict[Channel, np.ndarray]:
    """The flow baseline's per-frame score of each type, overall and from each face region alone; the flow is
    cached at `cache_path` (spotting.baseline.video_region_curves)."""
    return region_channels(bl.video_region_curves(path, bcfg, cache_path, landmarks), bcfg)


def frame_cue_channels(frames: np.ndarray, fps: float, bcfg: bl.BaselineConfig, landmarks=None,
                       name: str = "<frames>") -> dict[Channel, np.ndarray]:
    """cue_channels of RGB frames held in memory (the aligned crops `spotting spot` made, not a lossy re-encoding
    of them, so the same video gives the same cues every time): nothing cached; `name` names them in messages."""
    return region_channels(bl.frame_region_curves(frames, fps, bcfg, landmarks, name), bcfg)


def region_channels(result: dict, bcfg: bl.BaselineConfig) -> dict[Channel, np.ndarray]:
    """Region curves (spotting.baseline.video_region_curves' result) -> the cue and flow channels."""
    curves, fps, n = result["curves"], result["fps"], result["num_frames"]
    out = pair_channels(curves, bl.needed_ks(bcfg, fps))
    for kind in TYPES:
        out[Channel(CUE, kind, "all", "motion")] = bl.type_score(curves, bcfg, kind, fps, n)
        for region in fl.REGIONS:
            out[Channel(CUE, kind, region, "motion")] = bl.type_score(curves, bcfg, kind, fps, n, regions=[region])
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

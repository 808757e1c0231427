"""Causal channels: the `cues` and `flow` channel sets of a stream of frames, each frame's values final a fixed
number of frames after it arrived, with running statistics in place of whole-video ones.

Per frame (`CausalChannels.push`):
1. face (`FaceAligner`): the tracker of data.faces.track, one frame at a time; landmarks smoothed by the offline
   centred 3-frame mean (so one frame late); a face missing for longer than `lost_after_s` ends the face segment.
2. alignment: a similarity onto the canonical face from the first landmarks of the face segment (the offline
   reference "first", re-acquired after the face was lost), applied to the frame -> a grey crop of `size`; the
   frame's landmarks mapped into the crop give its region masks (data.flow.regions.RegionGeometry).
3. flow: for each frame gap k of the flow baseline (spotting.baseline.needed_ks), the pair (i, i + k) inside one
   face segment -> per-region values (data.flow.regions.region_values, head motion removed). A pair across a gap
   does not exist: its values are zero, so nothing moves there.
4. values: the offline formulas (spotting.baseline: the noise floor, the monotonicity check, the apex score;
   spotting.channels.cues: the centred pair channels), each region's noise floor being the median of the last
   `floor_window_s` of pairs, recomputed every `floor_every_s`, instead of the whole video's median.
Frame j is final once frame j + k_max (+1 for the smoothing) arrived, or at the end of the stream, where the
offline edge rules apply (no apex score within k frames of either end).

`causal_channels` runs a whole video through this stream: LOSO's causal mode fits and scores the detector on
exactly what `spotting live` computes.
"""
from __future__ import annotations

import collections
import dataclasses

import cv2
import numpy as np

from data.common.config import Config, setting
from data.common.tables import TYPES
from data.faces import landmarks as lmk
from data.faces.face_video import FaceVideo
from data.faces.track import Tracker, centred_mean
from data.flow import regions as fl
from spotting import baseline as bl
from spotting.channels.vocabulary import ANY, CUES, FLOW, Channel

SMOOTH = 3  # landmark smoothing window (frames): data.faces.track.track_faces' default
CAUSAL_SETS = (CUES, FLOW)  # the channel sets made causally (the encoder's 3 s windows would need 3 s look-ahead)


@dataclasses.dataclass
class CausalConfig(Config):
    """How causal (live) channels are made and decided; `spotting loso causal=true` and `spotting live` share it."""
    rate_hz: float = setting(30.0, gt=0)  # a live stream is resampled to this rate (spotting.live.stream)
    lookahead_s: float = setting(1.0, gt=0)  # an interval is decided this long after its offset (its right context)
    hop_s: float = setting(0.25, gt=0)  # the detector runs again after this much new stream
    window_s: float = setting(20.0, gt=0)  # the detector reads this much of the past (its training crops' length)
    warmup_s: float = setting(1.0, ge=0)  # nothing is decided before this much of the stream (running statistics)
    floor_window_s: float = setting(60.0, gt=0)  # each region's noise floor: the median of this much of the past
    floor_every_s: float = setting(0.5, gt=0)  # ... recomputed this often
    lost_after_s: float = setting(0.2, ge=0)  # a face missing longer than this ends the face segment
    size: int = setting(160, ge=32)  # aligned crop side
    detect_every: int = setting(10, ge=1)  # face detection schedule (data.faces.track)


@dataclasses.dataclass
class AlignedFrame:
    index: int
    grey: np.ndarray | None  # uint8 [size, size]; None: no face
    geometry: fl.RegionGeometry | None
    segment: int  # face segments are numbered; pairs exist only inside one


def smooth3(prev, cur, nxt) -> np.ndarray:
    """The offline centred_mean of 3 frames (weights 1, 2, 1 over the frames with a face) at one frame."""
    valid = [x is not None for x in (prev, cur, nxt)]
    stack = np.stack([x if x is not None else np.zeros_like(cur) for x in (prev, cur, nxt)])
    return centred_mean(stack, np.array(valid), SMOOTH)[1]


class FaceAligner:
    """Frames in, aligned grey crops out, one frame late (the landmark smoothing looks one frame ahead)."""

    def __init__(self, fps: float, cfg: CausalConfig):
        self.size, self.detect_every = cfg.size, cfg.detect_every
        self.tracker = self._new_tracker()
        self.lost_after = max(0, round(cfg.lost_after_s * fps))
        self.recent: collections.deque = collections.deque(maxlen=3)  # (index, frame, raw landmarks or None)
        self.last: np.ndarray | None = None  # the last smoothed landmarks, carried over short misses
        self.missing = 0
        self.segment, self.matrix = -1, None

    def _new_tracker(self) -> Tracker:
        return Tracker(self.detect_every, None, 15)

    def push(self, index: int, frame: np.ndarray | None, repeat: bool = False) -> list[AlignedFrame]:
        """`frame` None: no frame at this index (a silent source), so no face, and the tracker starts afresh
        after it. `repeat`: the previous index's frame again (a slower source), whose face is where it was."""
        if frame is None:
            self.tracker, raw = self._new_tracker(), None
        elif repeat and self.recent:
            raw = self.recent[-1][2]  # the tracker would fit the same face again: the cost of a tick, for nothing
        else:
            found = self.tracker.step(frame)
            raw = None if found is None else found[0]
        self.recent.append((index, frame, raw))
        if len(self.recent) < 2:
            return []
        prev = self.recent[0][2] if len(self.recent) == 3 else None
        index, frame, cur = self.recent[-2]
        return [self._align(index, frame, prev, cur, self.recent[-1][2])]

    def finish(self) -> list[AlignedFrame]:
        """The last frame, smoothed with the frame before it only (the offline edge)."""
        if not self.recent:
            return []
        index, frame, cur = self.recent[-1]
        prev = self.recent[-2][2] if len(self.recent) > 1 else None
        self.recent.clear()
        return [self._align(index, frame, prev, cur, None)]

    def _align(self, index, frame, prev, cur, nxt) -> AlignedFrame:
        if frame is None:
            self.last, self.matrix = None, None  # nothing seen: the face segment ends here
            return AlignedFrame(index, None, None, self.segment)
        if cur is not None:
            landmarks, self.missing = smooth3(prev, cur, nxt), 0
        elif self.last is not None and self.missing < self.lost_after:
            landmarks, self.missing = self.last, self.missing + 1  # a short miss: the face is still there
        else:
            self.last, self.matrix = None, None  # lost: the next face starts a new segment
            return AlignedFrame(index, None, None, self.segment)
        if self.matrix is None:
            self.segment += 1
            self.matrix = lmk.rigid_similarity_to_canonical(landmarks, self.size)
        self.last = landmarks
        crop = cv2.warpAffine(frame, self.matrix, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        points = lmk.transform_points(landmarks, self.matrix)
        return AlignedFrame(index, cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY),
                            fl.RegionGeometry.from_landmarks(points, (self.size, self.size)), self.segment)


class CausalCues:
    """Aligned frames in (FaceAligner), the cues and flow channels of each frame out once final (module doc)."""

    def __init__(self, bcfg: bl.BaselineConfig, fps: float, cfg: CausalConfig):
        self.bcfg, self.fps = bcfg, fps
        self.ks = bl.needed_ks(bcfg, fps)
        self.kmax = max(self.ks)
        self.flow_fn = fl.make_flow(bcfg.method)
        self.frames: dict[int, AlignedFrame] = {}
        self.pairs: dict[int, dict[int, np.ndarray]] = {k: {} for k in self.ks}  # k -> {i: [F, R] of (i, i + k)}
        window = max(1, round(cfg.floor_window_s * fps))
        self.history = {k: collections.deque(maxlen=window) for k in self.ks}
        self.floor = {k: np.zeros((len(fl.FEATURES), len(fl.REGIONS)), np.float32) for k in self.ks}
        self.floor_every = max(1, round(cfg.floor_every_s * fps))
        self.channels = cue_channel_list(bcfg, self.ks)
        self.next_final, self.newest = 0, -1

    def push(self, frame: AlignedFrame) -> list[tuple[int, np.ndarray, bool]]:
        """(frame index, values in `channels` order, face found) of every frame that became final."""
        self.frames[frame.index], self.newest = frame, frame.index
        for k in self.ks:
            start = self.frames.get(frame.index - k)
            if start is not None and start.grey is not None and frame.grey is not None \
                    and start.segment == frame.segment:
                raw = fl.region_values(self.flow_fn(start.grey, frame.grey), start.geometry, self.bcfg.head_model)
                self.pairs[k][start.index] = raw
                self.history[k].append(raw)
        if frame.index % self.floor_every == 0:
            self.floor = {k: np.median(np.stack(h), axis=0) if h else self.floor[k] for k, h in self.history.items()}
        ready = []
        while self.next_final <= self.newest - self.kmax:
            ready.append(self._final(self.next_final))
        return ready

    def finish(self) -> list[tuple[int, np.ndarray, bool]]:
        """Every frame not final yet: pairs past the end do not exist (the offline edge rules follow)."""
        return [self._final(self.next_final) for _ in range(self.newest + 1 - self.next_final)]

    def _final(self, j: int) -> tuple[int, np.ndarray, bool]:
        values = np.array([self._value(c, j) for c in self.channels], np.float32)
        face = self.frames[j].grey is not None
        self.next_final = j + 1
        for old in [i for i in self.frames if i < j - self.kmax]:
            del self.frames[old]
        for pairs in self.pairs.values():
            for old in [i for i in pairs if i < j - 2 * self.kmax]:
                del pairs[old]
        return j, values, face

    def _above_floor(self, k: int, i: int, feature: int, regions: list[int]) -> np.ndarray:
        """A pair's chosen feature per region less the running noise floor, clipped at 0 (0: no such pair)."""
        raw = self.pairs[k].get(i)
        if raw is None:
            return np.zeros(len(regions), np.float32)
        return np.clip(raw[feature, regions] - self.floor[k][feature, regions], 0, None)

    def _motion(self, kind: str, regions: list[str], i: int) -> float:
        """spotting.baseline.region_score at pair i: the regions' pair motion, monotonicity-weighted, combined."""
        tc = getattr(self.bcfg, kind)
        k, feature = bl.type_k(self.bcfg, kind, self.fps), fl.FEATURES.index(self.bcfg.feature)
        idx = [fl.REGIONS.index(r) for r in regions]
        m = self._above_floor(k, i, feature, idx)
        if tc.hops > 1:
            hop = bl.hop_k(k, tc.hops)
            path = sum(self._above_floor(hop, i + jj * hop, feature, idx) for jj in range(tc.hops))
            m = m * np.clip(m / np.maximum(path, m + 1e-6), 0.0, 1.0)
        return float({"max": np.max, "sum": np.sum, "mean": np.mean}[tc.combine](m))

    def _value(self, channel: Channel, j: int) -> float:
        if channel.set == FLOW:
            gap, region = channel.source.split(".")
            k = self.ks[int(gap[3:])]
            return float(self._above_floor(k, j - k // 2, fl.FEATURES.index(channel.signal),
                                           [fl.REGIONS.index(region)])[0]) if j >= k // 2 else 0.0
        kind = channel.type
        k = bl.type_k(self.bcfg, kind, self.fps)
        regions = getattr(self.bcfg, kind).regions if channel.source == "all" else [channel.source]
        if self.bcfg.score == "forward":
            return self._motion(kind, regions, j - k // 2) if j >= k // 2 else 0.0
        return min(self._motion(kind, regions, j - k), self._motion(kind, regions, j)) if j >= k else 0.0


def cue_channel_list(bcfg: bl.BaselineConfig, ks: list[int]) -> list[Channel]:
    """The channels spotting.channels.cues makes for these gaps, in its naming."""
    out = [Channel(CUES, kind, source, "motion") for kind in TYPES for source in ("all",) + fl.REGIONS]
    out += [Channel(FLOW, ANY, f"gap{i}.{region}", feature)
            for i in range(len(ks)) for feature in fl.FEATURES[:2] for region in fl.REGIONS]
    return out


class CausalChannels:
    """RGB frames in, one at a time at a fixed rate; each frame's causal channels out once final."""

    def __init__(self, bcfg: bl.BaselineConfig, fps: float, cfg: CausalConfig):
        self.aligner = FaceAligner(fps, cfg)
        self.cues = CausalCues(bcfg, fps, cfg)
        self.count = 0

    @property
    def channels(self) -> list[Channel]:
        return self.cues.channels

    @property
    def delay(self) -> int:
        """Frames between a frame's arrival and its values being final."""
        return self.cues.kmax + 1

    def push(self, frame: np.ndarray | None, repeat: bool = False) -> list[tuple[int, np.ndarray, bool]]:
        """The next frame (None: none at this tick; `repeat`: the previous one again, see FaceAligner.push)."""
        out = []
        for aligned in self.aligner.push(self.count, frame, repeat):
            out += self.cues.push(aligned)
        self.count += 1
        return out

    def finish(self) -> list[tuple[int, np.ndarray, bool]]:
        out = []
        for aligned in self.aligner.finish():
            out += self.cues.push(aligned)
        return out + self.cues.finish()


def causal_channels(source: FaceVideo, bcfg: bl.BaselineConfig,
                    cfg: CausalConfig) -> tuple[dict[Channel, np.ndarray], np.ndarray]:
    """A whole video through the live stream: ({Channel: float32 [T]}, face found [T])."""
    stream = CausalChannels(bcfg, source.fps, cfg)
    rows = []
    for frame in source.frames:
        rows += stream.push(frame)
    rows += stream.finish()
    values = np.stack([r[1] for r in rows]) if rows else np.zeros((0, len(stream.channels)), np.float32)
    return {c: values[:, i] for i, c in enumerate(stream.channels)}, np.array([r[2] for r in rows], bool)

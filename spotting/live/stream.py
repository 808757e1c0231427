"""The Python API of live spotting: frames in (RGB uint8 arrays with their timestamps), decided intervals out.

    spotter = LiveSpotter.from_folder("runs/loso_causal/model")     # a spotter trained with causal=true
    for frame, t in frames:                                          # any source: camera, network, file
        for decision in spotter.push(frame, t):
            print(decision.interval, decision.decided_s)
    rest = spotter.finish()                                          # end of stream: what is still due

Frames are resampled onto the spotter's fixed rate (`live.rate_hz`) by their timestamps: each tick takes the
newest frame that arrived by then, so a camera whose rate changes, or a slower one, is read at one rate (a
frame repeated for a slower camera shows no motion, as the face did not move between its captures; it is not
tracked again). A gap in the timestamps longer than `live.lost_after_s` (a silent source, or frames the source
dropped while the spotter was behind) is a face lost: its ticks have no frame, cost no tracking and no flow, the
face segment ends there and no interval spans it. So a spotter that fell behind catches up instead of paying
full price for every tick it missed. The channels (spotting.channels.causal) and the decisions
(spotting.live.decide) are the ones LOSO's causal mode scores, so a file played through here gives LOSO's
intervals for it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from data.common.errors import ConfigError
from data.faces import landmarks as lmk
from spotting import spotter as spotters
from spotting.channels.causal import CausalChannels
from spotting.live.decide import Decision, StreamDecider


@dataclasses.dataclass
class StreamStats:
    frames_in: int = 0  # frames pushed
    ticks: int = 0  # frames processed at the spotter's rate
    repeated: int = 0  # ticks that reused the previous frame (a slower or stalled source)
    gaps: int = 0  # timestamp gaps treated as a lost face
    unseen: int = 0  # ticks inside those gaps (no frame, no face)


class LiveSpotter:
    def __init__(self, spotter: spotters.Spotter):
        if spotter.live is None:
            raise ConfigError("this spotter was trained on offline channels; live spotting needs causal ones",
                              field="causal", fix="train it with `python -m spotting loso ... causal=true`")
        self.spotter, self.cfg = spotter, spotter.live
        self.rate = self.cfg.rate_hz
        self.stats = StreamStats()
        self.start: float | None = None
        self.last: np.ndarray | None = None
        self._reset()
        lmk.load_models()

    @classmethod
    def from_folder(cls, folder) -> LiveSpotter:
        return cls(spotters.load(folder))

    def _reset(self) -> None:
        self.channels = CausalChannels(self.spotter.baseline, self.rate, self.cfg)
        self.decider = StreamDecider(self.spotter.reader, self.channels.channels, self.rate, self.cfg)

    @property
    def now_s(self) -> float:
        """Stream time of the newest processed tick."""
        return self.stats.ticks / self.rate

    def push(self, frame: np.ndarray, timestamp: float) -> list[Decision]:
        """One frame (RGB uint8 [H, W, 3]) captured at `timestamp` seconds; the intervals decided by it."""
        if self.start is None:
            self.start = timestamp
        self.stats.frames_in += 1
        due = int(np.floor((timestamp - self.start) * self.rate + 1e-9))  # the tick this frame belongs to
        out = []
        if self.last is not None and due - self.stats.ticks > self.cfg.lost_after_s * self.rate:
            self.stats.gaps += 1
            out += self._gap(due)
        while self.stats.ticks < due:  # ticks without a frame of their own: the newest frame again
            out += self._tick(self.last, repeated=True)
        out += self._tick(frame, repeated=False)
        self.last = frame
        return out

    def finish(self) -> list[Decision]:
        """End of the stream: every frame becomes final and every remaining box due."""
        out = []
        for _, values, face in self.channels.finish():
            out += self.decider.push(values, face)
        return out + self.decider.finish()

    def _tick(self, frame: np.ndarray | None, repeated: bool) -> list[Decision]:
        self.stats.ticks += 1
        self.stats.repeated += int(repeated)
        self.stats.unseen += int(frame is None)
        out = []
        for _, values, face in self.channels.push(frame, repeat=repeated):
            out += self.decider.push(values, face)
        return out

    def _gap(self, due: int) -> list[Decision]:
        """The source was silent for longer than a face may be missed: ticks without a frame up to `due`. They
        cost no tracking and no flow, so a spotter that fell behind catches up instead of falling further."""
        out = []
        while self.stats.ticks < due:
            out += self._tick(None, repeated=False)
        return out

"""Deciding intervals on a stream: the detector reader over a sliding window, each box decided once, a fixed time
after its offset.

Every `hop_s` of new final frames the detector reader (spotting.detector.reader) reads the last `window_s` of the
stream, as it read the random crops it was trained on, and its boxes are suppressed per class as offline. A box
is due once its end lies `lookahead_s` before the newest final frame: it has that much right context, and is
never looked at again. A due box is decided when its score passes its class's threshold, it lies after the
warm-up, it spans no frame without a face (no interval across a gap), and it overlaps no decided interval of its
type by IoU >= DUPLICATE_IOU (a box seen again in a later window); a micro box inside a decided macro interval is
dropped, as offline. `decide_video` runs one video's channels through the same code: LOSO's causal mode and
`spotting live` decide alike.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from spotting import intervals as iv
from spotting.channels.causal import CausalConfig
from spotting.channels.vocabulary import Channel, VideoFeatures
from spotting.detector import decode as dd
from spotting.detector.model import CLASSES
from spotting.detector.reader import DetectorReader

DUPLICATE_IOU = iv.COPY_IOU  # as offline: two same-type intervals this close would score as one event


@dataclasses.dataclass(frozen=True)
class Decision:
    interval: iv.Interval
    decided_s: float  # stream time (s) of the newest frame when it was decided


class StreamDecider:
    """Final channel rows in (frame order), decisions out."""

    def __init__(self, reader: DetectorReader, channels: list[Channel], fps: float, cfg: CausalConfig):
        self.reader, self.channels, self.fps, self.cfg = reader, channels, fps, cfg
        self.window = max(1, round(cfg.window_s * fps))
        self.hop = max(1, round(cfg.hop_s * fps))
        self.rows: list[np.ndarray] = []  # the last `window` frames' values
        self.faces: list[bool] = []
        self.first = 0  # stream index of rows[0]
        self.count = 0  # final frames seen
        self.due_until = -1.0  # boxes ending at or before this (s) were looked at already
        self.decided: list[iv.Interval] = []
        self.latest = {kind: 0.0 for kind in CLASSES}  # the best box score per type around now (a status line)

    def push(self, values: np.ndarray, face: bool) -> list[Decision]:
        self.rows.append(values)
        self.faces.append(face)
        self.count += 1
        if len(self.rows) > self.window:
            self.rows.pop(0)
            self.faces.pop(0)
            self.first += 1
        return self._run(self.count / self.fps - self.cfg.lookahead_s) if self.count % self.hop == 0 else []

    def finish(self) -> list[Decision]:
        """At the end of the stream every remaining box is due."""
        return self._run(self.count / self.fps)

    def _window_item(self) -> VideoFeatures:
        values = np.stack(self.rows)
        return VideoFeatures("", "stream", self.fps, len(self.rows),
                             {c: values[:, i] for i, c in enumerate(self.channels)})

    def _run(self, due: float) -> list[Decision]:
        if due <= self.due_until or not self.rows:
            return []
        boxes = self.reader.boxes(self._window_item())
        offset = self.first / self.fps
        now = self.count / self.fps
        recent = boxes[boxes[:, 1] + offset >= now - self.cfg.lookahead_s - self.cfg.hop_s]
        self.latest = {kind: float(recent[recent[:, 3] == k, 2].max(initial=0.0)) for k, kind in enumerate(CLASSES)}
        out = []
        for on_s, end_s, score, k in boxes:
            on_s, end_s = on_s + offset, end_s + offset
            if not (self.due_until < end_s <= due):
                continue
            found = self._decide(on_s, end_s, float(score), CLASSES[int(k)])
            if found is not None:
                out.append(Decision(found, now))
        self.due_until = due
        return out

    def _decide(self, on_s: float, end_s: float, score: float, kind: str) -> iv.Interval | None:
        if score < self.reader.selection["threshold"][kind] or on_s < self.cfg.warmup_s:
            return None
        (on, off), = dd.frame_spans(np.array([[on_s, end_s]]), self.fps, self.count)
        first, last = on - self.first, off - self.first
        if first < 0 or not all(self.faces[first:last + 1]):
            return None  # spans a frame without a face (or one that left the window)
        found = iv.Interval(int(on), int(on + off) // 2, int(off), kind, score)
        same = [d for d in self.decided if d.type == kind]
        if any(iv.iou(found, d) >= DUPLICATE_IOU for d in same):
            return None
        inside = self.reader.config.micro_inside_macro
        if kind == "micro" and any(iv.covered_fraction(found, d) > inside for d in self.decided if d.type == "macro"):
            return None
        self.decided.append(found)
        return found


def decide_video(reader: DetectorReader, item: VideoFeatures, face: np.ndarray | None,
                 cfg: CausalConfig) -> list[Decision]:
    """One video's channels streamed through StreamDecider, frame by frame."""
    channels = sorted(item.curves, key=lambda c: c.name)
    values = item.matrix(channels).astype(np.float32)
    face = np.ones(item.num_frames, bool) if face is None else face
    decider = StreamDecider(reader, channels, item.fps, cfg)
    out = []
    for row, has_face in zip(values, face):
        out += decider.push(row, bool(has_face))
    return out + decider.finish()

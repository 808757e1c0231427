"""Cutting long videos into model windows, per-frame labels, and putting window scores back on the frame axis.

A granularity is one way of cutting a long video into model windows: a window span and the hop between window
starts, in seconds. A window is `frames` source-frame indices spread evenly over the span: at 30 fps a 0.5 s
window is 16 consecutive frames (step ~1), at 200 fps the same 0.5 s is every ~6th frame. This is the per-dataset
temporal resampling: the model always sees the same stretch of time, whatever the camera's frame rate. The
spotting heads (finetune.heads) and the encoder channels (finetune.encoder.features, on the stabilised grid)
both cut windows this way.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from data.common.config import Config, setting
from data.common.errors import ConfigError, DataError
from data.common.tables import TYPES

SIGNALS = ("present", "apex")  # inside an event of the type; closeness to its apex
# Label / score channels, in this order everywhere (heads, curves, fusion): (type, signal) and its name.
CHANNEL_PARTS = tuple((kind, signal) for signal in SIGNALS for kind in TYPES)
CHANNELS = tuple(f"{kind}_{signal}" for kind, signal in CHANNEL_PARTS)


@dataclasses.dataclass
class Granularity(Config):
    """A window span and the hop between window starts (overlapping windows' scores are averaged), in seconds."""
    name: str = "micro"
    span_s: float = setting(0.5, gt=0)
    hop_s: float = setting(0.25, gt=0)


DEFAULT_GRANULARITIES = (Granularity("micro", 0.5, 0.25), Granularity("macro", 3.0, 1.0))


def default_granularities() -> list[Granularity]:
    """Fresh copies of DEFAULT_GRANULARITIES (a config field's default)."""
    return [dataclasses.replace(g) for g in DEFAULT_GRANULARITIES]


def check_granularities(grans: list[Granularity]) -> None:
    names = [g.name for g in grans]
    if not names or len(set(names)) != len(names) or not all(names):
        raise ConfigError(f"granularity names {names} must be unique: each a distinct, non-empty name",
                          field="granularities",
                          fix="e.g. [{name: micro, span_s: 0.5, hop_s: 0.25}, {name: macro, span_s: 3.0, hop_s: 1.0}]")


def batches(items: list, size: int):
    """Consecutive chunks of `items` of at most `size`."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclasses.dataclass(frozen=True)
class Window:
    video: str
    indices: np.ndarray  # [frames] source-frame indices, non-decreasing
    bounds: np.ndarray  # [frames + 1]: sampled frame i stands for source frames bounds[i] .. bounds[i+1]-1


def sample_step(fps: float, span_s: float, frames: int) -> float:
    """Source frames between two sampled frames; never below 1 (we do not invent frames)."""
    if fps <= 0:
        raise DataError(f"fps must be > 0, got {fps}", field="fps", fix="fix the video table")
    return max(1.0, span_s * fps / frames)


def window_starts(num_frames: int, step: float, frames: int, hop: int) -> list[int]:
    """Start frames of sliding windows covering the whole video; the last window ends at the last frame."""
    length = int(round(step * frames))
    last = max(0, num_frames - length)
    starts = list(range(0, last + 1, max(1, hop)))
    if starts[-1] != last:
        starts.append(last)
    return starts


def make_window(video: str, start: int, step: float, frames: int, num_frames: int) -> Window:
    bounds = np.round(start + np.arange(frames + 1) * step).astype(np.int64)
    bounds = np.minimum(bounds, num_frames)
    indices = np.minimum(bounds[:-1], num_frames - 1)
    # A video shorter than the window repeats its last frame; each repeat stands for no source frame.
    return Window(video, indices, bounds)


def video_windows(video: str, num_frames: int, fps: float, span_s: float, hop_s: float,
                  frames: int) -> list[Window]:
    """All sliding windows of one video (or a grid, at its rate) for one granularity's span and hop."""
    if num_frames < 1:
        raise DataError(f"video {video!r} has no frames", field="num_frames", fix="fix the video table")
    step = sample_step(fps, span_s, frames)
    hop = max(1, int(round(hop_s * fps)))
    return [make_window(video, s, step, frames, num_frames) for s in window_starts(num_frames, step, frames, hop)]


def frame_labels(intervals: pd.DataFrame, num_frames: int) -> np.ndarray:
    """Per-frame targets [num_frames, 4] in CHANNELS order for one video's interval rows.

    present: 1 inside [onset, offset]. apex: a Gaussian bump at the apex whose width follows the interval
    (sigma = a quarter of its length, at least one frame), so the head learns where the peak of an event is.
    """
    labels = np.zeros((num_frames, len(CHANNELS)), dtype=np.float32)
    frames = np.arange(num_frames)
    for row in intervals.itertuples(index=False):
        t = TYPES.index(row.type)
        on, off = max(0, int(row.onset)), min(num_frames - 1, int(row.offset))
        if on > off:
            continue
        labels[on:off + 1, t] = 1.0
        sigma = max(1.0, (int(row.offset) - int(row.onset) + 1) / 4.0)
        bump = np.exp(-0.5 * ((frames - int(row.apex)) / sigma) ** 2)
        labels[:, 2 + t] = np.maximum(labels[:, 2 + t], bump.astype(np.float32))
    return labels


def window_labels(labels: np.ndarray, window: Window) -> np.ndarray:
    """Targets of the window's sampled frames [frames, 4]: the mean over the source frames each one stands for.

    With a step above 1 a short micro event may fall between sampled frames; averaging over the covered span keeps
    it visible as a fractional target instead of dropping it.
    """
    out = np.empty((len(window.indices), labels.shape[1]), dtype=np.float32)
    for i, (a, b) in enumerate(zip(window.bounds[:-1], window.bounds[1:])):
        out[i] = labels[a:b].mean(0) if b > a else labels[window.indices[i]]
    return out


class CurveAccumulator:
    """Averages the scores of overlapping windows onto the source frame axis."""

    def __init__(self, num_frames: int, channels: int):
        self.total = np.zeros((num_frames, channels), dtype=np.float64)
        self.count = np.zeros(num_frames, dtype=np.float64)

    def add(self, window: Window, scores: np.ndarray) -> None:
        """scores: [frames, channels] for the window's sampled frames."""
        for i, (a, b) in enumerate(zip(window.bounds[:-1], window.bounds[1:])):
            if b > a:
                self.total[a:b] += scores[i]
                self.count[a:b] += 1

    def curve(self) -> np.ndarray:
        """[num_frames, channels]; frames no window covered (none, by construction) would read 0."""
        return (self.total / np.maximum(self.count, 1)[:, None]).astype(np.float32)

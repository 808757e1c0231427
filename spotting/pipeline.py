"""The spot pipeline's computing part: a video source -> its channels -> the spotter's reader -> intervals + curves.

`spot_source` writes nothing and returns a `SpotResult`. Its callers: `Spotter.spot` (the Python API,
spotting.spotter), `spotting.spot.spot` (`python -m spotting spot`, which writes the result's files), and any
caller that makes its own data.faces.face_video.FaceVideo (a file, or frames already in memory). The label-free
channels come from the builder LOSO uses (spotting.channels.builder), so a video spotted here gets the channels,
and the intervals, it got in a LOSO run; the heads run on the aligned crops (or on the frames as they are when
they are already aligned).
"""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import pandas as pd
from tqdm import tqdm

from data.common.errors import DataError
from data.faces.align import align_video
from data.faces.face_video import FaceVideo
from finetune.heads.predict import model_frames, video_curves
from spotting.channels.heads import head_channels
from spotting.channels.vocabulary import HEADS, VideoFeatures, video_features
from spotting.intervals import to_frame
from spotting.live.decide import decide_video

STAGES = ("decode + faces", "channels", "heads", "intervals")
SCORE = "fused"  # the reader's per-frame score of a type, in the curves: "fused.<type>" ("fused__<type>" on disk)
log = logging.getLogger(__name__)

# A video this many times faster or slower than every training video gets a warning. The detector works in seconds
# and the flow's frame gaps follow the rate, but the channels' statistics were learnt at the training rates (a 200
# fps video given to a 30 fps spotter: the macro expression found, the micro missed; issue 29). 1.5 lets 25 and
# 30 fps mix without a word.
RATE_TOLERANCE = 1.5


def rate_warning(training_fps: list[float] | None, fps: float) -> str | None:
    """Why `fps` is far from the rates [lowest, highest] a spotter was trained at (RATE_TOLERANCE), or None."""
    if not training_fps or not fps:
        return None
    low, high = training_fps
    if low / RATE_TOLERANCE <= fps <= high * RATE_TOLERANCE:
        return None
    trained = f"{low:g} fps" if low == high else f"{low:g}-{high:g} fps"
    return (f"the video runs at {fps:g} fps, the spotter was trained on {trained} videos: expect missed or extra "
            f"intervals (micro-expressions first); train on videos at this rate to spot it reliably")


class StageClock:
    """Seconds per pipeline stage, shown as a progress bar over STAGES."""

    def __init__(self, desc: str, progress: bool = True):
        self.t0 = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.bar = tqdm(STAGES, desc=desc, unit="stage", disable=not progress)

    def done(self, name: str) -> None:
        self.seconds[name] = round(time.perf_counter() - self.t0 - sum(self.seconds.values()), 3)
        if name in STAGES:
            self.bar.update(1)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


@dataclasses.dataclass
class SpotResult:
    """What spotting one video gives: the intervals, the curves behind them, and how it went."""
    features: VideoFeatures  # every channel the reader read, one value per frame
    intervals: pd.DataFrame  # predictions table: subject, video, onset, apex, offset, type, emotion, score
    scores: dict[str, np.ndarray]  # the reader's per-frame score of each type (its input to the intervals)
    crops: np.ndarray | None  # the aligned face crops [T, S, S, 3] (None when the input was taken as aligned)
    face_track: dict  # the face track's summary (face_fraction, ...)
    stage_seconds: dict[str, float]  # seconds per STAGES entry

    @property
    def curves(self) -> pd.DataFrame:
        """One row per frame: `fused.<type>` (the reader's score) and every channel by name (Channel.name),
        the arrays of spot's <video>_curves.npz."""
        columns = {f"{SCORE}.{kind}": v for kind, v in self.scores.items()}
        columns.update({c.name: v for c, v in sorted(self.features.curves.items(), key=lambda kv: kv[0].name)})
        return pd.DataFrame(columns, index=pd.RangeIndex(self.features.num_frames, name="frame"))


def aligned_crops(source: FaceVideo, size: int) -> np.ndarray:
    """The face aligned to the first frame's landmarks, [T, size, size, 3] (data.faces.align)."""
    if source.track.face_fraction == 0:
        raise DataError("no face found in any frame", path=source.where, fix="pass a video showing a face")
    crops, _, _ = align_video(source.frames, source.track, size=size, reference="first")
    return crops


def intervals_of(spotter, item: VideoFeatures) -> list:
    """The spotter's intervals of one video: offline, or (a causal spotter) decided as on a live stream."""
    if spotter.live is None:
        return spotter.reader.spot_item(item)
    found = [d.interval for d in decide_video(spotter.reader, item, item.face, spotter.live)]
    return sorted(found, key=lambda i: (i.onset, i.type))


def spot_source(spotter, source: FaceVideo, aligned: bool = False, clock: StageClock | None = None) -> SpotResult:
    """Spot one video with `spotter` (spotting.spotter.Spotter): its channels, read into typed intervals.

    aligned: the frames are already face-aligned crops (no alignment; the heads read them as they are).
    clock: where stage times go (a fresh one, without a progress bar, when None)."""
    problem = rate_warning(spotter.training_fps, source.fps)
    if problem:
        log.warning("%s: %s", source.path or source.name, problem)
    clock = clock or StageClock(f"spot {source.name}", progress=False)
    size = spotter.encoder.cfg.img_size
    if aligned:
        crops, faces = None, {"face_fraction": None, "note": "input taken as aligned"}
    else:
        crops, faces = aligned_crops(source, size), source.track.summary()
    clock.done("decode + faces")
    builder = spotter.builder()
    channels, face = builder.causal(source) if spotter.live else (builder.channels(source), None)
    clock.done("channels")
    heads = None
    if HEADS in spotter.sets:
        frames = model_frames(source.frames if crops is None else crops, size)
        with tqdm(desc="heads windows", unit="window", leave=False, disable=clock.bar.disable) as bar:
            heads = head_channels(video_curves(spotter.heads, frames, source.fps, spotter.granularities,
                                               progress=bar))
    clock.done("heads")
    item = dataclasses.replace(video_features("", source.name, source.fps, source.num_frames, channels, heads),
                               face=face)
    intervals = to_frame(intervals_of(spotter, item), "", source.name)
    clock.done("intervals")
    return SpotResult(item, intervals, spotter.reader.curves(item), crops, faces, dict(clock.seconds))

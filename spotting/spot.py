"""Spot macro/micro expressions in one video with a trained spotter (`python -m spotting spot`, spotting.cli.spot).

One pass over the video (data.faces.face_video): it is decoded once and its face tracked once; the aligned crops
(for viewing and the heads), the flow cues and the stabilised stream of the encoder channels all derive from those
frames and that track. The label-free channels come from the builder LOSO uses (spotting.channels.builder), so a
video of a LOSO run gets the channels, and the intervals, it got there; the spotter's reader (spotting.readers)
turns them into typed intervals.
Writes OUT/<video>.csv (predictions table), OUT/<video>.json (intervals + run facts), OUT/<video>_timeline.png,
OUT/<video>_curves.npz (the per-frame curves) and OUT/<video>_aligned.mp4 (the face crops, for viewing: nothing
reads this lossy re-encoding of them, so the same video gives the same intervals every time). OUT may hold other
files: a name that holds a file this command did not write there is refused before any work
(data.common.outputs), never replaced.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from data.common.atomic import atomic_path, write_json
from data.common.errors import DataError
from data.common.outputs import OwnedOutputs
from data.common.tables import write_predictions
from data.common.video_io import video_info, write_mp4
from data.faces.align import align_video
from data.faces.face_video import FaceVideo
from finetune.heads.predict import model_frames, video_curves
from spotting import spotter as spotters
from spotting.channels.builder import ChannelBuilder
from spotting.channels.heads import head_channels
from spotting.channels.vocabulary import HEADS, VideoFeatures, video_features
from spotting.evaluation.plots import plot_timeline
from spotting.intervals import to_frame
from spotting.live.decide import decide_video

log = logging.getLogger(__name__)
STAGES = ("decode + faces", "channels", "heads", "intervals")


def output_names(stem: str) -> dict[str, str]:
    """What spot writes into OUT, by role."""
    return {"csv": f"{stem}.csv", "curves": f"{stem}_curves.npz", "timeline": f"{stem}_timeline.png",
            "aligned": f"{stem}_aligned.mp4", "summary": f"{stem}.json"}


class StageClock:
    """Seconds per pipeline stage, shown as a progress bar over STAGES."""

    def __init__(self, desc: str):
        self.t0 = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.bar = tqdm(STAGES, desc=desc, unit="stage")

    def done(self, name: str) -> None:
        self.seconds[name] = round(time.perf_counter() - self.t0 - sum(self.seconds.values()), 3)
        if name in STAGES:
            self.bar.update(1)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def write_outputs(outputs: OwnedOutputs, names: dict, item: VideoFeatures, pred: pd.DataFrame, scores: dict,
                  crops: np.ndarray | None, summary: dict) -> None:
    """CSV, curves .npz, timeline PNG, aligned crops and the JSON summary (written last)."""
    write_predictions(pred, outputs.path(names["csv"]))
    outputs.wrote(names["csv"])
    with atomic_path(outputs.path(names["curves"])) as tmp:
        np.savez_compressed(tmp, **{c.name.replace(".", "__"): v for c, v in item.curves.items()},
                            **{f"fused__{k}": v for k, v in scores.items()})
    outputs.wrote(names["curves"])
    videos = pd.DataFrame([{"subject": "", "video": item.video, "path": summary["video"], "fps": item.fps,
                            "num_frames": item.num_frames}])
    plot_timeline(None, pred, videos, outputs.path(names["timeline"]),
                  title=f"{Path(summary['video']).name} (no labels)", labelled=False)
    outputs.wrote(names["timeline"])
    if crops is not None:
        write_mp4(outputs.path(names["aligned"]), crops, item.fps)
        outputs.wrote(names["aligned"])
    write_json(outputs.path(names["summary"]), summary)
    outputs.wrote(names["summary"])


def aligned_crops(source: FaceVideo, size: int) -> np.ndarray:
    """The face aligned to the first frame's landmarks, [T, size, size, 3] (data.faces.align)."""
    if source.track.face_fraction == 0:
        raise DataError("no face found in any frame", path=source.where, fix="pass a video showing a face")
    crops, _, _ = align_video(source.frames, source.track, size=size, reference="first")
    return crops


def intervals_of(spotter: spotters.Spotter, item: VideoFeatures) -> list:
    """The spotter's intervals of one video: offline, or (a causal spotter) decided as on a live stream."""
    if spotter.live is None:
        return spotter.reader.spot_item(item)
    found = [d.interval for d in decide_video(spotter.reader, item, item.face, spotter.live)]
    return sorted(found, key=lambda i: (i.onset, i.type))


def spot(video, model_dir, out_dir, already_aligned: bool = False) -> dict:
    """Run the whole chain on one video; returns the JSON summary written beside the CSV."""
    video, model_dir = Path(video), Path(model_dir)
    names = output_names(video.stem)
    outputs = OwnedOutputs(out_dir, [n for role, n in names.items() if role != "aligned" or not already_aligned])
    video_info(video)  # a file that does not open as a video is refused before the model is read
    clock = StageClock(f"spot {video.name}")
    spotter = spotters.load(model_dir)
    builder = ChannelBuilder(spotter.sets, spotter.baseline, spotter.encoder_channels, spotter.encoder,
                             live=spotter.live)
    source = builder.source(video, video.stem, progress=True)
    size = spotter.encoder.cfg.img_size
    if already_aligned:
        crops, faces = None, {"face_fraction": None, "note": "input taken as aligned"}
    else:
        crops, faces = aligned_crops(source, size), source.track.summary()
    clock.done("decode + faces")
    channels, face = builder.causal(source) if spotter.live else (builder.channels(source), None)
    clock.done("channels")
    heads = None
    if HEADS in spotter.sets:
        frames = model_frames(source.frames if crops is None else crops, size)
        with tqdm(desc="heads windows", unit="window", leave=False) as bar:
            heads = head_channels(video_curves(spotter.heads, frames, source.fps, spotter.granularities,
                                               progress=bar))
    clock.done("heads")
    item = dataclasses.replace(video_features("", video.stem, source.fps, source.num_frames, channels, heads),
                               face=face)
    pred = to_frame(intervals_of(spotter, item), "", video.stem)
    clock.done("intervals")
    clock.bar.close()
    elapsed = clock.elapsed()
    summary = {"video": str(video), "model": str(model_dir), "fps": source.fps, "num_frames": item.num_frames,
               "seconds": round(elapsed, 3), "frames_per_second": round(item.num_frames / elapsed, 2),
               "stage_seconds": clock.seconds, "reader": spotter.reader_name, "channels": list(spotter.sets),
               "face_track": faces, "intervals": pred.drop(columns=["subject", "emotion"]).to_dict("records")}
    write_outputs(outputs, names, item, pred, spotter.reader.curves(item), crops, summary)
    log.info("%d intervals in %s (%.1f frames/s end to end) -> %s", len(pred), video.name,
             summary["frames_per_second"], outputs.folder)
    return summary

"""Spot macro/micro expressions in one video with a trained spotter (`python -m spotting spot`, spotting.spot_cli).

faces (dlib track + align to the canonical 160 crop) -> flow region cues -> the spotter's per-frame scores at
each granularity -> the fitted reader of those channels: the temporal detector (DIR/detector.json), the logistic
fusion (DIR/fusion.json), or without either the heads' presence scores alone -> typed intervals.
The channels are built as LOSO builds them (spotting.channels): the flow cues come from the video itself with the
face track this command made, so a video of a LOSO run gets the channels, and the intervals, it got there.
Writes OUT/<video>.csv (predictions table), OUT/<video>.json (intervals + run facts), OUT/<video>_timeline.png,
OUT/<video>_curves.npz (the per-frame curves) and OUT/<video>_aligned.mp4 (the face crops the model saw, for
viewing: the model and the flow cues read the crops from memory, never this lossy re-encoding of them, so the
same video gives the same intervals every time). OUT may hold other files: a name that holds a file this
command did not write there is refused before any work (data.common.outputs), never replaced.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from data.common.atomic import atomic_path, write_json
from data.common.config import build
from data.common.errors import DataError
from data.common.outputs import OwnedOutputs
from data.common.tables import TYPES, write_predictions
from data.common.video_io import read_frames, video_info, write_mp4
from data.faces.align import align_video
from data.faces.track import save_track, track_faces
from data.flow.curves import track_cache_path
from finetune.predict import model_frames, video_curves
from finetune.store import load_spotter
from spotting import fusion as fu
from spotting.baseline import BaselineConfig
from spotting.channels import (
    CUE,
    ENCODER,
    FLOW,
    MODEL,
    Channel,
    VideoFeatures,
    cue_channels,
    frame_cue_channels,
    model_channels,
    video_features,
)
from spotting.detector_decode import frame_spans
from spotting.detector_spotter import DetectorSpotter
from spotting.encoder_channels import EncoderChannelsConfig, encoder_channels
from spotting.intervals import to_frame
from spotting.plots import plot_timeline

log = logging.getLogger(__name__)
STAGES = ("faces", "flow cues", "model", "intervals")


def default_fusion(granularities: list[str]) -> fu.Fusion:
    """Fusion without fitted weights: sigmoid(8 * (mean presence probability - 0.5)) per type, threshold 0.5."""
    types = {}
    for kind in TYPES:
        channels = [Channel(MODEL, kind, g, "present") for g in granularities]
        n = len(channels)
        types[kind] = fu.TypeFit(channels, [0.0] * n, [1.0] * n, [8.0 / n] * n, -4.0)
    return fu.Fusion(fu.FusionConfig(use_cues=False), types)


def load_baseline_config(model_dir: Path):
    path = model_dir / "cues.json"
    if not path.is_file():
        return BaselineConfig()
    return build(BaselineConfig, json.loads(path.read_text()), str(path))


def load_reader(model_dir: Path, granularities: list[str]) -> tuple[object, str]:
    """What turns the channels into intervals: (DetectorSpotter or Fusion, its description)."""
    if (model_dir / DetectorSpotter.FILE).is_file():
        return DetectorSpotter.load(model_dir), "detector"
    if (model_dir / "fusion.json").is_file():
        return fu.Fusion.load(model_dir / "fusion.json"), "fitted fusion"
    return default_fusion(granularities), "default (heads only)"


def reader_sets(reader) -> set[str]:
    """The channel sets a reader needs."""
    if isinstance(reader, DetectorSpotter):
        return {c.set for c in reader.norm.channels}
    return set(reader.config.sets())


def load_encoder_input(model_dir: Path) -> EncoderChannelsConfig:
    path = model_dir / "encoder_input.json"
    if not path.is_file():
        raise DataError("the detector reads encoder channels but their config is missing", path=path,
                        fix="copy the whole model folder that `python -m spotting loso` wrote")
    return build(EncoderChannelsConfig, json.loads(path.read_text()), str(path))


def align_faces(video: Path, size: int, track_path: Path) -> tuple[np.ndarray, dict]:
    """Track + align the main face; the track is saved at `track_path`, where the flow cues look for it.
    Returns (aligned crops [T, size, size, 3], track summary)."""
    track = track_faces(video, progress=True)
    if track.face_fraction == 0:
        raise DataError("no face found in any frame", path=video, fix="pass a video showing a face")
    save_track(track_path, track)
    crops, _, _ = align_video(video, track, size=size, reference="first")
    return crops, track.summary()


def reader_curves(reader, item: VideoFeatures) -> dict[str, np.ndarray]:
    """Per-frame score of each type as the reader sees it: the fused probability, or for the detector the best
    box score covering each frame."""
    if not isinstance(reader, DetectorSpotter):
        return {k: fu.fused_curve(reader, item, k) for k in TYPES}
    boxes = reader.boxes(item)
    out = {}
    for kind in TYPES:
        curve = np.zeros(item.num_frames, np.float32)
        mine = boxes[boxes[:, 3] == TYPES.index(kind)]
        for (on, off), score in zip(frame_spans(mine, item.fps, item.num_frames), mine[:, 2]):
            curve[on:off + 1] = np.maximum(curve[on:off + 1], score)
        out[kind] = curve
    return out


def intervals_of(reader, item: VideoFeatures):
    return reader.spot_item(item) if isinstance(reader, DetectorSpotter) else fu.spot_item(reader, item)


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


def write_outputs(outputs: OwnedOutputs, names: dict, item: VideoFeatures, pred: pd.DataFrame, fused: dict,
                  crops: np.ndarray | None, summary: dict) -> None:
    """CSV, curves .npz, timeline PNG, aligned crops and the JSON summary (written last)."""
    write_predictions(pred, outputs.path(names["csv"]))
    outputs.wrote(names["csv"])
    with atomic_path(outputs.path(names["curves"])) as tmp:
        np.savez_compressed(tmp, **{c.name.replace(".", "__"): v for c, v in item.curves.items()},
                            **{f"fused__{k}": v for k, v in fused.items()})
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


def spot(video, model_dir, out_dir, already_aligned: bool = False) -> dict:
    """Run the whole chain on one video; returns the JSON summary written beside the CSV."""

    video, model_dir = Path(video), Path(model_dir)
    names = output_names(video.stem)
    outputs = OwnedOutputs(out_dir, [n for role, n in names.items() if role != "aligned" or not already_aligned])
    info = video_info(video)
    clock = StageClock(f"spot {video.name}")
    spotter, grans = load_spotter(model_dir)
    size = spotter.encoder.cfg.img_size
    reader, how = load_reader(model_dir, [g.name for g in grans])
    sets = reader_sets(reader)
    clock.done("load model")
    with tempfile.TemporaryDirectory(prefix="spotmae_spot_") as tmp:
        cue_cache = Path(tmp) / "cues" / f"{video.stem}.npz"
        if already_aligned:
            crops, track = None, {"face_fraction": None, "note": "input taken as aligned"}
            faces = read_frames(video)
        else:
            crops, track = align_faces(video, size, track_cache_path(cue_cache))
            faces = crops
        clock.done("faces")
        cues = None
        if sets & {CUE, FLOW}:
            bcfg = load_baseline_config(model_dir)
            cues = (frame_cue_channels(faces, info["fps"], bcfg, None, name=str(video)) if already_aligned
                    else cue_channels(video, bcfg, cue_cache))
        if ENCODER in sets:  # the stabilised face from the video itself, as in LOSO
            cues = {**(cues or {}), **encoder_channels(video, video.stem, info["fps"], len(faces), spotter.encoder,
                                                      load_encoder_input(model_dir))}
        clock.done("flow cues")
    model = None
    if MODEL in sets:
        with tqdm(desc="model windows", unit="window", leave=False) as bar:
            frames = model_frames(faces, size)
            model = model_channels(video_curves(spotter, frames, info["fps"], grans, progress=bar))
    clock.done("model")
    item = video_features("", video.stem, info["fps"], len(faces), cues, model)
    pred = to_frame(intervals_of(reader, item), "", video.stem)
    clock.done("intervals")
    clock.bar.close()
    elapsed = clock.elapsed()
    summary = {"video": str(video), "model": str(model_dir), "fps": info["fps"], "num_frames": item.num_frames,
               "seconds": round(elapsed, 3), "frames_per_second": round(item.num_frames / elapsed, 2),
               "stage_seconds": clock.seconds, "reader": how,
               "face_track": track, "intervals": pred.drop(columns=["subject", "emotion"]).to_dict("records")}
    write_outputs(outputs, names, item, pred, reader_curves(reader, item), crops, summary)
    log.info("%d intervals in %s (%.1f frames/s end to end) -> %s", len(pred), video.name,
             summary["frames_per_second"], outputs.folder)
    return summary

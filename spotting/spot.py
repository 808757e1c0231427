"""Spot macro/micro expressions in one video with a trained spotter (`python -m spotting spot`, spotting.spot_cli).

faces (dlib track + align to the canonical 160 crop) -> flow region cues -> the spotter's per-frame scores at
each granularity -> fusion (DIR/fusion.json, or the heads' presence scores alone) -> peaks -> typed intervals.
Writes OUT/<video>.csv (predictions table), OUT/<video>.json (intervals + run facts), OUT/<video>_timeline.png,
OUT/<video>_curves.npz (the per-frame curves) and OUT/<video>_aligned.mp4 (the face crops the model saw, for
viewing: the model and the flow cues read the crops from memory, never this lossy re-encoding of them, so the
same video gives the same intervals every time). OUT may hold other files: a name that holds a file this
command did not write there is refused before any work (data.common.outputs), never replaced.
"""
from __future__ import annotations

import json
import logging
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
from data.faces.track import track_faces
from finetune.predict import model_frames, video_curves
from finetune.store import load_spotter
from spotting import fusion as fu
from spotting.baseline import BaselineConfig
from spotting.channels import MODEL, Channel, VideoFeatures, frame_cue_channels, model_channels, video_features
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


def align_faces(video: Path, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Track + align the main face; returns (aligned crops [T, size, size, 3], median aligned landmarks, track
    summary)."""
    track = track_faces(video, progress=True)
    if track.face_fraction == 0:
        raise DataError("no face found in any frame", path=video, fix="pass a video showing a face")
    crops, landmarks, _ = align_video(video, track, size=size, reference="first")
    median = np.nanmedian(landmarks[track.found], axis=0).astype(np.float32)
    return crops, median, track.summary()


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
    fitted = (model_dir / "fusion.json").is_file()
    fusion = fu.Fusion.load(model_dir / "fusion.json") if fitted else default_fusion([g.name for g in grans])
    clock.done("load model")
    if already_aligned:
        crops, landmarks, track = None, None, {"face_fraction": None, "note": "input taken as aligned"}
        faces = read_frames(video)
    else:
        crops, landmarks, track = align_faces(video, size)
        faces = crops
    clock.done("faces")
    cues = None
    if fusion.config.use_cues:
        cues = frame_cue_channels(faces, info["fps"], load_baseline_config(model_dir), landmarks, name=str(video))
    clock.done("flow cues")
    frames = model_frames(faces, size)
    with tqdm(desc="model windows", unit="window", leave=False) as bar:
        model = model_channels(video_curves(spotter, frames, info["fps"], grans, progress=bar))
    clock.done("model")
    item = video_features("", video.stem, info["fps"], len(frames), cues, model)
    pred = to_frame(fu.spot_item(fusion, item), "", video.stem)
    clock.done("intervals")
    clock.bar.close()
    elapsed = clock.elapsed()
    summary = {"video": str(video), "model": str(model_dir), "fps": info["fps"], "num_frames": len(frames),
               "seconds": round(elapsed, 3), "frames_per_second": round(len(frames) / elapsed, 2),
               "stage_seconds": clock.seconds, "fusion": "fitted" if fitted else "default (heads only)",
               "face_track": track, "intervals": pred.drop(columns=["subject", "emotion"]).to_dict("records")}
    write_outputs(outputs, names, item, pred, {k: fu.fused_curve(fusion, item, k) for k in TYPES}, crops, summary)
    log.info("%d intervals in %s (%.1f frames/s end to end) -> %s", len(pred), video.name,
             summary["frames_per_second"], outputs.folder)
    return summary

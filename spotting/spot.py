"""Spot macro/micro expressions in one video with a trained spotter and write the results (`python -m spotting
spot`, spotting.cli.spot).

The computing part is spotting.pipeline (one pass over the video: decoded once, its face tracked once; channels ->
reader -> intervals + curves); this module loads the spotter (a folder or a Hub id in the local Hub cache,
data.common.hub), runs it and writes the result.
Writes OUT/<video>.csv (predictions table), OUT/<video>.json (intervals + run facts), OUT/<video>_timeline.png,
OUT/<video>_curves.npz (the per-frame curves) and OUT/<video>_aligned.mp4 (the face crops, for viewing: nothing
reads this lossy re-encoding of them, so the same video gives the same intervals every time). OUT may hold other
files: a name that holds a file this command did not write there is refused before any work
(data.common.outputs), never replaced.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from data.common.atomic import atomic_path, write_json
from data.common.hub import resolve_model
from data.common.outputs import OwnedOutputs
from data.common.tables import write_predictions
from data.common.video_io import video_info, write_mp4
from spotting import spotter as spotters
from spotting.channels.vocabulary import VideoFeatures
from spotting.evaluation.plots import plot_timeline
from spotting.pipeline import SCORE, StageClock, spot_source

log = logging.getLogger(__name__)


def output_names(stem: str) -> dict[str, str]:
    """What spot writes into OUT, by role."""
    return {"csv": f"{stem}.csv", "curves": f"{stem}_curves.npz", "timeline": f"{stem}_timeline.png",
            "aligned": f"{stem}_aligned.mp4", "summary": f"{stem}.json"}


def write_outputs(outputs: OwnedOutputs, names: dict, item: VideoFeatures, pred: pd.DataFrame, scores: dict,
                  crops: np.ndarray | None, summary: dict) -> None:
    """CSV, curves .npz, timeline PNG, aligned crops and the JSON summary (written last)."""
    write_predictions(pred, outputs.path(names["csv"]))
    outputs.wrote(names["csv"])
    with atomic_path(outputs.path(names["curves"])) as tmp:
        np.savez_compressed(tmp, **{c.name.replace(".", "__"): v for c, v in item.curves.items()},
                            **{f"{SCORE}__{k}": v for k, v in scores.items()})
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
    """Run the whole chain on one video and write its files; returns the JSON summary written beside the CSV.
    model_dir: a spotter folder, or the Hub id of one in the local Hub cache."""
    video = Path(video)
    names = output_names(video.stem)
    outputs = OwnedOutputs(out_dir, [n for role, n in names.items() if role != "aligned" or not already_aligned])
    video_info(video)  # a file that does not open as a video is refused before the model is read
    clock = StageClock(f"spot {video.name}")
    folder = resolve_model(model_dir, "--model")
    spotter = spotters.load(folder)
    result = spot_source(spotter, spotter.builder().source(video, video.stem, progress=True), already_aligned,
                         clock)
    clock.bar.close()
    elapsed = clock.elapsed()
    item, pred = result.features, result.intervals
    summary = {"video": str(video), "model": str(model_dir), "fps": item.fps, "num_frames": item.num_frames,
               "seconds": round(elapsed, 3), "frames_per_second": round(item.num_frames / elapsed, 2),
               "stage_seconds": clock.seconds, "reader": spotter.reader_name, "channels": list(spotter.sets),
               "face_track": result.face_track,
               "intervals": pred.drop(columns=["subject", "emotion"]).to_dict("records")}
    if folder != Path(model_dir):
        summary["model_folder"] = str(folder)  # where the Hub id was found
    write_outputs(outputs, names, item, pred, result.scores, result.crops, summary)
    log.info("%d intervals in %s (%.1f frames/s end to end) -> %s", len(pred), video.name,
             summary["frames_per_second"], outputs.folder)
    return summary

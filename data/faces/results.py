"""One video's face result set, as `python -m data faces` writes it and `python -m data prepare` reuses it.

Per video NAME, in the output folder:
  NAME.npz          the face track (data.faces.track.save_track) + aligned_landmarks and matrices (data.faces.align)
  NAME_aligned.mp4  the aligned crops (unless video=false)
  NAME.json         summary: status ok | no_face, face fraction, parameters; written last, so it marks completion
A video counts as done when its summary shows the same parameters and the same source size.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

from data.common.atomic import write_json
from data.common.config import Config, setting, to_dict
from data.common.frames import FrameFolder
from data.common.video_io import video_info, write_mp4
from data.faces.align import align_video, check_align_args
from data.faces.track import save_track, track_faces

FORMAT_VERSION = 1


@dataclasses.dataclass
class FacesConfig(Config):
    size: int = setting(160, ge=32)  # crop side in pixels (even)
    # data.faces.align.REFERENCES: first/median = one transform per video (keeps head and face motion in the
    # crop); frame = a per-frame smoothed transform (removes head motion)
    reference: str = "first"
    detect_every: int = setting(10, ge=1)  # frames between face detections
    upsample: int | None = setting(None, ge=0)  # dlib detector upsampling; None: by frame size
    smooth: int = setting(3, ge=1)  # centred landmark smoothing window, frames (1 = off)
    video: bool = True  # write NAME_aligned.mp4

    def check(self) -> None:
        check_align_args(self.size, self.reference)


def params(cfg: FacesConfig) -> dict:
    """What the summary records to tell whether a result was made the same way."""
    return {**to_dict(cfg), "version": FORMAT_VERSION}


def source_bytes(source) -> int:
    """Size on disk of a video file or of every image of a FrameFolder (a changed source is redone)."""
    return source.nbytes() if isinstance(source, FrameFolder) else Path(source).stat().st_size


def aligned_video_path(out, name: str) -> Path:
    return Path(out) / f"{name}_aligned.mp4"


def read_summary(out, name: str) -> dict | None:
    """The summary of a finished video, or None (missing or damaged: the video is simply redone)."""
    try:
        return json.loads((Path(out) / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def is_done(out, name: str, cfg: FacesConfig, source) -> bool:
    out = Path(out)
    summary = read_summary(out, name)
    if summary is None or not (out / f"{name}.npz").is_file():
        return False
    if summary.get("params") != params(cfg) or summary.get("source_bytes") != source_bytes(source):
        return False
    return summary.get("status") == "no_face" or not cfg.video or aligned_video_path(out, name).is_file()


def process_video(source, name: str, out, cfg: FacesConfig, progress: bool = True,
                  on_frames: Callable[[int], None] | None = None) -> dict:
    """Track + align one video (a file or a FrameFolder), write its results (npz, mp4, then json last);
    return the summary."""
    out = Path(out)
    fps = source.fps if isinstance(source, FrameFolder) else video_info(source)["fps"]
    track = track_faces(source, detect_every=cfg.detect_every, upsample=cfg.upsample, smooth=cfg.smooth,
                        progress=progress, on_frames=on_frames)
    summary = {**track.summary(), "name": name, "fps": fps, "params": params(cfg),
               "source_bytes": source_bytes(source)}
    if not track.found.any():
        save_track(out / f"{name}.npz", track)
        summary["status"] = "no_face"
    else:
        crops, aligned, matrices = align_video(source, track, size=cfg.size, reference=cfg.reference)
        save_track(out / f"{name}.npz", track, aligned_landmarks=aligned, matrices=matrices)
        if cfg.video:
            write_mp4(aligned_video_path(out, name), crops, fps)
        summary["status"] = "ok"
    write_json(out / f"{name}.json", summary)
    return summary

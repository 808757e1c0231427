"""A published dataset (or a folder + CSV) -> a dataset folder that LOSO, the baseline and `spot` read.

prepare_dataset(cfg): scan ROOT's layout (data.prepare.layouts), read the annotation file with the dataset's
adapter (data.annotations), run the checks that need no decoding (data.prepare.checks), track and align the face
of every video not done yet as Ray tasks (data.prepare.tasks), then write, in OUT:
  faces/VIDEO.npz, faces/VIDEO_aligned.mp4, faces/VIDEO.json   the `data faces` result set of each video
  videos.csv      subject,video,path,fps,num_frames (path: the aligned crops, relative to OUT)
  intervals.csv   the interval table, 0-based positions in those videos
  prepare.json    the run: format, root, annotation file, counts, every check finding, face fractions
The tables are written last and only when every video has its result, so an interrupted or failed run leaves
the previous tables (or none); a rerun redoes only videos without a finished result.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pandas as pd

from data.annotations.adapters import LOADERS
from data.common.atomic import write_json
from data.common.config import Config, setting, to_dict
from data.common.errors import ConfigError
from data.common.outputs import OwnedOutputs
from data.common.tables import VIDEO_COLUMNS, empty_intervals, write_intervals, write_videos
from data.faces.results import FacesConfig, aligned_video_path, is_done, read_summary
from data.prepare import checks
from data.prepare.layouts import LAYOUTS, SourceVideo, scan
from data.prepare.tasks import run_videos

log = logging.getLogger(__name__)

TABLES = ("videos.csv", "intervals.csv", "prepare.json")  # what prepare writes at the top of OUT


@dataclasses.dataclass
class PrepareConfig(Config):
    root: str  # the dataset as unpacked (or its frames folder: rawpic, SAMM_longvideos)
    format: str  # data.prepare.layouts.LAYOUTS
    out: str  # the dataset folder to write
    annotations: str | None = None  # the dataset's annotation file (folder format: a CSV); None: no labels
    fps: float | None = setting(None, gt=0)  # None: the format's (CAS 30, SAMM 200) or the video file's
    faces: FacesConfig = dataclasses.field(default_factory=FacesConfig)
    address: str | None = None  # Ray cluster ("auto" inside `ray job submit`); None: a local Ray
    workers: int | None = setting(None, ge=1)  # CPUs of the local Ray; None: every core
    skip_missing: bool = False  # drop annotated videos without frames (and their intervals) instead of failing
    clip_intervals: bool = False  # clip intervals past a video's last frame instead of failing
    exclude: list[str] = dataclasses.field(default_factory=list)  # video ids left out, with their intervals
    min_face_fraction: float = setting(0.9, ge=0, le=1)  # warn about videos with a face in fewer frames
    force: bool = False  # redo every video

    def check(self) -> None:
        if self.format not in LAYOUTS:
            raise ConfigError(f"unknown format {self.format!r}", field="format", fix=f"use one of {list(LAYOUTS)}")
        if not self.faces.video:
            raise ConfigError("prepare writes the aligned videos that videos.csv lists", field="faces.video",
                              fix="leave faces.video true")


def read_annotations(cfg: PrepareConfig, layout) -> pd.DataFrame:
    if cfg.annotations is None:
        return empty_intervals()
    return LOADERS[layout.annotations](cfg.annotations)


def video_table(videos: list[SourceVideo], summaries: dict[str, dict], faces_dir: Path, out: Path) -> pd.DataFrame:
    rows = [{"subject": v.subject, "video": v.video, "fps": v.fps,
             "path": str(aligned_video_path(faces_dir, v.video).relative_to(out)),
             "num_frames": summaries[v.video]["num_frames"]} for v in videos]
    return pd.DataFrame(rows, columns=VIDEO_COLUMNS)


def prepare_dataset(cfg: PrepareConfig, progress: bool = True) -> dict:
    """Run the whole preparation (see module doc); returns the report (also in OUT/prepare.json)."""
    layout = LAYOUTS[cfg.format]
    out = Path(cfg.out).resolve()
    # the tables may go into a folder the user already uses: never replace a file prepare did not write
    outputs = OwnedOutputs(out, TABLES)
    faces_dir = out / "faces"
    found = checks.Findings()
    videos = scan(layout, cfg.root, cfg.fps, exclude=out)
    intervals = read_annotations(cfg, layout)
    videos, intervals = checks.drop_excluded(videos, intervals, cfg.exclude, found)
    videos, intervals = checks.match_annotations(layout, videos, intervals, cfg.annotations, cfg.skip_missing, found)
    scanned = len(videos)
    videos = checks.probe_videos(videos, found)  # a file that does not open fails alone, the others go on
    intervals = intervals[intervals["video"].isin({v.video for v in videos})]
    intervals = checks.fit_to_frames(layout, videos, intervals, cfg.annotations, cfg.clip_intervals, found)

    todo = [v for v in videos if cfg.force or not is_done(faces_dir, v.video, cfg.faces, v.source)]
    log.info("%d of %d videos to process (%d already done)", len(todo), len(videos), len(videos) - len(todo))
    todo_ids = {v.video for v in todo}
    summaries = {v.video: read_summary(faces_dir, v.video) for v in videos if v.video not in todo_ids}
    summaries.update(run_videos(todo, faces_dir, cfg.faces, cfg.address, cfg.workers, progress))
    for v in videos:
        s = summaries[v.video]
        if s["status"] == "failed":
            found.failed[v.video] = s["error"]
        elif s["status"] == "no_face":
            found.failed[v.video] = f"no face found in any of its {s['num_frames']} frames"
        elif s["face_fraction"] < cfg.min_face_fraction:
            found.low_face[v.video] = s["face_fraction"]

    report = {"format": cfg.format, "root": str(Path(cfg.root).resolve()), "annotations": cfg.annotations,
              "videos": scanned, "processed": len(todo), "already_done": len(videos) - len(todo),
              "intervals": len(intervals),
              "findings": dataclasses.asdict(found), "config": to_dict(cfg),
              "face_fraction": {v: s.get("face_fraction") for v, s in summaries.items()},
              "task_cpu_s": {v: s["task_cpu_s"] for v, s in summaries.items() if "task_cpu_s" in s},
              "lines": checks.report_lines(found, cfg.min_face_fraction), "complete": not found.failed}
    if not found.failed:
        write_videos(video_table(videos, summaries, faces_dir, out), outputs.path("videos.csv"))
        outputs.wrote("videos.csv")
        write_intervals(intervals, outputs.path("intervals.csv"))
        outputs.wrote("intervals.csv")
    write_json(outputs.path("prepare.json"), report)
    outputs.wrote("prepare.json")
    return report

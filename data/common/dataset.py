"""A dataset folder (DESIGN.md §3): `videos.csv` (the video table) and `intervals.csv` (the interval table), as
`python -m data synth` and the dataset adapters write it. Reading one never creates one: generating data is the
job of `python -m data synth` alone."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from data.common.config import Config
from data.common.errors import DataError
from data.common.tables import check_video_lengths, read_intervals, read_videos


@dataclasses.dataclass
class DatasetConfig(Config):
    root: str = "runs/synthetic_ft"  # folder with videos.csv, intervals.csv and the videos


def read_dataset(root, field: str = "data.root") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(video table, interval table) of a dataset folder; every annotated video must be in the video table and
    every video's num_frames must be its video's frame count."""
    root = Path(root)
    if not (root / "videos.csv").is_file():
        raise DataError("dataset folder has no videos.csv", path=root, field=field,
                        fix=f"make one with `python -m data synth --config configs/data/synthetic_demo.yaml "
                            f"--out {root}` or point {field} at a dataset folder")
    videos = read_videos(root / "videos.csv")
    check_video_lengths(videos, root / "videos.csv")
    gt = read_intervals(root / "intervals.csv", num_frames=dict(zip(videos["video"], videos["num_frames"])))
    unknown = sorted(set(gt["video"]) - set(videos["video"]))
    if unknown:
        raise DataError(f"intervals for videos missing from videos.csv: {unknown[:3]}", path=root / "intervals.csv",
                        field="video", fix="list every annotated video in videos.csv")
    return videos, gt

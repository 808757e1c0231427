"""`python -m data flow VIDEO_OR_DIR --out DIR`: region motion curves of every video, cached (data.flow.curves).

Each video gets DIR/<name>.npz, NAME being the file's stem for a single video and its path relative to the folder
(folders joined by '__', as `data faces` names its outputs) for a folder: two videos with the same file name in
different sub-folders get different files. With --landmarks tracked / tracked-frame the face tracks go to
DIR/faces/<name>.npz. A rerun skips videos whose .npz holds the gaps asked for with the same parameters.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from data.common.errors import DataError
from data.common.video_io import find_videos
from data.flow import regions as fl
from data.flow.curves import LANDMARK_SOURCES, video_curves

log = logging.getLogger(__name__)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m data flow", description=__doc__.splitlines()[0])
    ap.add_argument("source", help="a video file or a folder searched recursively for videos")
    ap.add_argument("--out", required=True, help="folder for the per-video .npz files")
    ap.add_argument("--k", type=int, nargs="+", help="frame gaps (default: micro and macro k from each video's fps)")
    ap.add_argument("--method", default="dis", choices=fl.METHODS)
    ap.add_argument("--scale", type=float, default=1.0, help="resize frames by this factor before flow")
    ap.add_argument("--landmarks", default="auto", choices=LANDMARK_SOURCES,
                    help="region boxes from the canonical aligned face, dlib on the first frame, or the face "
                         "tracked through the video (median set, or per frame); tracks go to DIR/faces")
    ap.add_argument("--head-model", default="affine", choices=fl.HEAD_MODELS,
                    help="head motion removed as an affine field fitted on nose + forehead, or the nose mean")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.k and min(args.k) < 1:
        raise DataError(f"--k must be >= 1, got {args.k}", field="k")
    out = Path(args.out)
    videos = find_videos(args.source, exclude=out)
    done = frames = 0
    start = time.perf_counter()
    with tqdm(desc="flow pairs", unit="pair") as bar, logging_redirect_tqdm():  # warnings on their own lines
        for name, video in videos.items():
            result = video_curves(video, out / f"{name}.npz", args.k, args.method, args.scale, args.landmarks, bar,
                                  args.head_model, track_path=out / "faces" / f"{name}.npz")
            done += bool(result["computed"])
            frames += result["num_frames"] if result["computed"] else 0
    seconds = time.perf_counter() - start
    log.info("%d video(s), %d computed, %d cached; %d frames in %.1f s -> %s", len(videos), done,
             len(videos) - done, frames, seconds, out)
    return 0

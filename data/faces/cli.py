"""`python -m data faces VIDEO_OR_DIR --out DIR`: track, align and crop faces; one result set per video.

Per video NAME (the file stem; for a folder, its relative path with '/' as '__'), --out gets the result set of
data.faces.results (NAME.npz, NAME_aligned.mp4, NAME.json written last). A rerun skips videos whose summary shows
the same parameters and source size. In a folder, a bad file is reported at the end (exit 1) without stopping
the others; a video without a face is a result, not an error.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from data.common.errors import SpotMAEError
from data.common.video_io import find_videos
from data.faces.align import REFERENCES
from data.faces.results import FacesConfig, is_done, process_video

log = logging.getLogger(__name__)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m data faces", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="a video file or a folder searched recursively for videos")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    add_face_args(p)
    p.add_argument("--no-video", action="store_true", help="do not write NAME_aligned.mp4")
    p.add_argument("--force", action="store_true", help="redo videos that already have results")
    return p.parse_args(argv)


def add_face_args(p: argparse.ArgumentParser) -> None:
    """The FacesConfig options (shared with `python -m data prepare`); defaults come from the dataclass."""
    d = FacesConfig()
    p.add_argument("--size", type=int, default=d.size, help=f"crop side in pixels (even, default {d.size})")
    p.add_argument("--reference", choices=REFERENCES, default=d.reference,
                   help="first/median: one transform per video (keeps head and face motion in the crop); "
                        f"frame: per-frame smoothed transform (removes head motion). Default {d.reference}")
    p.add_argument("--detect-every", type=int, default=d.detect_every,
                   help=f"frames between face detections (default {d.detect_every})")
    p.add_argument("--upsample", type=int, default=d.upsample, help="dlib detector upsampling (default: by size)")
    p.add_argument("--smooth", type=int, default=d.smooth,
                   help=f"centred landmark smoothing window, frames (1 = off, default {d.smooth})")


def face_config(args: argparse.Namespace) -> FacesConfig:
    return FacesConfig(size=args.size, reference=args.reference, detect_every=args.detect_every,
                       upsample=args.upsample, smooth=args.smooth, video=not getattr(args, "no_video", False))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    cfg = face_config(args)
    videos = find_videos(args.input, exclude=args.out)
    single = args.input.is_file()
    done, skipped, no_face, failed = [], [], [], []
    from tqdm import tqdm

    for name, path in tqdm(videos.items(), desc="videos", unit="video", disable=len(videos) < 2):
        if not args.force and is_done(args.out, name, cfg, path):
            log.info("%s: already done, skipping (use --force to redo)", name)
            skipped.append(name)
            continue
        try:
            summary = process_video(path, name, args.out, cfg)
        except SpotMAEError as e:
            if single:
                raise
            log.error("%s: %s", name, e)
            failed.append((name, str(e)))
            continue
        if summary["status"] == "no_face":
            log.warning("%s: no face found in any of %d frames (flagged in %s.json)", name,
                        summary["num_frames"], name)
            no_face.append(name)
        else:
            log.info("%s: face in %.1f%% of %d frames -> %s", name, 100 * summary["face_fraction"],
                     summary["num_frames"], args.out / f"{name}.npz")
            done.append(name)
    print(f"faces: {len(done)} done, {len(skipped)} skipped (already done), {len(no_face)} without a face, "
          f"{len(failed)} failed; results in {args.out}")
    for name in no_face:
        print(f"  no face: {name}")
    for name, error in failed:
        print(f"  failed: {name}: {error}")
    return 1 if failed else 0

"""`python -m data faces VIDEO_OR_DIR --out DIR`: track, align and crop faces; one result set per video.

Per video NAME (the file stem; for a folder, its relative path with '/' as '__'), in --out:
  NAME.npz          the face track (data.faces.track.save_track) + aligned_landmarks and matrices (data.faces.align)
  NAME_aligned.mp4  the aligned crops (unless --no-video)
  NAME.json         summary: status ok | no_face, face fraction, parameters; written last, so it marks completion
A rerun skips videos whose summary shows the same parameters and source size. In a folder, a bad file is
reported at the end (exit 1) without stopping the others; a video without a face is a result, not an error.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from data.common.atomic import write_json
from data.common.errors import ConfigError, SpotMAEError
from data.common.video_io import find_videos, video_info, write_mp4
from data.faces.align import REFERENCES, align_video, check_align_args
from data.faces.track import save_track, track_faces

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m data faces", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="a video file or a folder searched recursively for videos")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--size", type=int, default=160, help="crop side in pixels (even, default 160)")
    p.add_argument("--reference", choices=REFERENCES, default="first",
                   help="first/median: one transform per video (keeps head and face motion in the crop); "
                        "frame: per-frame smoothed transform (removes head motion). Default first")
    p.add_argument("--detect-every", type=int, default=10, help="frames between face detections (default 10)")
    p.add_argument("--upsample", type=int, default=None, help="dlib detector upsampling (default: auto by size)")
    p.add_argument("--smooth", type=int, default=3, help="centred landmark smoothing window, frames (1 = off)")
    p.add_argument("--no-video", action="store_true", help="do not write NAME_aligned.mp4")
    p.add_argument("--force", action="store_true", help="redo videos that already have results")
    return p.parse_args(argv)


def run_params(args: argparse.Namespace) -> dict:
    return {"size": args.size, "reference": args.reference, "detect_every": args.detect_every,
            "upsample": args.upsample, "smooth": args.smooth, "video": not args.no_video,
            "version": FORMAT_VERSION}


def is_done(out: Path, name: str, params: dict, source: Path) -> bool:
    summary_path = out / f"{name}.json"
    if not summary_path.is_file() or not (out / f"{name}.npz").is_file():
        return False
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return False  # a damaged summary: just redo the video
    if summary.get("params") != params or summary.get("source_bytes") != source.stat().st_size:
        return False
    return summary.get("status") == "no_face" or not params["video"] or (out / f"{name}_aligned.mp4").is_file()


def process_video(path: Path, name: str, out: Path, args: argparse.Namespace, params: dict) -> dict:
    """Track + align one video, write its results (npz, mp4, then json last); return the summary."""
    info = video_info(path)
    track = track_faces(path, detect_every=args.detect_every, upsample=args.upsample, smooth=args.smooth,
                        progress=True)
    summary = {**track.summary(), "name": name, "fps": info["fps"], "params": params,
               "source_bytes": path.stat().st_size}
    if not track.found.any():
        save_track(out / f"{name}.npz", track)
        summary["status"] = "no_face"
    else:
        crops, aligned, matrices = align_video(path, track, size=args.size, reference=args.reference)
        save_track(out / f"{name}.npz", track, aligned_landmarks=aligned, matrices=matrices)
        if params["video"]:
            write_mp4(out / f"{name}_aligned.mp4", crops, info["fps"])
        summary["status"] = "ok"
    write_json(out / f"{name}.json", summary)
    return summary


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    check_align_args(args.size, args.reference)
    if args.detect_every < 1 or args.smooth < 1 or (args.upsample is not None and args.upsample < 0):
        raise ConfigError("--detect-every and --smooth must be >= 1, --upsample >= 0", field="arguments",
                          fix="pass positive values")
    videos = find_videos(args.input, exclude=args.out)
    single = args.input.is_file()
    params = run_params(args)
    done, skipped, no_face, failed = [], [], [], []
    from tqdm import tqdm

    for name, path in tqdm(videos.items(), desc="videos", unit="video", disable=len(videos) < 2):
        if not args.force and is_done(args.out, name, params, path):
            log.info("%s: already done, skipping (use --force to redo)", name)
            skipped.append(name)
            continue
        try:
            summary = process_video(path, name, args.out, args, params)
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

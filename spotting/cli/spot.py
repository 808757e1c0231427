"""`python -m spotting spot VIDEO --model DIR|ORG/NAME [--out DIR] [--aligned]`: spot macro/micro expressions in one
video (spotting.spot)."""
from __future__ import annotations

import argparse
from pathlib import Path

from data.common.errors import DataError
from data.common.storage import shared_location
from spotting.spot import spot


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m spotting spot", description=__doc__.splitlines()[0])
    parser.add_argument("video", help="a video file (any size; the face is found and aligned)")
    parser.add_argument("--model", required=True, help="spotter folder (python -m finetune / spotting loso / launch "
                        "release --spotter), or its Hub id org/name[@revision] in the local Hub cache")
    parser.add_argument("--out", default=None, help="output folder (default runs/spot/<video name>)")
    parser.add_argument("--aligned", action="store_true", help="the video is already a face-aligned crop")
    args = parser.parse_args(argv)
    video = Path(args.video)
    if not video.is_file():
        raise DataError("video not found", path=video, fix="pass an existing video file")
    out = Path(shared_location(args.out or f"runs/spot/{video.stem}", "--out"))
    summary = spot(video, args.model, out, args.aligned)
    print(f"{len(summary['intervals'])} intervals, {summary['frames_per_second']} frames/s -> {out}")
    return 0

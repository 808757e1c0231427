"""End-to-end spotting speed: raw video -> intervals, one JSON line per configuration.

    python benchmarks/spot.py [--model DIR] [--threads N] [--synthetic-seconds S] [--wide-seconds S]
                              [--configs a,b,...] [--video NAME=PATH[:aligned] ...]

Configurations (`--configs`, default all but `synthetic_1080p`):
  carphone                  the real carphone video (176x144): tracking, alignment, flow cues, encoder channels
  synthetic_aligned         a face-aligned 160x160 synthetic video read as aligned (no alignment)
  synthetic_aligned_heads   the same, read by an untrained heads-only spotter (no cues)
  synthetic_640x360         a synthetic face of 360 px padded to 640x360 (`--wide-seconds`, default 30 s)
  synthetic_1080p           the same at 1920x1080 (8 s): decoded at a working size (data.faces.face_video)
Without --model an untrained spotter (lgi_tiny, scratch encoder) is written to a temp folder with a logistic
reader of the heads and the cues: speed does not depend on the weights. `--video` adds any file.
Each line holds frames/s, the real-time factor, the seconds of each stage and the intervals found, so two
versions of the code can be compared interval for interval. The DESIGN.md target is >= real time on 2 CPU cores
(realtime_factor >= 1) and >= 10x on one GPU.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.common.assets import carphone_video  # noqa: E402
from data.common.video_io import read_frames, video_info, write_mp4  # noqa: E402
from data.synthetic.config import load_synthetic_config  # noqa: E402
from data.synthetic.generate import generate  # noqa: E402
from finetune.encoder.load import load_encoder  # noqa: E402
from finetune.heads.config import FinetuneConfig  # noqa: E402
from finetune.heads.train import build_heads  # noqa: E402
from finetune.store import save_spotter  # noqa: E402
from spotting.baseline import BaselineConfig  # noqa: E402
from spotting.channels.encoder import EncoderChannelsConfig  # noqa: E402
from spotting.channels.vocabulary import CUES, HEADS, Channel  # noqa: E402
from spotting.logistic import LogisticConfig, LogisticReader, TypeFit  # noqa: E402
from spotting.spot import spot  # noqa: E402
from spotting.spotter import default_reader, save_channels  # noqa: E402

DEFAULT_CONFIGS = ("carphone", "synthetic_aligned", "synthetic_aligned_heads", "synthetic_640x360")


def untrained_model(folder: Path, with_cues: bool) -> Path:
    """An untrained spotter: heads-only (default reader), or a logistic reader of the heads and the cues."""
    cfg = FinetuneConfig()
    reader = default_reader([g.name for g in cfg.granularities])
    if with_cues:
        types = {}
        for kind, fit in reader.types.items():
            channels = fit.channels + [Channel(CUES, kind, "all", "motion")]
            n = len(channels)
            types[kind] = TypeFit(channels, [0.0] * n, [1.0] * n, [1.0] * n, -2.0)
        reader = LogisticReader(LogisticConfig(), types)
        reader.save(folder)
        save_channels(folder, (CUES, HEADS), BaselineConfig(), EncoderChannelsConfig())
    save_spotter(build_heads(load_encoder(None, cfg.model.name), cfg), cfg, folder)  # last: records the files
    return folder


# Fewer and shorter events, so that a video shorter than the generator's default minimum (13.8 s) is allowed
SHORT_EVENTS = ("events.macro_per_video=[1,1]", "events.micro_per_video=[1,2]", "events.macro_duration_s=[0.6,1.5]")


def synthetic_video(folder: Path, seconds: float, size: int = 160, overrides=()) -> Path:
    cfg = load_synthetic_config(None, ["subjects=1", "videos_per_subject=1", f"duration_s={seconds}",
                                       f"size={size}", *overrides])
    out = generate(cfg, folder, progress=False)
    return next((out / "videos").glob("*.mp4"))


def widened(video: Path, width: int, out: Path) -> Path:
    """The square synthetic video padded left and right (edge pixels repeated) to `width`: a face filling the
    height of a wider frame, as a webcam or interview recording shows it."""
    frames = read_frames(video)
    pad = (width - frames.shape[2]) // 2
    wide = np.pad(frames, ((0, 0), (0, 0), (pad, width - frames.shape[2] - pad), (0, 0)), mode="edge")
    return write_mp4(out, wide, video_info(video)["fps"])


def run(name: str, video: Path, model: Path, aligned: bool, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    info = video_info(video)
    with tempfile.TemporaryDirectory() as out:
        summary = spot(video, model, out, already_aligned=aligned)
    return {"benchmark": "spot", "config": name, "device": "cpu", "threads": threads,
            "cpu": platform.processor() or platform.machine(), "size": f"{info['width']}x{info['height']}",
            "frames": summary["num_frames"], "seconds": summary["seconds"],
            "frames_per_second": summary["frames_per_second"],
            "realtime_factor": round(summary["frames_per_second"] / info["fps"], 3),
            "stage_seconds": summary["stage_seconds"],
            "intervals": [[i["onset"], i["offset"], i["type"], round(i["score"], 4)] for i in summary["intervals"]]}


def videos(args, tmp: Path, with_cues: Path, no_cues: Path) -> list[tuple]:
    """(config name, video, model, aligned) of each configuration asked for."""
    wanted = args.configs.split(",") if args.configs else list(DEFAULT_CONFIGS)
    out = []
    if "carphone" in wanted:
        out.append(("carphone", carphone_video(), with_cues, False))
    if {"synthetic_aligned", "synthetic_aligned_heads"} & set(wanted):
        square = synthetic_video(tmp / "synthetic", args.synthetic_seconds)
        out += [("synthetic_aligned", square, with_cues, True)] * ("synthetic_aligned" in wanted)
        out += [("synthetic_aligned_heads", square, no_cues, True)] * ("synthetic_aligned_heads" in wanted)
    if "synthetic_640x360" in wanted:
        face = synthetic_video(tmp / "face360", args.wide_seconds, 360)
        out.append(("synthetic_640x360", widened(face, 640, tmp / "wide_640x360.mp4"), with_cues, False))
    if "synthetic_1080p" in wanted:
        face = synthetic_video(tmp / "face1080", 8.0, 1080, SHORT_EVENTS)
        out.append(("synthetic_1080p", widened(face, 1920, tmp / "wide_1920x1080.mp4"), with_cues, False))
    for spec in args.video or []:
        name, _, path = spec.partition("=")
        path, _, flag = path.partition(":")
        out.append((name, Path(path), with_cues, flag == "aligned"))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained spotter folder (default: an untrained one with cues)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--synthetic-seconds", type=float, default=16.0)
    parser.add_argument("--wide-seconds", type=float, default=30.0)
    parser.add_argument("--configs", help=f"comma-separated (default {','.join(DEFAULT_CONFIGS)}; also "
                                          "synthetic_1080p)")
    parser.add_argument("--video", action="append", help="NAME=PATH or NAME=PATH:aligned: one more video")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    tmp = Path(tempfile.mkdtemp(prefix="spot_bench_"))
    try:
        with_cues = Path(args.model) if args.model else untrained_model(tmp / "model_cues", True)
        no_cues = untrained_model(tmp / "model_plain", False)
        for name, path, model, aligned in videos(args, tmp, with_cues, no_cues):
            t = time.perf_counter()
            line = run(name, path, model, aligned, args.threads)
            line["wall_seconds"] = round(time.perf_counter() - t, 3)
            print(json.dumps(line), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

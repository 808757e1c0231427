"""End-to-end spotting speed: raw video -> intervals, one JSON line per configuration.

    python benchmarks/spot.py [--model DIR] [--threads N] [--synthetic-seconds S]

Configurations: the real carphone video (face tracking + alignment + flow cues + model), and a face-aligned
synthetic video (no tracking) with and without flow cues. Without --model an untrained spotter (lgi_tiny, scratch
encoder) is written to a temp folder with a fusion that reads cues: speed does not depend on the weights.
The DESIGN.md target is >= real time on 2 CPU cores (realtime_factor >= 1) and >= 10x on one GPU.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.common.assets import carphone_video  # noqa: E402
from data.common.atomic import write_json  # noqa: E402
from data.common.config import to_dict  # noqa: E402
from data.common.video_io import video_info  # noqa: E402
from data.synthetic.config import load_synthetic_config  # noqa: E402
from data.synthetic.generate import generate  # noqa: E402
from finetune.config import FinetuneConfig  # noqa: E402
from finetune.encoder import load_encoder  # noqa: E402
from finetune.store import save_spotter  # noqa: E402
from finetune.train import build_spotter  # noqa: E402
from spotting.baseline import BaselineConfig  # noqa: E402
from spotting.channels import CUE, Channel  # noqa: E402
from spotting.fusion import Fusion, FusionConfig, TypeFit  # noqa: E402
from spotting.spot import default_fusion, spot  # noqa: E402


def untrained_model(folder: Path, with_cues: bool) -> Path:
    cfg = FinetuneConfig()
    grans = [g.name for g in cfg.granularities]
    fusion = default_fusion(grans)
    if with_cues:
        types = {}
        for kind, fit in fusion.types.items():
            channels = fit.channels + [Channel(CUE, kind, "all", "motion")]
            n = len(channels)
            types[kind] = TypeFit(channels, [0.0] * n, [1.0] * n, [1.0] * n, -2.0)
        fusion = Fusion(FusionConfig(), types)
        write_json(folder / "cues.json", to_dict(BaselineConfig()))
    fusion.save(folder / "fusion.json")
    save_spotter(build_spotter(load_encoder(None, cfg.model.name), cfg), cfg, folder)  # last: records the files
    return folder


def synthetic_video(folder: Path, seconds: float) -> Path:
    cfg = load_synthetic_config(None, ["subjects=1", "videos_per_subject=1", f"duration_s={seconds}"])
    out = generate(cfg, folder, progress=False)
    return next((out / "videos").glob("*.mp4"))


def run(name: str, video: Path, model: Path, aligned: bool, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out:
        summary = spot(video, model, out, already_aligned=aligned)
    fps = video_info(video)["fps"]
    return {"benchmark": "spot", "config": name, "device": "cpu", "threads": threads,
            "cpu": platform.processor() or platform.machine(), "frames": summary["num_frames"],
            "seconds": summary["seconds"], "frames_per_second": summary["frames_per_second"],
            "realtime_factor": round(summary["frames_per_second"] / fps, 3),
            "stage_seconds": summary["stage_seconds"], "intervals": len(summary["intervals"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained spotter folder (default: an untrained one with cues)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--synthetic-seconds", type=float, default=16.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    tmp = Path(tempfile.mkdtemp(prefix="spot_bench_"))
    try:
        with_cues = Path(args.model) if args.model else untrained_model(tmp / "model_cues", True)
        no_cues = untrained_model(tmp / "model_plain", False)
        video = synthetic_video(tmp / "synthetic", args.synthetic_seconds)
        configs = [("carphone_track_align_flow_model", carphone_video(), with_cues, False),
                   ("synthetic_aligned_flow_model", video, with_cues, True),
                   ("synthetic_aligned_model_only", video, no_cues, True)]
        for name, path, model, aligned in configs:
            t = time.perf_counter()
            line = run(name, path, model, aligned, args.threads)
            line["wall_seconds"] = round(time.perf_counter() - t, 3)
            print(json.dumps(line), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Synthetic-benchmark generation speed: one JSON line per configuration (render, encode, total frames/s).

`cpu_fps` divides by process CPU time (all threads), i.e. frames per second of one busy core; `wall_fps` is what
this (possibly shared) machine gave. Usage: python benchmarks/synthetic_speed.py [--seconds 20]
"""
from __future__ import annotations

import argparse
import json
import time

from data.common.video_io import encode_mp4
from data.synthetic.faces import build_identity
from data.synthetic.generate import load_synthetic_config, render_video


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0, help="video length per configuration")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (1 = the one-core target)")
    args = parser.parse_args()
    import cv2

    cv2.setNumThreads(args.threads)
    for size, fps in ((160, 30.0), (160, 200.0), (224, 30.0)):
        seconds = args.seconds if fps < 100 else 14.0  # 2,800 frames: enough, and the default events fit
        cfg = load_synthetic_config(None, [f"size={size}", f"fps={fps}", f"duration_s={seconds}"])
        identity, id_wall, _ = _timed(lambda: build_identity(cfg, 0))
        (frames, meta), r_wall, r_cpu = _timed(lambda: render_video(cfg, 0, 0, identity))
        data, e_wall, e_cpu = _timed(lambda: encode_mp4(frames, fps, crf=cfg.crf))
        n = len(frames)
        print(json.dumps({
            "bench": "synthetic_generation", "size": size, "fps": fps, "frames": n,
            "identity_build_s": round(id_wall, 2),
            "render_wall_fps": round(n / r_wall), "render_cpu_fps": round(n / r_cpu),
            "encode_wall_fps": round(n / e_wall), "encode_cpu_fps": round(n / e_cpu),
            "total_wall_fps": round(n / (r_wall + e_wall)), "total_cpu_fps": round(n / (r_cpu + e_cpu)),
            "mp4_kib": round(len(data) / 1024), "opencv_threads": args.threads,
        }), flush=True)


if __name__ == "__main__":
    main()

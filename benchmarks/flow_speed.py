"""Optical-flow speed at 160x160 on real face frames: one JSON line per (method, stage).

stage "flow": the flow call alone; stage "regions": flow + head-motion removal + region magnitudes and strain
(what `python -m data flow` does per frame pair). Frames are the carphone video's face, cropped and resized to
160x160, so the numbers reflect real texture. Usage: python benchmarks/flow_speed.py [--pairs N] [--threads T]
"""
from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np

from data.common.assets import carphone_video
from data.common.video_io import read_frames
from data.flow import regions as fl


def face_frames(n: int) -> np.ndarray:
    """n grey 160x160 frames: the centre of carphone (the face), resized; looped if n > 120."""
    frames = read_frames(carphone_video())
    grey = fl.to_grey(frames[:, 4:140, 20:156])  # 136x136 around the face
    grey = np.stack([cv2.resize(g, (160, 160), interpolation=cv2.INTER_LINEAR) for g in grey])
    return grey[np.arange(n + 6) % len(grey)]


def measure(fn, pairs: int) -> float:
    fn(0)  # warm-up (allocations, first-call setup)
    start = time.perf_counter()
    for i in range(pairs):
        fn(i)
    return pairs / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--tvl1-pairs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    grey = face_frames(args.pairs)
    geometry = fl.RegionGeometry.from_landmarks(fl.canonical_landmarks(160), (160, 160))
    k = 6
    for method in fl.METHODS:
        flow_fn = fl.make_flow(method)
        pairs = args.tvl1_pairs if method == "tvl1" else args.pairs
        stages = {"flow": lambda i: flow_fn(grey[i], grey[i + k]),
                  "regions": lambda i: fl.region_values(flow_fn(grey[i], grey[i + k]), geometry)}
        for stage, fn in stages.items():
            rate = measure(fn, pairs)
            print(json.dumps({"benchmark": "flow_speed", "method": method, "stage": stage, "size": 160,
                              "threads": args.threads, "pairs": pairs, "pairs_per_s": round(rate, 1),
                              "ms_per_pair": round(1000 / rate, 2)}), flush=True)


if __name__ == "__main__":
    main()

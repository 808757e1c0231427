"""Preprocessing speed on this machine: face detection + landmarks, alignment, optical flow at 160x160.

    .venv/bin/python benchmarks/preprocess.py [--repeats 3] [--threads 1] [--pairs 60]

Prints one JSON line per configuration: frames/s (best and median of --repeats runs; the machine is shared, so
the best run is the least disturbed one). Input is the real carphone video (120 frames, 176x144); flow runs on
consecutive pairs of its aligned 160x160 crops. DIS "fast" is not offered by data.flow.regions (too coarse for
micro-expressions) and is timed on cv2 directly for comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402

from data.common.assets import carphone_video
from data.common.video_io import read_frames
from data.faces import landmarks as lmk
from data.faces.align import align_video
from data.faces.track import auto_upsample, track_faces
from data.flow.regions import make_flow


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up: model loading, allocator, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def report(stage: str, config: dict, frames: int, times: list[float], threads: int) -> None:
    best, median = min(times), statistics.median(times)
    print(json.dumps({"bench": "preprocess", "stage": stage, **config, "frames": frames,
                      "fps_best": round(frames / best, 1), "fps_median": round(frames / median, 1),
                      "ms_per_frame_best": round(1000 * best / frames, 3), "threads": threads,
                      "cpu_count": os.cpu_count()}), flush=True)


def bench_faces(frames: np.ndarray, repeats: int, threads: int):
    up = auto_upsample(*frames.shape[1:3])
    size = f"{frames.shape[2]}x{frames.shape[1]}"
    report("detect", {"upsample": up, "input": size}, len(frames),
           timed(lambda: [lmk.detect_faces(f, up) for f in frames], repeats), threads)
    track = track_faces(frames)
    boxes = track.boxes
    report("landmarks", {"input": size}, len(frames),
           timed(lambda: [lmk.predict_landmarks(f, b) for f, b in zip(frames, boxes)], repeats), threads)
    for every in (1, 10):
        report("track", {"detect_every": every, "input": size}, len(frames),
               timed(lambda: track_faces(frames, detect_every=every), repeats), threads)
    return track


def bench_align(frames: np.ndarray, track, repeats: int, threads: int) -> np.ndarray:
    for reference in ("first", "frame"):
        report("align", {"reference": reference, "size": 160}, len(frames),
               timed(lambda: align_video(frames, track, size=160, reference=reference), repeats), threads)
    return align_video(frames, track, size=160, reference="frame")[0]


def flow_methods() -> dict:
    import cv2

    methods = {}
    dis_fast = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    methods["dis_fast (cv2 direct)"] = lambda a, b: dis_fast.calc(a, b, None)
    methods["dis_medium (data.flow.regions)"] = make_flow("dis")
    methods["farneback (data.flow.regions)"] = make_flow("farneback")
    methods["tvl1 (data.flow.regions)"] = make_flow("tvl1")
    return methods


def bench_flow(crops: np.ndarray, pairs: int, repeats: int, threads: int) -> None:
    import cv2

    grey = np.stack([cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) for c in crops])
    for name, flow in flow_methods().items():
        n = min(pairs, len(grey) - 1, 10 if name.startswith("tvl1") else pairs)  # TV-L1 is ~100x slower
        report("flow", {"method": name, "size": "160x160"}, n,
               timed(lambda: [flow(grey[i], grey[i + 1]) for i in range(n)], repeats), threads)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="cv2 threads (dlib is single-threaded)")
    p.add_argument("--pairs", type=int, default=60, help="frame pairs per flow run")
    args = p.parse_args(argv)
    import cv2


    cv2.setNumThreads(args.threads)
    frames = read_frames(carphone_video())
    track = bench_faces(frames, args.repeats, args.threads)
    crops = bench_align(frames, track, args.repeats, args.threads)
    bench_flow(crops, args.pairs, args.repeats, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())

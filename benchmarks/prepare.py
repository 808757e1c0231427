"""Dataset preparation speed (`python -m data prepare`): frames per second per core, and the projected hours for
SAMM-LV on a 16-core host.

    .venv/bin/python benchmarks/prepare.py [--frames 150] [--videos 2] [--workers 2] [--out runs/bench/prepare]

Input: synthetic faces (data.synthetic) upscaled 3x to a ~480 px face and placed on a noisy 2040x1088 canvas, saved
as JPEG frame folders named as SAMM-LV names them (and at 640x480 as CAS(ME)^2 does). Prints one JSON line per
configuration:
- "per_core": one video through data.faces.results.process_video (the code each Ray task runs: decode, track,
  align, encode) in this process with one OpenCV thread; frames per CPU-second of this process, which is the
  per-core rate whatever else runs on the machine. `projected_samm_lv_hours_16_cores` divides SAMM-LV's ~1 M
  frames (147 long videos of ~7,000 frames) by 16x that rate: it assumes videos scale across cores as
  independent tasks do and that storage keeps up (~0.3 MB per frame read twice).
- "ray": the whole command (prepare_dataset) on --videos videos as Ray tasks on a local Ray of --workers CPUs;
  wall-clock frames/s (Ray start included), which on a shared machine is lower than workers x the per-core rate,
  and frames per CPU-second inside the tasks (the per-core rate as the tasks see it).
"upsample": 0 detects on the full-size frame (no auto shrink), to show what the shrink saves.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402

from data.common.frames import frame_folder  # noqa: E402
from data.common.video_io import read_frames  # noqa: E402
from data.faces.results import FacesConfig, process_video  # noqa: E402
from data.prepare.layouts import LAYOUTS  # noqa: E402
from data.prepare.run import PrepareConfig, prepare_dataset  # noqa: E402
from data.synthetic.config import load_synthetic_config  # noqa: E402
from data.synthetic.generate import generate  # noqa: E402

SAMM_LV_FRAMES = 147 * 7000  # 147 long videos of ~7,000 frames (DESIGN.md §1)
SIZES = {"samm": (2040, 1088), "casme2": (640, 480)}


def write_frames(frames: np.ndarray, layout: str, root: Path, subject: str, video: str, size, seed: int) -> Path:
    """Faces upscaled 3x onto a noisy canvas of `size`, as JPEGs named as the layout names them."""
    import cv2

    width, height = size
    rng = np.random.default_rng(seed)
    canvas = np.clip(rng.normal(120, 12, (height, width, 3)), 0, 255).astype(np.uint8)  # texture JPEG must keep
    face_side = min(3 * frames.shape[1], height)
    y0, x0 = (height - face_side) // 2, (width - face_side) // 2
    for i, frame in enumerate(frames):
        image = canvas.copy()
        image[y0:y0 + face_side, x0:x0 + face_side] = cv2.resize(frame, (face_side, face_side),
                                                                 interpolation=cv2.INTER_CUBIC)
        path = LAYOUTS[layout].frame_path(root, subject, video, i + 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path.parent


def per_core(folder: Path, fps: float, out: Path, faces: FacesConfig) -> dict:
    import cv2

    cv2.setNumThreads(1)
    frames = frame_folder(folder, fps)
    process_video(frames, "warmup", out / "warmup", faces, progress=False)  # dlib model load, allocator
    start_cpu, start = time.process_time(), time.perf_counter()
    process_video(frames, "timed", out / "timed", faces, progress=False)
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
    rate = frames.num_frames / cpu
    return {"frames": frames.num_frames, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
            "frames_per_cpu_s": round(rate, 1), "ms_per_frame_cpu": round(1000 / rate, 2),
            "mb_per_frame": round(frames.nbytes() / frames.num_frames / 1e6, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=150, help="frames per video")
    ap.add_argument("--videos", type=int, default=2, help="videos in the Ray run")
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray")
    ap.add_argument("--out", default="runs/bench/prepare")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    seconds = max(8, -(-args.frames // 30))
    synth = load_synthetic_config(None, [f"subjects={args.videos}", "videos_per_subject=1", f"duration_s={seconds}",
                                         "events.macro_per_video=[1,1]", "events.micro_per_video=[1,2]",
                                         "events.macro_duration_s=[0.6,1.5]"])
    data = generate(synth, out / "synthetic", progress=False)
    faces = [read_frames(p)[:args.frames] for p in sorted((data / "videos").glob("*.mp4"))]
    for layout, size in SIZES.items():
        fps = LAYOUTS[layout].fps
        root = out / layout
        folders = [write_frames(f, layout, root, f"{i + 6:03d}" if layout == "samm" else f"s{15 + i}",
                                f"{i + 6:03d}_1" if layout == "samm" else f"{15 + i}_0401girlcrashing", size, i)
                   for i, f in enumerate(faces)]
        for upsample in (None, 0) if layout == "samm" else (None,):
            cfg = FacesConfig(upsample=upsample)
            result = per_core(folders[0], fps, out / "per_core" / f"{layout}_{upsample}", cfg)
            result["projected_samm_lv_hours_16_cores"] = round(SAMM_LV_FRAMES / (16 * result["frames_per_cpu_s"])
                                                                / 3600, 2)
            print(json.dumps({"bench": "prepare", "mode": "per_core", "layout": layout, "size": list(size),
                              "upsample": upsample, **result, "cpu_count": os.cpu_count()}), flush=True)
        cfg = PrepareConfig(root=str(root), format=layout, out=str(out / f"{layout}_prepared"), workers=args.workers)
        start = time.perf_counter()
        report = prepare_dataset(cfg, progress=False)
        wall = time.perf_counter() - start
        total, task_cpu = sum(len(f) for f in faces), sum(report["task_cpu_s"].values())
        print(json.dumps({"bench": "prepare", "mode": "ray", "layout": layout, "size": list(size),
                          "videos": report["videos"], "frames": total, "workers": args.workers,
                          "wall_s": round(wall, 1), "frames_per_s": round(total / wall, 1),
                          "task_cpu_s": round(task_cpu, 2), "frames_per_task_cpu_s": round(total / task_cpu, 1),
                          "cpu_count": os.cpu_count()}), flush=True)


if __name__ == "__main__":
    main()

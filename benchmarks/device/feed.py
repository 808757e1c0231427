"""The loader on all host cores against the step's appetite (the clips/s the fastest step variant eats).

  decode_free  what the loader does after decoding: crop box, region-balanced mask, crop + resize into the
               batch array, collate (data.shards.loader's DecodeViews and Batches stages), on frames already in
               memory, one process per core. The ceiling of the loader on this host whatever the decoder.
               Needs cv2.
  loader       the real loader (data.shards.loader.make_loader, one DataLoader worker per core) over shards
               written here from synthetic clips (16 frames of 160 x 160 packed pre-strided, keyframe every 16,
               x264 fastdecode: the fastest layout of benchmarks/loader.py), or over --shards. Needs webdataset
               and decord to read, av to write the synthetic shards. Synthetic content is smooth and moves
               little: real faces cost more to decode, so --shards with a real shard set is the better number.
"""
from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SYNTHETIC_CLIPS, CLIPS_PER_SHARD = 64, 8


def smooth_clip(rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
    """[frames, size, size, 3] uint8: a smooth random texture with two blobs drifting across it, light noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    texture = np.zeros((size, size, 3), np.float32)
    for _ in range(4):
        fy, fx, phase = rng.uniform(1, 4), rng.uniform(1, 4), rng.uniform(0, 2 * np.pi)
        texture += rng.uniform(10, 30, 3) * np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)[..., None]
    out = np.empty((frames, size, size, 3), np.uint8)
    start, velocity = rng.uniform(0.2, 0.8, (2, 2)), rng.uniform(-0.01, 0.01, (2, 2))
    for t in range(frames):
        frame = texture + 120
        for (cy, cx), (vy, vx) in zip(start, velocity):
            frame += 60 * np.exp(-((yy - cy - vy * t) ** 2 + (xx - cx - vx * t) ** 2) / 0.01)[..., None]
        out[t] = np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255)
    return out


# ---- decode-free: the loader's collation stages on every core ------------------------------------------

def _collate_worker(args) -> tuple[int, float]:
    """(views, seconds) of one process running crop + mask + collate for `seconds`."""
    geometry, batch, seconds, seed = args
    import cv2

    from data.clips.augment import crop_box
    from data.shards.loader import Batches, CorruptCounter, LoaderConfig

    cv2.setNumThreads(1)
    rng = np.random.default_rng(seed)
    frames = smooth_clip(rng, geometry.frames, geometry.size)
    cfg = LoaderConfig(batch_size=batch, output="uint8")  # as the loader rows: normalised on the device
    stage, masks = Batches(cfg, geometry, CorruptCounter("in memory", 1.0, 1)), geometry.mask_generator()
    views, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch_views = [{"key": "x", "frames": frames, "mask": masks(rng),
                        "box": crop_box(geometry.size, geometry.size, geometry.size, rng, cfg.scales,
                                        cfg.max_distort)} for _ in range(batch)]
        stage.collate(batch_views)
        views += batch
    return views, time.perf_counter() - start


def decode_free(geometry, batch: int, seconds: float, cores: int) -> dict:
    with multiprocessing.get_context("fork").Pool(cores) as pool:
        results = pool.map(_collate_worker, [(geometry, batch, seconds, i) for i in range(cores)])
    rate = sum(views / secs for views, secs in results)
    return {"mode": "decode_free", "workers": cores, "clips_per_s": round(rate, 1),
            "clips_per_s_per_worker": round(rate / cores, 1)}


# ---- the real loader -------------------------------------------------------------------------------------

def write_synthetic_shards(folder: Path, geometry, clips: int) -> list[str]:
    """Shards of pre-strided synthetic clips (geometry.frames frames each); their paths."""
    import json

    from data.common.video_io import encode_mp4
    from data.shards.format import shard_name, write_shard

    rng = np.random.default_rng(0)
    urls = []
    for index in range(max(1, clips // CLIPS_PER_SHARD)):
        samples = [{"__key__": f"clip{index:03d}_{i:02d}",
                    "mp4": encode_mp4(smooth_clip(rng, geometry.frames, geometry.size), 25.0, crf=23, gop=16,
                                      options={"tune": "fastdecode", "bf": 0}),
                    "json": json.dumps({"num_frames": geometry.frames}).encode()} for i in range(CLIPS_PER_SHARD)]
        path = folder / shard_name(index)
        write_shard(path, samples)
        urls.append(str(path))
    return urls


def loader_rate(geometry, urls: list[str], batch: int, workers: int, repeats: int, seconds: float,
                frame_stride: int) -> dict:
    """Views/s of make_loader after its first batch (worker start-up is not throughput)."""
    from data.shards.loader import LoaderConfig, make_loader

    cfg = LoaderConfig(batch_size=batch, num_workers=workers, resampled=True, epoch_samples=10**9,
                       shuffle_buffer=16, output="uint8", frame_stride=frame_stride, repeats=repeats)
    it = iter(make_loader(cfg, geometry, urls=urls, rank=0, world_size=1))
    next(it)
    views, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        views += len(next(it)["key"])
    rate = views / (time.perf_counter() - start)
    del it
    return {"mode": "loader", "workers": workers, "repeats": repeats, "clips_per_s": round(rate, 1),
            "decodes_per_s": round(rate / repeats, 1), "clips_per_s_per_worker": round(rate / workers, 1)}


def run(geometry, batch: int, seconds: float, have: dict[str, bool], shards: str | None, clips: int,
        appetite: float | None, emit) -> list[dict]:
    """The rows of the loader part (each also passed to `emit`), with `vs_step`: clips/s over `appetite` (the
    fastest step's clips/s so far); a skip line names what is missing."""
    cores = os.cpu_count() or 1
    rows = []

    def add(row):
        if appetite:
            row["vs_step"] = round(row["clips_per_s"] / appetite, 2)
        rows.append(row)
        emit(row)

    if have["cv2"]:
        add(decode_free(geometry, batch, seconds, cores))
    else:
        emit({"mode": "decode_free", "skipped": "needs cv2 (opencv-python-headless): crop + resize"})
    missing = [name for name in ("webdataset", "decord", "cv2") if not have[name]]
    if not shards and not have["av"]:
        missing.append("av (to write the synthetic shards; or pass --shards)")
    if missing:
        emit({"mode": "loader", "skipped": f"needs {', '.join(missing)}"})
        return rows
    with tempfile.TemporaryDirectory(prefix="device_suite_shards_") as tmp:
        if shards:
            from data.shards.format import shard_urls

            urls, stride, source = shard_urls(shards), None, shards
        else:
            start = time.perf_counter()
            urls, stride, source = write_synthetic_shards(Path(tmp), geometry, clips), 1, "synthetic"
            emit({"mode": "synthetic_shards", "shards": len(urls), "clips": len(urls) * CLIPS_PER_SHARD,
                  "seconds": round(time.perf_counter() - start, 1)})
        for repeats in (1, 2):
            row = loader_rate(geometry, urls, batch, cores, repeats, seconds, stride or 4)
            add(dict(row, shards=source))
    return rows

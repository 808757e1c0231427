"""Input-pipeline throughput: clips/s out of the shard loader, per worker and in total. One JSON line each.

    python benchmarks/loader.py [--seconds 4] [--workers 2] [--copies 8] [--out runs/bench_loader] [--s3 --rounds 3]

Shards are packed from the real carphone face video (repeated `--copies` times) in these layouts:
  clip64: 64-frame 160x160 clips (the peer's layout), sampled 16 frames at stride 4;
  pre4:   16-frame clips packed at frame_step 4 (the same 61-frame window), read whole at stride 1;
  gop = keyframe interval; _fast = x264 tune=fastdecode without B-frames.
Configurations vary the layout, partial vs full-clip decode, repeated sampling (views per decode) and the
output dtype (uint8 unless named _float). "per_worker" runs the pipeline in this process on one thread (one core);
"total" runs a DataLoader with --workers processes. `views_per_s` counts clips handed to the model (each view
is its own crop and mask); `decodes_per_s` counts mp4 decodes; `views_per_cpu_s` divides by this process's CPU
time. `projected_16_cores` = 16 x views_per_cpu_s (this CPU). `vs_peer` = views_per_cpu_s over the peer
configuration's (peer_full_decode, always run first), and `projected_peer_host_16_cores` = vs_peer x 780, the
peer's measured clips/s on a 16-core H100 host. The machine may be shared: compare ratios within one run.

--s3 reads every configuration twice: from local disk ("storage": "local") and from the same shard sets in a
local S3 API server (moto, benchmarks/local_s3.py, started and stopped here; "storage": "s3"), streamed
without a local copy. `vs_local` = the s3 row's views_per_s over the local row's of the same mode and workers
(aim: >= 0.8); per_worker rows add `cpu_vs_local`, the same ratio in this process's CPU time (the client's own
cost of reading from S3). The server runs on this machine's cores too, so on a small machine it competes with
the decoding workers.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.local_s3 import LocalS3  # noqa: E402
from data.common.assets import carphone_video  # noqa: E402
from data.common.storage import upload_folder  # noqa: E402
from data.shards.loader import LoaderConfig, make_dataset, make_loader  # noqa: E402
from data.shards.pack import PackConfig, pack  # noqa: E402
from pretrain.model_config import ModelConfig  # noqa: E402

GEOMETRY = ModelConfig().geometry  # the base model's clips: 16 frames of 160 x 160, region-balanced masks

PEER_HOST_16_CORES = 780  # clips/s: a decord reader per clip, 16 of 64 frames at stride 4, 16-core H100 host
LAYOUTS = {  # name -> PackConfig overrides
    "clip64_gop64": dict(clip_frames=64, frame_step=1, gop=64, fast_decode=False),
    "clip64_gop16": dict(clip_frames=64, frame_step=1, gop=16, fast_decode=False),
    "pre4_gop16": dict(clip_frames=16, frame_step=4, gop=16, fast_decode=False),
    "pre4_gop16_fast": dict(clip_frames=16, frame_step=4, gop=16, fast_decode=True),
}
CONFIGS = [  # (name, layout, LoaderConfig overrides); the first is the peer's way, the reference
    ("peer_full_decode", "clip64_gop64", dict(frame_stride=4, partial_decode=False, repeats=1)),
    ("partial_decode", "clip64_gop64", dict(frame_stride=4, partial_decode=True, repeats=1)),
    ("partial_decode_gop16", "clip64_gop16", dict(frame_stride=4, partial_decode=True, repeats=1)),
    ("prestrided", "pre4_gop16", dict(frame_stride=1, repeats=1)),
    ("prestrided_fastdecode", "pre4_gop16_fast", dict(frame_stride=1, repeats=1)),
    ("prestrided_fastdecode_float", "pre4_gop16_fast", dict(frame_stride=1, repeats=1, output="float")),
    ("partial_decode_x4", "clip64_gop64", dict(frame_stride=4, partial_decode=True, repeats=4)),
    ("prestrided_fastdecode_x2", "pre4_gop16_fast", dict(frame_stride=1, repeats=2)),
    ("prestrided_fastdecode_x4", "pre4_gop16_fast", dict(frame_stride=1, repeats=4)),
]


def pack_layouts(out: Path, copies: int) -> dict[str, Path]:
    listing = out / "sources.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("\n".join([str(carphone_video())] * copies) + "\n")
    shards = {}
    for name, overrides in LAYOUTS.items():
        cfg = PackConfig(source="list", source_path=str(listing), out_dir=str(out / name), clip_stride=8,
                         size=160, clips_per_shard=32, workers=2, **overrides)
        shards[name] = pack(cfg, progress=False)
    return shards


def s3_copies(s3: LocalS3, folders: dict[str, Path]) -> dict[str, str]:
    """The local shard sets uploaded to the local S3 server, as layout -> URL."""
    for layout, folder in folders.items():
        upload_folder(folder, s3.url(layout))
    return {layout: s3.url(layout) for layout in folders}


def measure(batches, seconds: float, repeats: int) -> dict:
    """Views/s after the first batch (worker start-up and shuffle-buffer fill are not throughput), by wall
    clock and by this process's CPU time (steadier on a shared machine; meaningful for in-process runs)."""
    it = iter(batches)
    next(it)
    views, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        views += len(next(it)["key"])
    rate = views / (time.perf_counter() - start)
    cpu_rate = views / max(time.process_time() - cpu, 1e-9)
    return {"views_per_s": round(rate, 1), "decodes_per_s": round(rate / repeats, 1),
            "views_per_cpu_s": round(cpu_rate, 1)}


def run(name: str, layout: str, shards, overrides: dict, args) -> list[dict]:
    import cv2
    import torch


    base = dict(shards=str(shards), batch_size=16, output="uint8", resampled=True, epoch_samples=10**9,
                shuffle_buffer=16, num_workers=args.workers)
    cfg = LoaderConfig(**{**base, **overrides})
    head = {"config": name, "layout": layout, **{k: getattr(cfg, k) for k in
            ("frame_stride", "partial_decode", "repeats", "output", "batch_size")}}
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    one = measure(make_dataset(dataclasses.replace(cfg, num_workers=0), GEOMETRY, rank=0, world_size=1),
                  args.seconds, cfg.repeats)
    rows = [{**head, "mode": "per_worker", "workers": 1, **one,
             "projected_16_cores": round(16 * one["views_per_cpu_s"])}]
    loader = make_loader(cfg, GEOMETRY, rank=0, world_size=1)
    total = measure(loader, args.seconds, cfg.repeats)
    del total["views_per_cpu_s"]  # the work happens in the worker processes
    rows.append({**head, "mode": "total", "workers": cfg.num_workers, **total,
                 "views_per_s_per_worker": round(total["views_per_s"] / cfg.num_workers, 1)})
    del loader
    return rows


def add_peer_ratio(row: dict, peer_rate: float) -> None:
    """vs_peer: a per_worker row's per-core rate over the peer configuration's (local disk), in CPU time; scaled
    onto the peer's measured 780 clips/s on a 16-core H100 host, it projects the row onto that host."""
    ratio = row["views_per_cpu_s"] / peer_rate
    row.update(vs_peer=round(ratio, 2), projected_peer_host_16_cores=round(ratio * PEER_HOST_16_CORES))


def compare(name: str, layout: str, overrides: dict, stores: dict, args) -> dict[str, list[dict]]:
    """Rows per storage for one configuration, each the best of --rounds alternating runs (on a shared machine
    the best run is the one least disturbed); the non-local rows with their ratios to the local ones."""
    best: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for storage, shards in stores.items():
            rows = [{**row, "storage": storage} for row in run(name, layout, shards[layout], overrides, args)]
            kept = best.get(storage, rows)
            best[storage] = [max(a, b, key=lambda r: r["views_per_s"]) for a, b in zip(kept, rows)]
    local = best["local"]
    for storage, rows in best.items():
        if storage != "local":
            for row, ref in zip(rows, local):
                row["vs_local"] = round(row["views_per_s"] / ref["views_per_s"], 2)
                if "views_per_cpu_s" in row:  # steadier than wall clock on a shared machine
                    row["cpu_vs_local"] = round(row["views_per_cpu_s"] / ref["views_per_cpu_s"], 2)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per configuration and mode")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the 'total' rows")
    parser.add_argument("--copies", type=int, default=8, help="copies of the source video (8 clips each)")
    parser.add_argument("--out", default="runs/bench_loader", help="where the shard sets are packed (reused)")
    parser.add_argument("--only", nargs="*", help="run only these configuration names")
    parser.add_argument("--s3", action="store_true", help="also read every shard set from a local S3 server")
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs per storage; the best is kept")
    args = parser.parse_args()
    stores = {"local": pack_layouts(Path(args.out), args.copies)}
    with contextlib.ExitStack() as stack:
        if args.s3:
            stores["s3"] = s3_copies(stack.enter_context(LocalS3("spotmae-bench")), stores["local"])
        peer_rate = None
        for name, layout, overrides in CONFIGS:
            if args.only and name not in args.only and name != CONFIGS[0][0]:
                continue  # the peer layout always runs: the others are reported relative to it
            results = compare(name, layout, overrides, stores, args)
            peer_rate = peer_rate or results["local"][0]["views_per_cpu_s"]  # the first configuration's
            for rows in results.values():
                add_peer_ratio(rows[0], peer_rate)
                for row in rows:
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

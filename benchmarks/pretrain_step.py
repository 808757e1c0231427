"""Pretraining step speed: clips/s, step ms, MFU and peak memory, one JSON line per batch size.

    python benchmarks/pretrain_step.py                        # CUDA: base config (lgi_base) at batch 64, 128, 256
    python benchmarks/pretrain_step.py --compile              # the same with torch.compile
    python benchmarks/pretrain_step.py --batches 2 --steps 3  # what a CPU machine can run (device=cpu)

A step is forward (bf16 autocast) + backward + fused AdamW on one fixed batch already on the device, so the
number measures the model, not the input pipeline. FLOPs per clip come from torch.utils.flop_counter on the
same model; MFU = FLOPs/s / peak (790 TFLOP/s: H100 dense bf16). CPU runs report no MFU: there is no
meaningful peak to divide by.
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from pretrain.flops import count_flops, example_batch  # noqa: E402
from pretrain.mae import VideoMAE  # noqa: E402
from pretrain.model_config import load_model_config  # noqa: E402

log = logging.getLogger("benchmarks.pretrain_step")
H100_BF16_DENSE_TFLOPS = 790.0


def make_step(model, optimizer, dtype, compile_mode: str | None):
    def step(video, mask):
        with torch.autocast(video.device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(video, mask)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    if compile_mode:
        # compile the model only: optimizer.step stays eager (fused AdamW is one kernel per param group anyway)
        model.forward = torch.compile(model.forward, mode=None if compile_mode == "default" else compile_mode)
    return step


def timed_steps(step, video, mask, steps: int, device: torch.device) -> float:
    """Mean milliseconds per step; CUDA timing with events, one synchronize at the end."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            step(video, mask)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / steps
    t0 = time.perf_counter()
    for _ in range(steps):
        step(video, mask)
    return (time.perf_counter() - t0) * 1000 / steps


def run_one(cfg, batch: int, args, device: torch.device, flops_per_clip: float) -> dict:
    torch.manual_seed(0)
    model = VideoMAE(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05,
                                  fused=device.type == "cuda")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    step = make_step(model, optimizer, dtype, args.compile)
    video, mask = example_batch(cfg, batch, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step(video, mask)
    if device.type == "cuda":
        torch.cuda.synchronize()
    ms = timed_steps(step, video, mask, args.steps, device)
    clips_per_s = batch * 1000 / ms
    tflops = flops_per_clip * clips_per_s / 1e12
    row = {"bench": "pretrain_step", "device": device.type, "device_name": device_name(device),
           "config": cfg.name, "batch": batch, "dtype": args.dtype, "compile": args.compile or False,
           "steps": args.steps, "step_ms": round(ms, 2), "clips_per_s": round(clips_per_s, 3),
           "gflop_per_clip_train": round(flops_per_clip / 1e9, 2), "achieved_tflops": round(tflops, 4)}
    if device.type == "cuda":
        row["mfu"] = round(tflops / args.peak_tflops, 4)
        row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    else:
        row["mfu"] = None  # no meaningful peak for a shared CPU
        row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return row


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def train_flops_per_clip(cfg, device: torch.device) -> float:
    """Forward + backward FLOPs of one clip, counted on the target device (batch 1, fp32)."""
    model = VideoMAE(cfg).to(device)
    video, mask = example_batch(cfg, 1, device)
    return count_flops(model, video, mask)["gflop_per_clip_train"] * 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="lgi_base", help="named model config")
    parser.add_argument("--config", help="model YAML (or a pretraining YAML with a model: section)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (CUDA 64,128,256; CPU 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (CUDA 20, CPU 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (CUDA 5, CPU 1)")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--compile", nargs="?", const="default", default=None,
                        help="torch.compile the model (optionally a mode, e.g. max-autotune)")
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS)
    parser.add_argument("overrides", nargs="*", help="model field overrides, e.g. depth=4")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batches = [int(b) for b in (args.batches or ("64,128,256" if cuda else "2")).split(",")]
    args.steps = args.steps or (20 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    cfg = load_model_config(args.config, args.name, args.overrides)
    flops = train_flops_per_clip(cfg, device)
    log.info("%s on %s: %.1f GFLOP per clip (forward + backward)", cfg.name, device_name(device), flops / 1e9)
    for batch in batches:
        try:
            row = run_one(cfg, batch, args, device, flops)
        except torch.cuda.OutOfMemoryError:
            row = {"bench": "pretrain_step", "device": device.type, "config": cfg.name, "batch": batch,
                   "error": "out of memory"}
        print(json.dumps(row), flush=True)
        if cuda:
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())

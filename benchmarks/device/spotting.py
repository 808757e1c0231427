"""Spotting with the model half on the device: the encoder over spotting windows, in video frames per second.

The spot pipeline (spotting.spot) runs the encoder twice over a video's windows with the default spotter: once
for the encoder channels (finetune.encoder.features: motion-view windows, all tokens, pooled by landmark region)
and once for the heads (finetune.heads.predict), each over every granularity's windows (finetune.windows
DEFAULT_GRANULARITIES: a window every hop_s seconds). That pass, the encoder on all tokens plus the pooling, is
what runs here on the device, at the pipeline's batch of 16 windows and at 64. The rest of the pipeline (decode,
face tracking, stabilisation, flow cues, the detector) runs on the host and is not part of this number.
"""
from __future__ import annotations

import time

import torch

from pretrain.lgi_former import LGIEncoder

PIPELINE_BATCH = 16  # finetune.encoder.features.encode_video and finetune.heads.predict.video_curves
ENCODER_PASSES = 2  # encoder channels + heads: the default spotter's channel sets that run the encoder
VIDEO_FPS = 30.0  # CAS(ME)^2 / CAS(ME)^3: the real-time bar of DESIGN.md


def windows_per_video_second() -> tuple[float | None, str]:
    """Windows one encoder pass cuts per second of video, summed over the default granularities."""
    try:
        from finetune.windows import DEFAULT_GRANULARITIES
    except ImportError as e:
        return None, f"finetune.windows does not import here ({e})"
    return sum(1.0 / g.hop_s for g in DEFAULT_GRANULARITIES), "finetune.windows.DEFAULT_GRANULARITIES"


def pass_function(encoder):
    """The pipeline's pass when finetune.encoder.features imports (encoder + pooling), else the encoder alone."""
    try:
        from finetune.encoder.features import pool_tokens, region_weights
    except ImportError as e:
        return encoder.forward_all, f"encoder.forward_all only (pooling needs finetune.encoder.features: {e})"
    cfg = encoder.cfg
    weights = torch.from_numpy(region_weights(cfg.img_size, cfg.patch)).to(next(encoder.parameters()).device)
    return (lambda video: pool_tokens(encoder.forward_all(video).float(), weights)), "forward_all + pool_tokens"


def run(cfg, device: torch.device, seconds: float, batches=(PIPELINE_BATCH, 64)) -> list[dict]:
    """Rows per batch size for the encoder of model config `cfg`."""
    torch.manual_seed(0)
    encoder = LGIEncoder(cfg).to(device).eval()
    one_pass, what = pass_function(encoder)
    per_second, source = windows_per_video_second()
    rows = []
    for batch in batches:
        video = torch.randn(batch, cfg.in_chans, cfg.frames, cfg.img_size, cfg.img_size, device=device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            one_pass(video)  # warm-up: kernels chosen, memory allocated
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / len(batches) or done == 0:
                one_pass(video)
                done += batch
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        rate = done / (time.perf_counter() - start)
        row = {"batch": batch, "pass": what, "windows_per_s": round(rate, 1), "encoder_passes": ENCODER_PASSES,
               "windows_per_video_second": per_second, "windows_from": source}
        if per_second:
            frames = rate / (ENCODER_PASSES * per_second) * VIDEO_FPS
            row.update(video_frames_per_s=round(frames, 1), x_real_time_30fps=round(frames / VIDEO_FPS, 1))
        rows.append(row)
    return rows

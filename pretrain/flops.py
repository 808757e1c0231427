"""Parameters and FLOPs of a model config: `python -m pretrain flops [--name lgi_base | --config YAML] [k=v ...]`.

FLOPs come from torch.utils.flop_counter.FlopCounterMode on one real forward and backward pass (a multiply-add
counts as 2 FLOPs; matmuls, convolutions and attention are counted, elementwise ops are not; attention runs
on the math backend while counting, because the counter does not see CPU's fused attention kernel).
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from data.clips.masking import RegionMaskGenerator
from pretrain.lgi_former import count_params
from pretrain.mae import VideoMAE
from pretrain.model_config import ModelConfig, load_model_config

log = logging.getLogger(__name__)


def param_report(model: VideoMAE) -> dict:
    """Parameter counts split as VideoMAE reports them (see pretrain.mae)."""
    encoder, decoder = count_params(model.encoder), count_params(model.decoder)
    total = count_params(model)
    return {"encoder_params": encoder, "decoder_params": decoder,
            "decoder_params_without_head": decoder - count_params(model.decoder.head),
            "bridge_params": total - encoder - decoder, "total_params": total}


def example_batch(cfg: ModelConfig, batch: int, device="cpu", seed: int = 0):
    """A random ImageNet-normalised-like clip batch and region-balanced masks, on `device`."""
    gen = RegionMaskGenerator(cfg.token_grid, cfg.region, cfg.visible_per_region, cfg.mask_mode)
    rng = np.random.default_rng(seed)
    mask = torch.from_numpy(np.stack([gen(rng) for _ in range(batch)])).to(device)
    video = torch.randn(batch, cfg.in_chans, cfg.frames, cfg.img_size, cfg.img_size, device=device)
    return video, mask


def count_flops(model: VideoMAE, video: torch.Tensor, mask: torch.Tensor) -> dict:
    """FLOPs per clip: forward, backward, and forward split into encoder and decoder."""
    batch = video.shape[0]
    # the math attention backend is counted on every device; CPU's fused kernel is invisible to the counter
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as fwd:
            loss = model(video, mask)["loss"]
        with FlopCounterMode(display=False) as bwd:
            loss.backward()
    by_module = fwd.get_flop_counts()
    model.zero_grad(set_to_none=True)

    def module_total(name: str) -> int:
        return int(sum(by_module.get(name, {}).values()))

    forward, backward = fwd.get_total_flops(), bwd.get_total_flops()
    return {"gflop_per_clip_forward": forward / batch / 1e9,
            "gflop_per_clip_backward": backward / batch / 1e9,
            "gflop_per_clip_train": (forward + backward) / batch / 1e9,
            "gflop_per_clip_encoder_forward": module_total("VideoMAE.encoder") / batch / 1e9,
            "gflop_per_clip_decoder_forward": module_total("VideoMAE.decoder") / batch / 1e9}


def gflop_per_clip_all_tokens(model: VideoMAE) -> float:
    """Encoder forward FLOPs per clip on all tokens (the fine-tuning / inference path)."""
    cfg = model.cfg
    video = torch.randn(1, cfg.in_chans, cfg.frames, cfg.img_size, cfg.img_size)
    # no torch.no_grad here: FlopCounterMode's module tracker fails on grad-less module inputs
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model.encoder.forward_all(video)
    return counter.get_total_flops() / 1e9


def report(cfg: ModelConfig, batch: int = 1) -> dict:
    model = VideoMAE(cfg)
    video, mask = example_batch(cfg, batch)
    out = {"config": cfg.name, "tokens": cfg.num_tokens, "visible_tokens": cfg.num_visible}
    out.update(param_report(model))
    out.update(count_flops(model, video, mask))
    out["gflop_per_clip_encoder_all_tokens"] = gflop_per_clip_all_tokens(model)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain flops", description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="lgi_base", help="named model config (used when --config is absent)")
    parser.add_argument("--config", help="model YAML, or a pretraining YAML with a model: section")
    parser.add_argument("--batch", type=int, default=1, help="clips in the measured batch")
    parser.add_argument("overrides", nargs="*", help="model field overrides, e.g. depth=4")
    args = parser.parse_args(argv)
    cfg = load_model_config(args.config, args.name, args.overrides)
    log.info("counting %s: %d tokens, %d visible", cfg.name, cfg.num_tokens, cfg.num_visible)
    print(json.dumps(report(cfg, args.batch)))
    return 0

"""How predictable is each pretraining target from what a masked autoencoder can see? Measured on real loader
batches, before any training, to explain a loss that will not fall below its floor.

    python benchmarks/target_signal.py --config configs/pretrain/lgi_tiny_motion.yaml --batches 16 \
        [--targets energy,flow,flow_magnitude] [key=value ...]

The same clips (the loader unshuffled, one pass) through every target. For each target, the share of its
variance (around each value's batch mean, the loss's trivial floor) that a least-squares fit explains from:
  neighbours   the mean target of the token's 4 spatial neighbours in the same tubelet (the most a model could
               learn from visible neighbours if every neighbour were visible; at 90 % masking few are)
  own input    the token's own motion-view energy (mean |value| per 4 x 4 cell; what the input shows at that
               place if it were visible)
  smoothness   the same cell one frame earlier (a target that is noise does not persist from frame to frame)
A target whose shares are all near 0 is mostly noise: predicting its batch mean is then the best a model can do.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace as dc_replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.clips.targets import CELL, make_target  # noqa: E402
from data.shards.loader import make_loader  # noqa: E402
from pretrain.config import load_pretrain_config  # noqa: E402


def batches(cfg, target: str, count: int) -> list[dict]:
    """`count` unshuffled batches of views and `target` targets (the same clips for every target)."""
    data = dc_replace(cfg.data, shuffle_shards=False, shuffle_buffer=0, num_workers=0, repeats=1)
    loader = make_loader(data, cfg.model.geometry, rank=0, world_size=1, view=cfg.motion, target=target)
    out = []
    for batch in loader:
        out.append({"video": batch["video"], "target": batch["target"]})
        if len(out) == count:
            return out
    return out


def explained(y: np.ndarray, x: np.ndarray) -> float:
    """Share of y's variance a fit y ~ a x + b explains, pooled over every value (R^2)."""
    y, x = y.ravel().astype(np.float64), x.ravel().astype(np.float64)
    design = np.stack([x, np.ones_like(x)], 1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(1 - np.mean((y - design @ coef) ** 2) / np.var(y))


def token_grid(target: torch.Tensor, geometry, per_cell: int) -> np.ndarray:
    """[B, N, D] -> [B, T', H', W', tubelet, cells, cells, per_cell]."""
    g = geometry
    cells = g.patch // CELL
    return target.reshape(target.shape[0], g.frames // g.tubelet, g.size // g.patch, g.size // g.patch,
                          g.tubelet, cells, cells, per_cell).numpy()


def neighbour_mean(grid: np.ndarray) -> np.ndarray:
    """Each token's mean over its 4 spatial neighbours (edges: the neighbours it has)."""
    total, count = np.zeros_like(grid), np.zeros(grid.shape[2:4])
    for axis, shift in ((2, 1), (2, -1), (3, 1), (3, -1)):
        rolled = np.roll(grid, shift, axis)
        valid = np.ones(grid.shape[2:4])
        edge = 0 if shift == 1 else -1
        index = [slice(None)] * 2
        index[axis - 2] = edge
        valid[tuple(index)] = 0
        expand = valid[None, None, :, :, None, None, None, None]
        total += rolled * expand
        count += valid
    return total / count[None, None, :, :, None, None, None, None]


def shares(cfg, batch_list: list[dict], kind: str) -> dict:
    g = cfg.model.geometry
    target = torch.cat([b["target"] for b in batch_list])
    video = torch.cat([b["video"] for b in batch_list])
    per_cell = target.shape[-1] // (g.tubelet * (g.patch // CELL) ** 2)
    grid = token_grid(target, g, per_cell)
    energy = token_grid(make_target(video, "energy", g.tubelet, g.patch, "motion"), g, 1)
    frames = grid.transpose(0, 1, 4, 2, 3, 5, 6, 7).reshape(grid.shape[0], g.frames, -1)  # [B, frame, values]
    own = np.linalg.norm(grid, axis=-1, keepdims=True) if per_cell > 1 else grid  # a flow's length
    return {"target": kind, "values": int(target.numel()),
            "neighbours": round(explained(grid, neighbour_mean(grid)), 3),
            "own_input": round(explained(own, energy), 3),
            "smoothness": round(explained(frames[:, 2:], frames[:, 1:-1]), 3)}  # frame 0 is 0 for flow


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a pretraining config with model.input: motion")
    p.add_argument("--batches", type=int, default=16)
    p.add_argument("--targets", default="energy,flow,flow_magnitude")
    p.add_argument("--out", help="write the rows here as JSON")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = load_pretrain_config(args.config, args.overrides)
    rows = [shares(cfg, batches(cfg, kind, args.batches), kind) for kind in args.targets.split(",")]
    print("share of each target's variance explained by (R^2; 0 = no better than its batch mean)")
    print(f"{'target':16s} {'neighbours':>10s} {'own input':>10s} {'smoothness':>10s}")
    for r in rows:
        print(f"{r['target']:16s} {r['neighbours']:10.3f} {r['own_input']:10.3f} {r['smoothness']:10.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

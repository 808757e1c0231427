"""Encoder features of the stabilised, lighting-normalised, temporal-contrast stream, on the canonical time grid.

Input: a data.faces.stabilise.StableVideo (grey crops on a `rate_hz` grid). For each granularity (a window span
and hop in seconds) windows of the encoder's `frames` grid steps slide over the video; each window becomes the
motion view (data.faces.motion_view: lighting normalisation, then a temporal-contrast view, scaled, replicated
to 3 channels), the encoder's time-ordered token features [B, T', H', W', D] are pooled spatially (token rows AND
landmark regions, both kept, so later choices need no re-encoding) and put back on the grid: grid step j gets the
mean over every window tubelet covering it.

Output per granularity: float32 arrays on the grid [N, ...]: `rows` [N, H', D] (the mean over each token row:
any number of bands that divides H' is an average of these), `regions` [N, R, D] (soft landmark-region means, see
`region_weights`) and `region_std` [N, R, D] (the spread of the region's tokens around that mean: a local change
inside a region shows up as spread even where the LayerNorm'd mean hardly moves).
Cached per (encoder weights, input config, granularity) under <cache>/<digest>/<gran>/<video>.npz, the layout
and digest of the research prototype (finetune/motion_features.py), so its caches stay valid.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from data.common.atomic import write_text
from data.common.errors import ConfigError
from data.common.npz_cache import read_npz, write_npz
from data.faces import landmarks as lmk
from data.faces import stabilise as st
from data.faces.motion_view import MotionViewConfig, stream_windows, view_stream
from data.flow.regions import canonical_landmarks
from finetune.encoder.load import encoder_digest
from finetune.windows import DEFAULT_GRANULARITIES, Granularity, batches, video_windows

REGION_NAMES = ("brows", "eyes", "nose", "mouth", "rest")


def region_weights(size: int = 160, patch: int = 16) -> np.ndarray:
    """[R, H', W'] soft pooling weights over the token grid, REGION_NAMES order: the fraction of each token cell
    inside the region's landmark box on the canonical face (stabilised crops put every face there); "rest" takes
    what the four boxes leave. Each region's weights sum to 1."""
    points = canonical_landmarks(size)
    boxes = lmk.region_boxes(points, (size, size))
    cells = size // patch
    pix = {
        "brows": [boxes["right_brow"], boxes["left_brow"]],
        "eyes": [boxes["right_eye"], boxes["left_eye"]],
        "nose": [boxes["nose"]],
        "mouth": [boxes["mouth"]],
    }
    masks = {}
    for name, bs in pix.items():
        m = np.zeros((size, size), np.float32)
        for x0, y0, x1, y1 in bs:
            m[max(0, y0):y1, max(0, x0):x1] = 1.0
        masks[name] = m
    # the nose box is small: widen it to the nose bridge + tip (landmarks 27-35)
    nose = points[27:36]
    x0, y0 = np.floor(nose.min(0)).astype(int) - 4
    x1, y1 = np.ceil(nose.max(0)).astype(int) + 4
    masks["nose"][max(0, y0):y1, max(0, x0):x1] = 1.0
    # eyes take priority over brows where the boxes overlap; nose gives way to both
    masks["brows"] = np.clip(masks["brows"] - masks["eyes"], 0, 1)
    masks["nose"] = np.clip(masks["nose"] - masks["eyes"] - masks["brows"] - masks["mouth"], 0, 1)
    used = np.clip(sum(masks.values()), 0, 1)
    masks["rest"] = 1.0 - used
    out = np.stack([masks[n].reshape(cells, patch, cells, patch).mean((1, 3)) for n in REGION_NAMES])
    return (out / np.maximum(out.sum((1, 2), keepdims=True), 1e-6)).astype(np.float32)


def pool_tokens(features: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """[B, T', H', W', D] -> rows [B, T', H', D], regions [B, T', R, D], region_std [B, T', R, D]."""
    rows = features.mean(3)
    regions = torch.einsum("bthwd,rhw->btrd", features, weights)
    second = torch.einsum("bthwd,rhw->btrd", features * features, weights)
    spread = (second - regions * regions).clamp_min(0).sqrt()
    return rows, regions, spread


def grid_windows(num_steps: int, rate_hz: float, gran: Granularity, frames: int):
    """finetune.windows.Window list over the grid (the grid is a video at rate_hz)."""
    return video_windows("grid", num_steps, rate_hz, gran.span_s, gran.hop_s, frames)


def accumulate_to_grid(values: torch.Tensor, windows, num_steps: int, tubelet: int) -> np.ndarray:
    """Window token features [W, T', ...] -> grid [N, ...]: each step the mean of the tubelets covering it."""
    flat = values.reshape(values.shape[0], values.shape[1], -1).numpy().astype(np.float64)
    total = np.zeros((num_steps, flat.shape[-1]))
    count = np.zeros(num_steps)
    for w, v in zip(windows, flat):
        b = w.bounds
        for j in range(v.shape[0]):
            lo, hi = int(b[j * tubelet]), int(b[min((j + 1) * tubelet, len(b) - 1)])
            if hi > lo:
                total[lo:hi] += v[j]
                count[lo:hi] += 1
    # steps no window covers (none by construction) take the nearest covered step
    if (count == 0).any():
        idx = np.flatnonzero(count > 0)
        near = idx[np.clip(np.searchsorted(idx, np.arange(num_steps)), 0, len(idx) - 1)]
        total[count == 0], count[count == 0] = total[near[count == 0]], count[near[count == 0]]
    return (total / count[:, None]).reshape((num_steps,) + tuple(values.shape[2:])).astype(np.float32)


def layer_tokens(encoder, video: torch.Tensor, layer: str) -> torch.Tensor:
    """Time-ordered token features [B, T', H', W', D] of one encoder layer (see MotionViewConfig.layer)."""
    if layer == "final":
        return encoder.forward_all(video)
    tokens = encoder.embed(video)
    b, d = tokens.shape[0], tokens.shape[-1]
    grid = encoder.cfg.token_grid
    if layer == "embed":
        return tokens.view(b, *grid, d)
    if not layer.startswith("block"):
        raise ConfigError(f"unknown layer {layer!r}", field="layer", fix="final, embed or block<i>")
    last = int(layer[5:])
    local = tokens[:, encoder.region_order]
    regions = encoder.region_tokens.to(local.dtype).expand(b, -1, -1)
    for block in encoder.blocks[:last + 1]:
        local, regions = block(local, regions)
    return local.reshape(b, -1, d)[:, encoder.raster_from_region].view(b, *grid, d)


FEATURE_ARRAYS = ("rows", "regions", "region_std")  # pool_tokens' outputs, as encode_video returns and caches them


@torch.no_grad()
def encode_video(encoder, sv: st.StableVideo, view: MotionViewConfig, grans=DEFAULT_GRANULARITIES,
                 batch_size: int = 16) -> dict[str, dict[str, np.ndarray]]:
    """{gran name: {FEATURE_ARRAYS name: array}} on the grid of one stabilised video."""
    encoder.eval()
    cfg = encoder.cfg
    stream = view_stream(sv, view)
    weights = torch.from_numpy(region_weights(cfg.img_size, cfg.patch))
    out = {}
    for g in grans:
        windows = grid_windows(len(stream.frames), sv.rate_hz, g, cfg.frames)
        parts = {name: [] for name in FEATURE_ARRAYS}
        for chunk in batches(windows, batch_size):
            video = torch.from_numpy(stream_windows(stream, chunk, view))
            for name, value in zip(parts, pool_tokens(layer_tokens(encoder, video, view.layer).float(), weights)):
                parts[name].append(value)
        out[g.name] = {name: accumulate_to_grid(torch.cat(v), windows, len(stream.frames), cfg.tubelet)
                       for name, v in parts.items()}
    return out


def cache_root(cache_dir, encoder, view: MotionViewConfig) -> Path:
    h = hashlib.sha1((encoder_digest(encoder) + view.key()).encode()).hexdigest()[:16]
    return Path(cache_dir) / h


def feature_path(root: Path, gran: Granularity, video: str) -> Path:
    return root / f"{gran.name}_s{gran.span_s:g}_h{gran.hop_s:g}" / f"{video}.npz"


def _read_features(path: Path, num_steps: int) -> dict[str, np.ndarray] | None:
    """A cached granularity (stored as float16), or None when absent, unreadable or for another grid length."""
    z = read_npz(path, FEATURE_ARRAYS, lambda z: None if all(len(z[k]) == num_steps for k in FEATURE_ARRAYS)
                 else f"cached for another grid (not {num_steps} steps)")
    return None if z is None else {k: z[k].astype(np.float32) for k in FEATURE_ARRAYS}


def _half(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float16).astype(np.float32) for k, v in arrays.items()}


def load_or_encode(encoder, sv: st.StableVideo, view: MotionViewConfig, cache_dir, grans=DEFAULT_GRANULARITIES,
                   root: Path | None = None) -> dict[str, dict[str, np.ndarray]]:
    """encode_video rounded to float16 (the cache's precision, so a cached and an uncached call agree exactly),
    cached per granularity and video; cache_dir None: nothing is written."""
    if cache_dir is None and root is None:
        return {name: _half(v) for name, v in encode_video(encoder, sv, view, grans).items()}
    root = Path(root) if root is not None else cache_root(cache_dir, encoder, view)
    out = {g.name: _read_features(feature_path(root, g, sv.video), len(sv.crops)) for g in grans}
    todo = [g for g in grans if out[g.name] is None]
    if todo:
        fresh = encode_video(encoder, sv, view, todo)
        for g in todo:
            out[g.name] = _half(fresh[g.name])
            write_npz(feature_path(root, g, sv.video), {k: v.astype(np.float16) for k, v in out[g.name].items()})
        write_text(root / "input.json", view.key())
    return out

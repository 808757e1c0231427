"""Region-balanced tube masks for LGI-Former pretraining (pure numpy geometry, safe in loader workers).

Tokens live on a grid (T', H', W') flattened in raster order (t, h, w). The grid is cut into regions of
(rt, rh, rw) tokens. Every region must keep exactly `visible_per_region` visible tokens: the encoder then
gathers visible tokens with static shapes, with no data-dependent boolean indexing on the GPU.

Modes (True in the returned mask = masked):
- "window": per region, pick visible spatial positions in its (rh x rw) window and repeat them over the
  region's rt time steps (each temporal region draws its own pattern).
- "tube": one spatial pattern per spatial window, repeated over every time step of the clip.
- "random": per region, any `visible_per_region` of its tokens, no repetition over time.
"""
from __future__ import annotations

import numpy as np

from data.common.errors import ConfigError, DataError

MODES = ("window", "tube", "random")


def check_geometry(grid, region, visible_per_region: int, mode: str = "random", source=None) -> None:
    """Raise ConfigError unless `region` tiles `grid` and the visible count fits the mode."""
    grid, region = tuple(int(g) for g in grid), tuple(int(r) for r in region)
    if len(grid) != 3 or len(region) != 3 or min(grid + region) < 1:
        raise ConfigError(f"grid {grid} and region {region} must be three positive sizes (t, h, w)",
                          path=source, field="region")
    for axis, g, r in zip("thw", grid, region):
        if g % r:
            raise ConfigError(f"region size {r} along {axis} does not divide the token grid size {g} "
                              f"(grid {grid}, region {region})", path=source, field="region",
                              fix="choose region sizes that divide the token grid")
    per_region = region[0] * region[1] * region[2]
    if not 1 <= visible_per_region <= per_region:
        raise ConfigError(f"visible_per_region={visible_per_region} must be in 1..{per_region} "
                          f"(tokens per region {region})", path=source, field="visible_per_region")
    if mode not in MODES:
        raise ConfigError(f"unknown mask mode {mode!r}; known: {list(MODES)}", path=source, field="mask_mode")
    if mode in ("window", "tube") and visible_per_region % region[0]:
        raise ConfigError(f"mode {mode!r} repeats a spatial pattern over the region's {region[0]} time steps, "
                          f"so visible_per_region={visible_per_region} must be a multiple of {region[0]}",
                          path=source, field="visible_per_region", fix="use mode 'random' or change the count")


def region_of_token(grid, region) -> np.ndarray:
    """Region id of every token, in raster order: int64 [T'*H'*W']; regions are numbered in raster order too."""
    gt, gh, gw = grid
    rt, rh, rw = region
    t, h, w = np.meshgrid(np.arange(gt) // rt, np.arange(gh) // rh, np.arange(gw) // rw, indexing="ij")
    return ((t * (gh // rh) + h) * (gw // rw) + w).reshape(-1).astype(np.int64)


def region_order(grid, region) -> np.ndarray:
    """Raster indices of all tokens sorted by region, raster order inside a region: int64 [N].

    `x_raster[region_order]` reshaped to [R, tokens_per_region] groups tokens region by region.
    """
    return np.argsort(region_of_token(grid, region), kind="stable").astype(np.int64)


class RegionMaskGenerator:
    """Draw masks with the same number of visible tokens in every region: `gen(rng) -> bool [N]`."""

    def __init__(self, grid=(8, 10, 10), region=(2, 5, 10), visible_per_region: int = 10, mode: str = "window"):
        check_geometry(grid, region, visible_per_region, mode)
        self.grid = tuple(int(g) for g in grid)
        self.region = tuple(int(r) for r in region)
        self.visible_per_region = int(visible_per_region)
        self.mode = mode
        self.num_tokens = int(np.prod(self.grid))
        self.num_regions = self.num_tokens // int(np.prod(self.region))
        self.num_visible = self.num_regions * self.visible_per_region

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        gt, gh, gw = self.grid
        rt, rh, rw = self.region
        nt, nh, nw = gt // rt, gh // rh, gw // rw
        if self.mode == "random":
            visible = self._draw(rng, (nt, nh, nw), rt * rh * rw, self.visible_per_region)
            visible = visible.reshape(nt, nh, nw, rt, rh, rw)
        else:
            # window: each temporal region draws its own pattern; tube: one pattern for the whole clip
            draws = nt if self.mode == "window" else 1
            spatial = self._draw(rng, (draws, nh, nw), rh * rw, self.visible_per_region // rt)
            visible = np.broadcast_to(spatial.reshape(draws, nh, nw, 1, rh, rw), (nt, nh, nw, rt, rh, rw))
        # (nt, nh, nw, rt, rh, rw) -> raster (nt rt, nh rh, nw rw)
        visible = visible.transpose(0, 3, 1, 4, 2, 5).reshape(-1)
        return ~visible

    @staticmethod
    def _draw(rng: np.random.Generator, batch_shape, size: int, keep: int) -> np.ndarray:
        """Bool [*batch_shape, size] with exactly `keep` True per row, uniformly chosen."""
        scores = rng.random((*batch_shape, size))
        ranks = np.argsort(np.argsort(scores, axis=-1), axis=-1)
        return ranks < keep

    def check(self, mask, source=None) -> None:
        """Full invariant check of one mask [N] or a batch [B, N] (debug/validation path)."""
        check_mask(mask, self.grid, self.region, self.visible_per_region, source)


def check_mask(mask, grid, region, visible_per_region: int, source=None) -> None:
    """Raise DataError unless every region of every mask keeps exactly `visible_per_region` visible tokens."""
    mask = np.asarray(mask)
    n = int(np.prod(grid))
    if mask.dtype != np.bool_ or mask.shape[-1] != n or mask.ndim not in (1, 2):
        raise DataError(f"mask must be bool [N] or [B, N] with N={n}, got {mask.dtype} {mask.shape}",
                        path=source, field="mask", fix="build masks with data.clips.masking.RegionMaskGenerator")
    masks = mask.reshape(-1, n)
    regions = region_of_token(grid, region)
    num_regions = int(regions.max()) + 1
    for b, m in enumerate(masks):
        counts = np.bincount(regions[~m], minlength=num_regions)
        bad = np.flatnonzero(counts != visible_per_region)
        if bad.size:
            raise DataError(f"sample {b}: region {int(bad[0])} has {int(counts[bad[0]])} visible tokens, "
                            f"expected {visible_per_region} in every region", path=source, field="mask",
                            fix="mask the same number of tokens in every region (RegionMaskGenerator)")

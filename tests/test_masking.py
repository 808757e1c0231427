import numpy as np
import pytest

from data.clips.masking import MODES, RegionMaskGenerator, check_mask, region_of_token, region_order
from data.common.errors import ConfigError, DataError

SEED_GRID, SEED_REGION = (8, 10, 10), (2, 5, 10)


def _visible(mask, grid=SEED_GRID):
    return (~mask).reshape(grid)


@pytest.mark.parametrize("mode", MODES)
def test_every_region_keeps_the_same_visible_count(mode):
    gen = RegionMaskGenerator(grid=SEED_GRID, region=SEED_REGION, visible_per_region=10, mode=mode)
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = gen(rng)
        assert mask.dtype == np.bool_ and mask.shape == (800,)
        assert int((~mask).sum()) == 80
        # count per region by explicit slicing, independent of region_of_token
        vis = _visible(mask)
        for t in range(0, 8, 2):
            for h in (0, 5):
                assert vis[t:t + 2, h:h + 5, :].sum() == 10
        gen.check(mask)


def test_window_repeats_inside_a_region_and_differs_across_regions():
    gen = RegionMaskGenerator(mode="window")
    vis = _visible(gen(np.random.default_rng(1)))
    for t in range(0, 8, 2):
        assert np.array_equal(vis[t], vis[t + 1])
        assert vis[t, :5].sum() == 5 and vis[t, 5:].sum() == 5
    assert not all(np.array_equal(vis[0], vis[t]) for t in (2, 4, 6))


def test_tube_uses_one_spatial_pattern_for_the_whole_clip():
    vis = _visible(RegionMaskGenerator(mode="tube")(np.random.default_rng(2)))
    assert all(np.array_equal(vis[0], vis[t]) for t in range(8))


def test_random_mode_is_not_tied_over_time():
    vis = _visible(RegionMaskGenerator(mode="random")(np.random.default_rng(3)))
    assert not all(np.array_equal(vis[t], vis[t + 1]) for t in range(0, 8, 2))


def test_masks_are_deterministic_per_seed_and_cover_all_positions():
    gen = RegionMaskGenerator(mode="window")
    a = gen(np.random.default_rng(7))
    assert np.array_equal(a, gen(np.random.default_rng(7)))
    rng = np.random.default_rng(8)
    seen = np.zeros(800, int)
    for _ in range(400):
        seen += ~gen(rng)
    # uniform choice: every token is visible sometimes, about 10% of the time
    assert seen.min() > 10 and abs(seen.mean() / 400 - 0.1) < 1e-9


def test_region_order_groups_tokens_by_region():
    order = region_order(SEED_GRID, SEED_REGION)
    assert sorted(order.tolist()) == list(range(800))
    t, h, w = np.unravel_index(order.reshape(8, 100), SEED_GRID)
    for r in range(8):
        assert len(set((t[r] // 2 * 2 + h[r] // 5).tolist())) == 1  # one region per row
    assert np.array_equal(region_of_token(SEED_GRID, SEED_REGION)[order], np.repeat(np.arange(8), 100))


def test_check_mask_names_the_bad_region():
    mask = RegionMaskGenerator()(np.random.default_rng(0))
    mask[np.flatnonzero(~mask)[0]] = True
    with pytest.raises(DataError, match="region 0 has 9 visible tokens"):
        check_mask(mask, SEED_GRID, SEED_REGION, 10)
    with pytest.raises(DataError, match="mask must be bool"):
        check_mask(mask.astype(np.uint8), SEED_GRID, SEED_REGION, 10)


@pytest.mark.parametrize("kwargs, match", [
    (dict(region=(3, 5, 10)), "along t does not divide"),
    (dict(region=(2, 4, 10)), "along h does not divide"),
    (dict(visible_per_region=101), "must be in 1..100"),
    (dict(visible_per_region=9, mode="window"), "multiple of 2"),
    (dict(mode="blocks"), "unknown mask mode"),
])
def test_bad_geometry_raises_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RegionMaskGenerator(**{"grid": SEED_GRID, "region": SEED_REGION, **kwargs})


def test_odd_visible_count_is_fine_in_random_mode():
    mask = RegionMaskGenerator(visible_per_region=9, mode="random")(np.random.default_rng(0))
    check_mask(mask, SEED_GRID, SEED_REGION, 9)

"""The shard loader: batch layout, frame order, masks, exactly-once epochs over ranks x workers, resampling,
corrupt samples (skipped, counted, budgeted), config errors."""
import json
import shutil
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import ramp_value

from data.clips.augment import IMAGENET_MEAN, IMAGENET_STD, normalise
from data.clips.masking import check_mask
from data.common.config import load_config
from data.common.errors import ConfigError, DataError
from data.shards.format import shard_urls, write_shard
from data.shards.loader import CorruptTally, LoaderConfig, make_dataset, make_loader
from pretrain.model_config import ModelConfig

ALL_KEYS = 12  # clips in the ramp_shards fixture
GEOMETRY = ModelConfig().geometry  # the seed model's: 16 frames of 160 x 160, token grid 8 x 10 x 10


def config(shards, **kw) -> LoaderConfig:
    base = dict(shards=str(shards), batch_size=4, num_workers=0, drop_last=False, shuffle_buffer=8,
                corrupt_min_samples=4, max_corrupt_fraction=0.5)
    return LoaderConfig(**{**base, **kw})


def clip_start(sample_json: bytes) -> int:
    return json.loads(sample_json)["start_frame"]


def test_batch_layout_normalisation_and_masks(ramp_shards):
    cfg = config(ramp_shards, repeats=2)
    batches = list(make_loader(cfg, GEOMETRY))
    assert sum(len(b["key"]) for b in batches) == 2 * ALL_KEYS
    batch = batches[0]
    assert batch["video"].shape == (4, 3, 16, 160, 160) and batch["video"].dtype == torch.float32
    assert batch["mask"].shape == (4, 800) and batch["mask"].dtype == torch.bool
    assert batch["corrupt"] == 0 and batch["worker"] == 0
    check_mask(batch["mask"].numpy(), (8, 10, 10), (2, 5, 10), 10)
    # repeated sampling: each decoded clip comes out twice, as neighbours with their own masks
    keys = [k for b in batches for k in b["key"]]
    assert keys[0::2] == keys[1::2] and len(set(keys)) == ALL_KEYS
    assert not torch.equal(batch["mask"][0], batch["mask"][1])
    # a grey frame normalises to (g / 255 - mean) / std in every channel
    grey = batch["video"][0, :, 0, 80, 80]
    level = grey * torch.tensor(IMAGENET_STD) + torch.tensor(IMAGENET_MEAN)
    assert torch.allclose(level, level[0].expand(3), atol=1e-5)


def test_sampled_frames_are_in_order_with_stride(ramp_shards):
    cfg = config(ramp_shards, output="uint8", frame_stride=4)
    starts = {}
    for url in shard_urls(ramp_shards):
        with tarfile.open(url) as tar:
            for m in tar:
                if m.name.endswith(".json"):
                    starts[m.name.split(".")[0]] = clip_start(tar.extractfile(m).read())
    for batch in make_loader(cfg, GEOMETRY):
        assert batch["video"].dtype == torch.uint8
        for video, key in zip(batch["video"], batch["key"]):
            grey = video.float().mean(dim=(0, 2, 3)).numpy()  # [T]
            jitter = round(float(np.mean(grey - ramp_value(starts[key] + 4 * np.arange(16)))) / 2)
            assert 0 <= jitter <= 3  # start drawn in [0, 64 - 61]
            np.testing.assert_allclose(grey, ramp_value(starts[key] + jitter + 4 * np.arange(16)), atol=2.5)
        as_float = normalise(batch["video"])
        assert as_float.dtype == torch.float32 and as_float.shape == batch["video"].shape
        assert as_float.is_contiguous()


def test_partial_and_full_decode_give_the_same_frames(ramp_shards):
    out = {}
    for partial in (True, False):
        cfg = config(ramp_shards, output="uint8", partial_decode=partial, shuffle_shards=False, shuffle_buffer=0)
        out[partial] = [b["video"] for b in make_loader(cfg, GEOMETRY)]
    for a, b in zip(out[True], out[False]):
        assert torch.equal(a, b)


def test_every_sample_once_per_epoch_across_two_ranks_and_two_workers(ramp_shards):
    cfg = config(ramp_shards, num_workers=2, batch_size=2)
    loaders = [make_loader(cfg, GEOMETRY, rank=rank, world_size=2) for rank in range(2)]
    orders = []
    for epoch in range(2):
        seen = Counter()
        for loader in loaders:
            for batch in loader:
                seen.update(batch["key"])
        assert len(seen) == ALL_KEYS and set(seen.values()) == {1}, f"epoch {epoch}: {seen}"
        orders.append(list(seen))
    assert orders[0] != orders[1]  # shards and samples are reshuffled between epochs


def test_stream_depends_only_on_seed_epoch_rank_worker(ramp_shards):
    """A run resumed in epoch 1 (a loader built with epoch=1) replays exactly what epoch 1 delivered."""
    cfg = config(ramp_shards, num_workers=2, batch_size=2, repeats=2, output="uint8")

    def epoch_of(loader):
        return [(b["key"], b["mask"], b["video"]) for b in loader]

    first = make_loader(cfg, GEOMETRY, rank=0, world_size=1, epoch=0)
    epochs = [epoch_of(first), epoch_of(first)]
    resumed = epoch_of(make_loader(cfg, GEOMETRY, rank=0, world_size=1, epoch=1))
    assert [k for k, _, _ in epochs[0]] != [k for k, _, _ in epochs[1]]
    for (k1, m1, v1), (k2, m2, v2) in zip(epochs[1], resumed, strict=True):
        assert k1 == k2 and torch.equal(m1, m2) and torch.equal(v1, v2)


def test_multi_scale_crop_boxes_follow_videomae():
    from data.clips.augment import crop_box, multi_scale_crop

    rng = np.random.default_rng(0)
    sides = [144, 126, 108, 95]  # int(144 * scale): fractions of the short side
    seen = set()
    for _ in range(300):
        x0, y0, w, h = crop_box(144, 176, 160, rng)
        assert abs(sides.index(w) - sides.index(h)) <= 1  # aspect distorted by at most one scale step
        assert 0 <= x0 and x0 + w <= 176 and 0 <= y0 and y0 + h <= 144
        seen.add((w, h))
    assert len(seen) == 10  # every allowed (w, h) pair occurs
    assert crop_box(160, 160, 160, rng)[2] in (160, 140, 120, 105)  # 0.875 * 160 = 140 etc.; 1.0 stays 160
    clip = np.arange(2 * 144 * 176 * 3, dtype=np.uint32).reshape(2, 144, 176, 3).astype(np.uint8)
    assert multi_scale_crop(clip, 160, rng).shape == (2, 160, 160, 3)


def test_resampled_mode_gives_fixed_length_epochs(ramp_shards):
    cfg = config(ramp_shards, resampled=True, epoch_samples=20, batch_size=2, shuffle_buffer=0, drop_last=True)
    loader = make_loader(cfg, GEOMETRY)
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == 10 and all(len(b["key"]) == 2 for b in batches)


@pytest.fixture
def broken_shards(ramp_shards, tmp_path):
    """The ramp shards plus a shard truncated inside its second clip's mp4 and one with undecodable mp4 bytes."""
    urls = []
    for url in shard_urls(ramp_shards):
        urls.append(str(shutil.copy(url, tmp_path)))
    with tarfile.open(urls[1]) as tar:
        members = tar.getmembers()
    second_mp4 = [m for m in members if m.name.endswith(".mp4")][1]
    with open(urls[1], "r+b") as f:
        f.truncate(second_mp4.offset_data + second_mp4.size // 2)
    meta = json.dumps({"num_frames": 64}).encode()
    write_shard(tmp_path / "shard-000099.tar", [{"__key__": "garbage", "mp4": b"\x00\x00\x00\x18ftypmp42" * 50,
                                                 "json": meta}])
    return urls + [str(tmp_path / "shard-000099.tar")]


def test_corrupt_samples_are_skipped_and_counted(broken_shards, caplog):
    cfg = config("broken-set", num_workers=2, batch_size=1)
    tally = CorruptTally()
    keys = []
    for batch in make_loader(cfg, GEOMETRY, urls=broken_shards):
        keys += batch["key"]
        tally.update(batch)
    # 12 clips, less the truncated one, plus nothing from the garbage shard: the epoch went on past both
    assert len(keys) == ALL_KEYS - 1 and "garbage" not in keys
    assert tally.total == 2  # one truncated shard tail + one undecodable sample
    with caplog.at_level("WARNING", logger="data.shards.loader"):
        list(make_dataset(config("broken-set"), GEOMETRY, urls=broken_shards, rank=0, world_size=1))
    assert "garbage" in caplog.text and "shard-000001.tar" in caplog.text


def test_corrupt_budget_stops_with_a_clear_error(broken_shards, tmp_path):
    cfg = config("broken-set", max_corrupt_fraction=0.05, corrupt_min_samples=4, shuffle_shards=False)
    with pytest.raises(DataError, match=f"{tmp_path}.*max_corrupt_fraction"):  # names the shard set
        list(make_loader(cfg, GEOMETRY, urls=broken_shards))
    cfg = config("broken-set", max_corrupt_fraction=0.05, corrupt_min_samples=4, num_workers=1)
    with pytest.raises(DataError, match="max_corrupt_fraction"):  # raised in a worker, re-raised here
        list(make_loader(cfg, GEOMETRY, urls=broken_shards))


def test_bad_loader_config_rejected(tmp_path):
    path = tmp_path / "loader.yaml"
    path.write_text("batch_size: 8\nnum_frame: 16\n")
    with pytest.raises(ConfigError, match="num_frame"):
        load_config(path, LoaderConfig)
    path.write_text("batch_size: 8\n")
    for override, words in [("scales=[1.2]", "scales"), ("resampled=true", "epoch_samples"),
                            ("max_corrupt_fraction=2", "max_corrupt_fraction"), ("batch_size=0", "batch_size"),
                            ("size=160", "unknown key")]:  # clip geometry is the model's, not the loader's
        with pytest.raises(ConfigError, match=words) as err:
            load_config(path, LoaderConfig, [override])
        assert err.value.path in (str(path), f"override {override!r}")  # the override, when it names the field
    with pytest.raises(DataError, match="no manifest"):
        make_loader(LoaderConfig(shards=str(tmp_path)), GEOMETRY)


def test_frame_strides_draw_one_stride_per_clip(ramp_shards):
    """frame_strides: every clip is sampled at one of the listed strides (both show up), frames in order."""
    cfg = config(ramp_shards, output="uint8", frame_strides=[1, 3], repeats=1)
    seen = Counter()
    for batch in make_loader(cfg, GEOMETRY):
        for video in batch["video"]:
            grey = video.float().mean(dim=(0, 2, 3)).numpy()  # [T]
            frames = (grey - grey[0]) / (ramp_value(1) - ramp_value(0))  # frames since the first, +- coding error
            stride = int(round(float(frames[-1]) / (len(grey) - 1)))
            assert stride in (1, 3)
            np.testing.assert_allclose(frames, stride * np.arange(len(grey)), atol=1.5)
            seen[stride] += 1
    assert set(seen) == {1, 3}, seen

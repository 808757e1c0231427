"""Packing clips into WebDataset shards: contents, frame order, manifest, resume, immutability, bad config."""
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ramp_value

from data.common.cli import run_main
from data.common.config import load_config
from data.common.errors import ConfigError, DataError
from data.common.video_io import read_frames, video_info
from data.shards.cli import main as pack_main
from data.shards.format import done_path, read_manifest, sha256_file, shard_urls, verify_shards
from data.shards.pack import PackConfig, pack


def read_samples(shard_dir) -> dict[str, dict]:
    """Every sample of a shard set, read with plain tarfile (independent of the loader)."""
    samples = {}
    for url in shard_urls(shard_dir):
        with tarfile.open(url) as tar:
            for member in tar:
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def test_pack_folder_clips_manifest_and_frame_order(ramp_shards, ramp_videos):
    manifest = read_manifest(ramp_shards)
    assert manifest["complete"] and manifest["num_shards"] == 6 and manifest["num_clips"] == 12
    assert sorted(manifest["shards"]) == [f"shard-{i:06d}.tar" for i in range(6)]
    assert [s["subject"] for s in manifest["sources"]] == ["s01", "s01", "s02", "s02"]
    assert verify_shards(ramp_shards) == []
    for name, record in manifest["shards"].items():
        assert record["sha256"] == sha256_file(ramp_shards / name) and record["clips"] == 2

    samples = read_samples(ramp_shards)
    assert len(samples) == 12
    for key, sample in samples.items():
        meta = json.loads(sample["json"])
        assert meta["key"] == key and meta["num_frames"] == 64 and meta["size"] == 80
        assert meta["fps"] == pytest.approx(30.0) and meta["start_frame"] in (0, 4, 8)
        assert Path(meta["source"]).parent.name == meta["subject"]
        assert meta["face_box"] == [16, 0, 112, 96]  # the centre square of a 128x96 frame
        frames = read_frames(sample["mp4"])
        assert frames.shape == (64, 80, 80, 3)
        grey = frames.reshape(64, -1).mean(1)
        np.testing.assert_allclose(grey, ramp_value(meta["start_frame"] + np.arange(64)), atol=2.5)


def test_pack_in_process_pool_with_pre_strided_clips(ramp_videos, tmp_path):
    cfg = PackConfig(source="folder", source_path=str(ramp_videos), out_dir=str(tmp_path / "s"),
                     clip_frames=16, frame_step=4, clip_stride=8, size=64, clips_per_shard=3, workers=2)
    pack(cfg, progress=False)
    samples = read_samples(tmp_path / "s")
    assert len(samples) == 4 * 2  # starts 0 and 8 fit a 61-frame span in 72 frames
    for sample in samples.values():
        meta = json.loads(sample["json"])
        assert meta["fps"] == pytest.approx(7.5) and meta["frame_step"] == 4
        grey = read_frames(sample["mp4"]).reshape(16, -1).mean(1)
        np.testing.assert_allclose(grey, ramp_value(meta["start_frame"] + 4 * np.arange(16)), atol=2.5)


def test_pack_real_carphone_video_centre_and_face(tmp_path):
    from data.common.assets import carphone_video

    listing = tmp_path / "videos.txt"
    listing.write_text(f"# the real face video\n{carphone_video()}\n")
    for crop in ("center", "face"):
        out = pack(PackConfig(source="list", source_path=str(listing), out_dir=str(tmp_path / crop), crop=crop,
                              clip_frames=32, clip_stride=40, size=96, workers=1), progress=False)
        samples = read_samples(out)
        assert len(samples) == 3  # starts 0, 40, 80 in 120 frames
        for sample in samples.values():
            meta = json.loads(sample["json"])
            info = video_info(sample["mp4"])
            assert (info["num_frames"], info["height"], info["width"]) == (32, 96, 96)
            assert meta["fps"] == pytest.approx(29.97, abs=0.01) and meta["crop"] == crop
            x0, y0, x1, y1 = meta["face_box"]
            assert 0 <= x0 < x1 <= 176 and 0 <= y0 < y1 <= 144
            if crop == "face":
                assert meta["landmarks"]["face_fraction"] > 0.9
                assert np.asarray(meta["landmarks"]["median_aligned"]).shape == (68, 2)


def test_pack_synthetic_config_packs_the_generators_video_table(tmp_path):
    """`python -m data synth` makes the videos; configs/data/pack_synthetic.yaml packs its video table."""
    from data.synthetic.cli import main as synth_main

    synth = ["--out", str(tmp_path / "synth"), "--no-progress", "seed=3", "subjects=1", "videos_per_subject=1",
             "duration_s=6", "identity.sources=[astronaut]", "talking.segments_per_video=[0,0]",
             "events.macro_per_video=[1,1]", "events.micro_per_video=[1,1]", "events.macro_duration_s=[0.6,1.0]"]
    assert run_main(synth_main, synth) == 0
    cfg = load_config(Path("configs/data/pack_synthetic.yaml"), PackConfig,
                      [f"source_path={tmp_path / 'synth' / 'videos.csv'}", f"out_dir={tmp_path / 'shards'}",
                       "workers=1"])
    out = pack(cfg, progress=False)
    assert pack(cfg, progress=False) == out  # the second run reuses the shards
    with pytest.raises(ConfigError, match="must be one of"):  # generating is `data synth`'s job, not pack's
        load_config(Path("configs/data/pack_synthetic.yaml"), PackConfig, ["source=synthetic"])
    samples = read_samples(out)
    assert len(samples) == 4  # 180 frames: 64-frame clips start at 0, 32, 64, 96
    meta = json.loads(next(iter(samples.values()))["json"])
    assert meta["subject"] == "s01" and meta["num_frames"] == 64
    assert read_frames(next(iter(samples.values()))["mp4"]).shape == (64, 160, 160, 3)


def test_resume_rebuilds_only_unfinished_shards_identically(ramp_videos, tmp_path):
    cfg = PackConfig(source="folder", source_path=str(ramp_videos), out_dir=str(tmp_path / "s"),
                     clip_frames=32, clip_stride=20, size=64, clips_per_shard=2, workers=1)
    out = pack(cfg, progress=False)
    first = read_manifest(out)["shards"]
    before = {name: (out / name).stat().st_mtime_ns for name in first}
    # an interrupted run: shard 1 never finished; shard 2's tar was renamed but its done record never written
    (out / "shard-000001.tar").unlink()
    done_path(out, 1).unlink()
    done_path(out, 2).unlink()
    pack(cfg, progress=False)
    after = read_manifest(out)
    assert after["complete"] and sorted(after["shards"]) == sorted(before)
    for name, mtime in before.items():
        rebuilt = name in ("shard-000001.tar", "shard-000002.tar")
        assert ((out / name).stat().st_mtime_ns != mtime) == rebuilt, name
    assert verify_shards(out) == []
    assert {n: r["sha256"] for n, r in after["shards"].items()} == {n: r["sha256"] for n, r in first.items()}
    assert not list(out.glob(".*"))  # no temp files left behind


def test_shards_are_immutable_across_configs(ramp_shards):
    manifest = read_manifest(ramp_shards)
    cfg = PackConfig(**{**manifest["config"], "crf": 30})
    with pytest.raises(ConfigError, match="another config"):
        pack(cfg, progress=False)


def test_bad_pack_config_rejected(tmp_path, ramp_videos):
    path = tmp_path / "pack.yaml"
    path.write_text("source: folder\nsource_path: x\nclip_frame: 64\n")
    with pytest.raises(ConfigError, match="clip_frame"):
        load_config(path, PackConfig)
    path.write_text("source: folder\nsource_path: x\n")
    for override, field in [("size=81", "size"), ("clip_frames=0", "clip_frames"), ("crf=60", "crf")]:
        with pytest.raises(ConfigError) as err:
            load_config(path, PackConfig, [override])
        assert err.value.field == field and err.value.path == f"override {override!r}"  # checked on load
    with pytest.raises(ConfigError, match="must be one of"):
        load_config(path, PackConfig, ["crop=eyes"])
    with pytest.raises(ConfigError, match="does not exist"):
        pack(load_config(path, PackConfig, [f"out_dir={tmp_path / 'o'}"]), progress=False)
    with pytest.raises(DataError, match="long enough"):
        pack(PackConfig(source="folder", source_path=str(ramp_videos), out_dir=str(tmp_path / "o2"),
                        clip_frames=100, workers=1), progress=False)


def test_pack_cli_one_line_error_and_success(tmp_path, ramp_videos, capsys):
    cfg = tmp_path / "pack.yaml"
    cfg.write_text(f"source: folder\nsource_path: {ramp_videos}\nout_dir: {tmp_path / 'out'}\n"
                   "clip_frames: 16\nframe_step: 4\nclip_stride: 64\nsize: 64\nworkers: 1\n")
    assert run_main(pack_main, ["--config", str(cfg), "--no-progress", "workers=0"]) == 2
    assert "workers" in capsys.readouterr().err
    assert run_main(pack_main, ["--config", str(cfg), "--no-progress"]) == 0
    assert "4 clips in 1 shards" in capsys.readouterr().out

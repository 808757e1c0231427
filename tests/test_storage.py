"""Shards and checkpoints in object storage, against a real S3 API server on 127.0.0.1 (moto's standalone server,
started and stopped by this module: benchmarks/local_s3.py): pack to s3://, read from it as from local disk,
corrupt and missing objects, relative paths under `ray job submit`, and pretraining on 2 Ray workers that read
their shards from S3, checkpoint into it, lose a worker and resume from it."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from test_pretrain import SYNTH_YAML, TINY, tensorboard_losses, tiny_config
from test_reliability import Killer

from benchmarks.local_s3 import LocalS3
from data.common.errors import ConfigError, DataError
from data.common.storage import RAY_JOB_ENV, read_bytes, upload_folder, write_bytes
from data.shards.format import done_path, read_manifest, shard_name, shard_urls, verify_shards, write_manifest
from data.shards.loader import CorruptTally, LoaderConfig, make_dataset, make_loader
from data.shards.pack import PackConfig, pack
from pretrain.checkpoint_commit import problems
from pretrain.config import load_pretrain_config
from pretrain.model_config import ModelConfig
from pretrain.trainer import check_inputs

REPO = Path(__file__).resolve().parents[1]
RAMP_CLIPS = 12  # clips in conftest's ramp_shards

GEOMETRY = ModelConfig().geometry  # the base model's clips, as in tests/test_loader.py


@pytest.fixture(scope="module")
def s3():
    with LocalS3("spotmae-test") as server:
        yield server


def same_pack(shard_dir, out_dir: str) -> PackConfig:
    """The config a shard set was packed with, writing elsewhere."""
    return PackConfig(**{**read_manifest(shard_dir)["config"], "out_dir": out_dir})


@pytest.fixture(scope="module")
def s3_ramp(s3, ramp_shards):
    """conftest's ramp shard set packed again, with the same config, straight into S3."""
    return pack(same_pack(ramp_shards, s3.url("ramp")), progress=False)


def copy_to_s3(local_dir: Path, url: str) -> str:
    upload_folder(local_dir, url)
    return url


# ---- pack --------------------------------------------------------------------------------------------------

def test_pack_to_s3_writes_the_local_bytes_and_resumes(s3, ramp_shards, s3_ramp):
    remote, local = read_manifest(s3_ramp), read_manifest(ramp_shards)
    assert remote["complete"] and remote["num_clips"] == RAMP_CLIPS
    assert remote["shards"] == local["shards"]  # same sha256 per shard: the same bytes, written whole
    assert verify_shards(s3_ramp) == []  # every object re-read from S3 and hashed
    fs = s3.filesystem()
    names = sorted(p.split("/ramp/", 1)[1] for p in fs.find(s3_ramp))
    assert names == sorted(["manifest.json", *local["shards"],
                            *(f"done/{n.replace('.tar', '.json')}" for n in local["shards"])])  # no temp objects

    # an interrupted run: shard 1 never uploaded; shard 2 uploaded but its done record never written
    out = s3.url("resume")
    cfg = same_pack(ramp_shards, out)
    pack(cfg, progress=False)
    fs.rm(f"{out}/{shard_name(1)}")
    fs.rm(str(done_path(out, 1)))
    fs.rm(str(done_path(out, 2)))
    before = {n: fs.info(f"{out}/{n}")["LastModified"] for n in local["shards"] if n != shard_name(1)}
    time.sleep(1.1)  # S3 timestamps have whole seconds
    pack(cfg, progress=False)
    fs.invalidate_cache()
    rebuilt = sorted(n for n in local["shards"] if fs.info(f"{out}/{n}")["LastModified"] != before.get(n))
    assert rebuilt == [shard_name(1), shard_name(2)]
    assert read_manifest(out)["complete"] and read_manifest(out)["shards"] == local["shards"]


def test_pack_with_two_workers_into_a_fresh_prefix_finishes_in_one_run(s3, ramp_shards):
    """Pool workers upload the shards and their done records; the parent builds the manifest from the records
    the workers return, never from a listing of the prefix it may have cached before they wrote (issue 30:
    the first pack into an empty prefix ended in a TypeError, the same command run again completed)."""
    out = s3.url("fresh_pool")
    cfg = dataclasses.replace(same_pack(ramp_shards, out), workers=2)
    pack(cfg, progress=False)
    remote, local = read_manifest(out), read_manifest(ramp_shards)
    assert remote["complete"] and remote["num_clips"] == RAMP_CLIPS
    assert remote["shards"] == local["shards"]  # the same bytes as the in-process pack
    assert verify_shards(out) == []


# ---- loading -----------------------------------------------------------------------------------------------

def test_loader_streams_s3_exactly_as_local_disk(s3_ramp, ramp_shards):
    """2 ranks x 2 workers, 2 views per decode, 2 epochs, then a loader resumed in epoch 1: every batch from S3
    equals the batch from local disk (the split, order, crops and masks depend only on seed/epoch/rank/worker)."""
    def batches(shards, rank, epoch=0, epochs=1):
        cfg = LoaderConfig(shards=str(shards), batch_size=2, num_workers=2, repeats=2, output="uint8",
                           drop_last=False, shuffle_buffer=8)
        loader = make_loader(cfg, GEOMETRY, rank=rank, world_size=2, epoch=epoch)
        return [(b["key"], b["mask"], b["video"]) for _ in range(epochs) for b in loader]

    for rank in range(2):
        local, remote = batches(ramp_shards, rank, epochs=2), batches(s3_ramp, rank, epochs=2)
        resumed = batches(s3_ramp, rank, epoch=1)
        assert len(local) == len(remote) > 0 and len(resumed) < len(remote)
        for (k1, m1, v1), (k2, m2, v2) in zip(local, remote, strict=True):
            assert k1 == k2 and torch.equal(m1, m2) and torch.equal(v1, v2)
        for (k1, m1, v1), (k2, m2, v2) in zip(remote[-len(resumed):], resumed, strict=True):
            assert k1 == k2 and torch.equal(m1, m2) and torch.equal(v1, v2)
    keys = [k for rank in range(2) for b in batches(s3_ramp, rank) for k in b[0]]
    assert len(keys) == 2 * RAMP_CLIPS and len(set(keys)) == RAMP_CLIPS  # each clip once per epoch, 2 views


def broken_copy(ramp_shards: Path, tmp_path: Path) -> Path:
    """A local copy of the ramp set with shard 1 truncated inside its second clip and a shard of undecodable
    mp4 bytes added, both recorded in the manifest (what reaches the loader is corrupt, not missing)."""
    import tarfile

    from data.shards.format import write_shard

    out = tmp_path / "broken"
    shutil.copytree(ramp_shards, out)
    manifest = read_manifest(out)
    with tarfile.open(out / shard_name(1)) as tar:
        second_mp4 = [m for m in tar.getmembers() if m.name.endswith(".mp4")][1]
    with open(out / shard_name(1), "r+b") as f:
        f.truncate(second_mp4.offset_data + second_mp4.size // 2)
    manifest["shards"][shard_name(1)]["bytes"] = (out / shard_name(1)).stat().st_size
    garbage = {"__key__": "garbage", "mp4": b"\x00\x00\x00\x18ftypmp42" * 50, "json": b'{"num_frames": 64}'}
    manifest["shards"][shard_name(99)] = write_shard(out / shard_name(99), [garbage])
    write_manifest(out, manifest)
    return out


def test_corrupt_object_is_skipped_and_counted(s3, ramp_shards, tmp_path):
    url = copy_to_s3(broken_copy(ramp_shards, tmp_path), s3.url("broken"))
    cfg = LoaderConfig(shards=url, batch_size=1, num_workers=2, drop_last=False, max_corrupt_fraction=0.5,
                       corrupt_min_samples=4)
    tally, keys = CorruptTally(), []
    for batch in make_loader(cfg, GEOMETRY):
        keys += batch["key"]
        tally.update(batch)
    assert tally.total == 2  # the truncated shard's tail + the undecodable sample
    assert len(keys) == RAMP_CLIPS - 1 and "garbage" not in keys


def test_missing_object_is_a_clear_error(s3, ramp_shards):
    url = copy_to_s3(ramp_shards, s3.url("missing"))
    urls = shard_urls(url)
    s3.filesystem().rm(f"{url}/{shard_name(3)}")
    missing = f"{url}/{shard_name(3)}"
    with pytest.raises(DataError, match=re.escape(f"{missing}: shard listed in the manifest is missing")):
        shard_urls(url)
    # gone after the run started: the worker that reaches it stops with the same error, not a corrupt count
    cfg = LoaderConfig(shards=url, batch_size=1, num_workers=1, shuffle_shards=False, drop_last=False)
    with pytest.raises(DataError, match=re.escape(f"{missing}: shard listed in the manifest is missing")):
        list(make_loader(cfg, GEOMETRY, urls=urls, rank=0, world_size=1))
    # the CLI checks before any worker starts, and prints one line
    proc = subprocess.run([sys.executable, "-m", "pretrain", "--config", str(TINY), f"data.shards={url}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == f"error: {missing}: shard listed in the manifest is missing " \
                                                   "(restore the file or re-pack into a new folder)"
    with pytest.raises(DataError, match=re.escape(f"{s3.url('nothing')}: no manifest.json")):
        make_dataset(LoaderConfig(shards=s3.url("nothing")), GEOMETRY, rank=0, world_size=1)


# ---- relative paths under ray job submit (the real `ray job submit` case is in test_pretrain) -------------

def test_relative_paths_are_refused_in_a_ray_job_and_made_absolute_elsewhere(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = load_pretrain_config(TINY, ["data.shards=shards", "checkpoint.storage_path=s3://bucket/runs"])
    assert cfg.data.shards == str(tmp_path / "shards") and cfg.checkpoint.storage_path == "s3://bucket/runs"
    monkeypatch.setenv(RAY_JOB_ENV, "{}")
    for override, field in [("data.shards=shards", "data.shards"), ("debug.status_dir=status", "debug.status_dir"),
                            ("checkpoint.storage_path=runs", "checkpoint.storage_path")]:
        absolute = ["data.shards=/data/shards", "checkpoint.storage_path=/shared/runs"]
        with pytest.raises(ConfigError, match="absolute path .* or a URL such as s3://") as err:
            load_pretrain_config(TINY, absolute + [override])
        assert err.value.field == field and "temporary copy of the working directory" in str(err.value)
    cfg = load_pretrain_config(TINY, ["data.shards=s3://bucket/shards", "checkpoint.storage_path=/shared/runs"])
    assert cfg.data.shards == "s3://bucket/shards" and cfg.checkpoint.storage_path == "/shared/runs"


# ---- pretraining from S3 -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3_ray(s3):
    """A local Ray instance started while the S3 variables are set, so its workers inherit them."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir)
    yield Path(temp_dir)
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def s3_synthetic_shards(s3, tmp_path_factory):
    """test_pretrain's tiny synthetic set (20 clips in 10 shards), packed into S3."""
    from data.synthetic.config import load_synthetic_config
    from data.synthetic.generate import generate

    root = tmp_path_factory.mktemp("s3_synthetic")
    (root / "synth.yaml").write_text(SYNTH_YAML)
    videos = generate(load_synthetic_config(root / "synth.yaml"), root / "videos", progress=False)
    cfg = PackConfig(source="list", source_path=str(Path(videos) / "videos.csv"), out_dir=s3.url("synthetic"),
                     clip_frames=32, clip_stride=16, clips_per_shard=2, workers=1)
    return pack(cfg, progress=False)


def download(s3, url: str, to: Path) -> Path:
    s3.filesystem().get(url.rstrip("/") + "/", str(to), recursive=True)
    return to


@pytest.mark.slow
def test_pretrain_reads_s3_checkpoints_into_it_and_resumes_after_a_kill(s3, s3_ray, s3_synthetic_shards, tmp_path,
                                                                        capfd):
    """4 steps on 2 Ray workers; rank 1 is killed after step 3, Ray restarts the workers and they resume
    from the step-2 checkpoint that lives in S3."""
    from pretrain.trainer import fit

    storage = s3.url("runs")
    status = tmp_path / "status"
    cfg = tiny_config(s3_synthetic_shards, storage, "s3run", "schedule.total_steps=4", "checkpoint.every_steps=2",
                      "checkpoint.max_failures=1", f"debug.status_dir={status}")
    assert cfg.data.shards == s3_synthetic_shards and cfg.checkpoint.storage_path == storage
    check_inputs(cfg)
    killer = Killer(status, at=3)
    killer.start()
    try:
        result = fit(cfg)
    finally:
        killer.done.set()
    print(f"\nkilled rank 1 after step {killer.kill_step}; restarted from step {killer.restart_step}; "
          f"metrics {result.metrics}")
    assert killer.killed_pid is not None and killer.restart_step == 2
    assert result.metrics["step"] == 4 and result.metrics["start_step"] == 2 and result.metrics["corrupt"] == 0
    assert result.checkpoint.path.endswith("s3run/checkpoint_step_00000004")  # Ray's path inside the bucket

    run = download(s3, f"{storage}/s3run", tmp_path / "run")
    saved = sorted(p.name for p in run.glob("checkpoint_step_*"))
    assert saved == ["checkpoint_step_00000002", "checkpoint_step_00000004"]
    assert all(problems(run / name) == [] for name in saved)  # every rank's shard and commit marker
    losses = tensorboard_losses(run)  # both attempts' event files, uploaded by rank 0
    assert sorted(losses) == [1, 2, 3, 4] and all(0.5 < v < 2.0 for v in losses.values())

    # the credentials never leave the environment: not in any object, nor in Ray's logs or the output
    fs = s3.filesystem()
    secret = s3.secret.encode()
    assert not [p for p in fs.find(s3.url()) if secret in fs.cat_file(p)]
    logs = [p for p in s3_ray.rglob("*") if p.is_file() and p.suffix in (".log", ".out", ".err", ".json")]
    assert logs and not [p for p in logs if secret in p.read_bytes()]
    out, err = capfd.readouterr()
    assert s3.secret not in out + err


def test_storage_writes_whole_objects_and_reads_them_back(s3):
    url = s3.url("misc", "record.json")
    write_bytes(url, json.dumps({"a": 1}).encode())
    assert json.loads(read_bytes(url)) == {"a": 1}
    with pytest.raises(FileNotFoundError):
        read_bytes(s3.url("misc", "absent.json"))

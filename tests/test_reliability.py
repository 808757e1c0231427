"""Reliability of pretraining (RELIABILITY.md): a worker killed mid-run, half-written checkpoints, corrupt
shards, NaN/inf steps, and loading that never unpickles user files.

The Ray runs use the tiny LGI config on 2 CPU workers (DeepSpeed ZeRO-2, gloo), as tests/test_pretrain.py.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_pretrain import local_ray, shards, tensorboard_losses, tiny_config  # noqa: F401 (fixtures)

from data.common.errors import DataError, SpotMAEError
from data.common.video_io import encode_mp4
from data.shards.format import read_manifest, shard_name, write_manifest, write_shard
from data.shards.loader import CorruptTally, LoaderConfig, make_loader
from pretrain.checkpoint_commit import candidates, marker_name, problems
from pretrain.model_config import named_config

REPO = Path(__file__).resolve().parents[1]
GEOMETRY = named_config("lgi_tiny").geometry  # the clips configs/pretrain/lgi_tiny.yaml trains on


def checkpoints(run_dir) -> dict[int, Path]:
    return {int(p.name.rsplit("_", 1)[1]): p for p in Path(run_dir).glob("checkpoint_step_*")}


def scalars(run_dir, name: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(run_dir) / "tensorboard"))
    events.Reload()
    return {e.step: e.value for e in events.Scalars(f"pretrain/{name}")}


# ---- worker loss ---------------------------------------------------------------------------------------

class Killer(threading.Thread):
    """Watches rank 1's status file; SIGKILLs that worker once it has finished step `at`, then waits for the
    restarted worker to report the step it resumed from."""

    def __init__(self, status_dir: Path, at: int):
        super().__init__(daemon=True)
        self.file, self.at = status_dir / "rank_1.json", at
        self.killed_pid = self.kill_step = self.restart_step = None
        self.done = threading.Event()

    def read(self):
        try:
            return json.loads(self.file.read_text())
        except (OSError, ValueError):
            return None

    def run(self):
        while not self.done.is_set():
            status = self.read()
            if status and self.killed_pid is None and status["step"] >= self.at:
                self.killed_pid, self.kill_step = status["pid"], status["step"]
                os.kill(status["pid"], signal.SIGKILL)
            elif status and self.killed_pid is not None and status["pid"] != self.killed_pid:
                self.restart_step = status["start_step"]
                return
            time.sleep(0.02)


@pytest.mark.slow
def test_killed_worker_restarts_from_latest_checkpoint(local_ray, shards, tmp_path):
    from pretrain.trainer import fit

    status = tmp_path / "status"
    cfg = tiny_config(shards, tmp_path, "kill", "checkpoint.every_steps=3", "checkpoint.num_to_keep=3",
                      "checkpoint.max_failures=1", f"debug.status_dir={status}")
    killer = Killer(status, at=4)
    killer.start()
    try:
        result = fit(cfg)
    finally:
        killer.done.set()
    assert killer.killed_pid is not None, "the worker was never killed"
    lost = killer.kill_step - killer.restart_step
    print(f"\nkilled rank 1 (pid {killer.killed_pid}) after step {killer.kill_step}; restarted from step "
          f"{killer.restart_step}: {lost} step(s) recomputed, finished at step {result.metrics['step']}")
    assert killer.restart_step == 3 and 1 <= lost <= 2
    assert result.metrics["step"] == 8 and result.metrics["start_step"] == 3
    run_dir = tmp_path / "kill"
    assert sorted(tensorboard_losses(run_dir)) == list(range(1, 9))
    saved = checkpoints(run_dir)
    assert sorted(saved) == [3, 6, 8]
    assert all(problems(p) == [] for p in saved.values())  # nothing half-written, killed or not

    # a half-written newest checkpoint (one rank's shard cut short) is passed over on restore
    victim = next(p for p in (saved[8] / "step_00000008").iterdir() if "zero_pp_rank_1" in p.name)
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 2)
    assert any("bytes" in p for p in problems(saved[8]))
    import pyarrow.fs

    order = candidates(str(run_dir), pyarrow.fs.LocalFileSystem())
    assert [Path(p).name for p in order] == [saved[8].name, saved[6].name, saved[3].name]
    resumed = fit(tiny_config(shards, tmp_path, "kill", "checkpoint.every_steps=3", "schedule.total_steps=10",
                              "checkpoint.max_failures=0"))
    print(f"newest checkpoint truncated: resumed from step {resumed.metrics['start_step']}, "
          f"finished at {resumed.metrics['step']}")
    assert resumed.metrics["start_step"] == 6 and resumed.metrics["step"] == 10


# ---- unstable steps ------------------------------------------------------------------------------------

def test_nan_steps_are_skipped_and_a_streak_stops_the_run(local_ray, shards, tmp_path):
    """NaN on rank 0 only at steps 3, 6, 7: both ranks skip 3 and train on; 6 + 7 make a streak of
    optim.max_bad_steps=2 and stop the run; the checkpoint of step 6 (weights as after step 5) is intact."""
    from pretrain.trainer import fit

    cfg = tiny_config(shards, tmp_path, "nan", "debug.nan_at_steps=[3,6,7]", "optim.max_bad_steps=2",
                      "checkpoint.every_steps=2", "checkpoint.max_failures=0")
    with pytest.raises(SpotMAEError, match="optim.max_bad_steps.*2 steps in a row.*step 7") as err:
        fit(cfg)
    assert "\n" not in str(err.value)  # the worker's own error, not Ray's wrapper with its traceback
    run_dir = tmp_path / "nan"
    losses, bad, lr = (scalars(run_dir, name) for name in ("loss", "bad_steps", "lr"))
    print(f"\nloss per step: {[round(losses[s], 4) for s in sorted(losses)]}; bad_steps: {bad}")
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]  # step 7 raised before reporting
    assert np.isnan(losses[3]) and np.isnan(losses[6])  # a reporting interval of skipped steps only
    assert all(np.isfinite(losses[s]) for s in (1, 2, 4, 5))
    assert bad == {1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 2}
    assert lr[4] == lr[3], "a skipped step must not move the lr schedule"
    saved = checkpoints(run_dir)
    assert max(saved) == 6 and problems(saved[6]) == []


# ---- corrupt data --------------------------------------------------------------------------------------

def _members(url) -> dict[str, dict]:
    """Samples of a shard as {key: {ext: bytes}}."""
    samples: dict[str, dict] = {}
    with tarfile.open(url) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            samples.setdefault(key, {"__key__": key})[ext] = tar.extractfile(m).read()
    return samples


def broken_shard_set(clean_dir: Path, out: Path) -> tuple[Path, dict]:
    """A copy of a clean shard set plus 3 shards of faults and one clean shard after them (a batch carries the
    running corrupt count, so one must follow the faults), listed in its manifest. The faults: a shard truncated
    inside an mp4, undecodable mp4 bytes, a clip of another size and one with too few frames."""
    shutil.copytree(clean_dir, out)
    manifest = read_manifest(out)
    n, size = manifest["num_shards"], manifest["config"]["size"]
    first = next(iter(_members(out / shard_name(0)).values()))
    meta = json.loads(first["json"])
    frames = np.full((meta["num_frames"], size // 2, size // 2, 3), 120, np.uint8)
    short = np.full((6, size, size, 3), 120, np.uint8)
    faults = {
        n: list(_members(out / shard_name(1)).values()),  # to be truncated below
        n + 1: [{"__key__": "bad_bytes", "mp4": b"\x00\x00\x00\x18ftypmp42" * 40, "json": first["json"]}],
        n + 2: [{"__key__": "small_clip", "mp4": encode_mp4(frames, 30.0), "json": first["json"]},
                {"__key__": "few_frames", "mp4": encode_mp4(short, 30.0),
                 "json": json.dumps(dict(meta, num_frames=6)).encode()}],
        n + 3: list(_members(out / shard_name(0)).values()),
    }
    for i, samples in faults.items():
        samples = [dict(s, __key__=f"{s['__key__']}_{i}") for s in samples]
        manifest["shards"][shard_name(i)] = write_shard(out / shard_name(i), samples)
    with tarfile.open(out / shard_name(n)) as tar:
        mp4 = [m for m in tar.getmembers() if m.name.endswith(".mp4")][1]
    with open(out / shard_name(n), "r+b") as f:
        f.truncate(mp4.offset_data + mp4.size // 2)
    manifest["shards"][shard_name(n)]["bytes"] = (out / shard_name(n)).stat().st_size
    manifest["num_shards"] = n + 4
    write_manifest(out, manifest)
    # clean: the set's clips, the truncated shard's intact first clip, the clean shard after the faults
    return out, {"clean_clips": manifest["num_clips"] + 1 + len(faults[n + 3]), "faults": 4}


def loader_config(shard_dir, **kw) -> LoaderConfig:
    base = dict(shards=str(shard_dir), batch_size=1, num_workers=0, frame_stride=2, shuffle_buffer=0,
                shuffle_shards=False, drop_last=False, max_corrupt_fraction=0.5, corrupt_min_samples=4)
    return LoaderConfig(**{**base, **kw})


def test_corrupt_shards_are_skipped_and_counted(shards, tmp_path, caplog):
    shard_dir, info = broken_shard_set(Path(shards), tmp_path / "broken")
    tally, keys = CorruptTally(), []
    with caplog.at_level("WARNING", logger="data.shards.loader"):
        for batch in make_loader(loader_config(shard_dir), GEOMETRY):
            keys += batch["key"]
            tally.update(batch)
    print(f"\n{len(keys)} clips read, {tally.total} corrupt skipped")
    assert tally.total == info["faults"]  # truncated tail, bad bytes, small clip, too few frames
    assert not any(k.split("_")[0] in ("bad", "small", "few") for k in keys)
    assert len(keys) == info["clean_clips"]
    assert "clip is 80x80, the shard set's clips are 160x160" in caplog.text
    assert "clip has 6 frames" in caplog.text


def test_corrupt_budget_error_names_the_shard_set(shards, tmp_path):
    shard_dir, _ = broken_shard_set(Path(shards), tmp_path / "broken")
    cfg = loader_config(shard_dir, max_corrupt_fraction=0.05, corrupt_min_samples=10)
    with pytest.raises(DataError, match=re.escape(f"{shard_dir}: max_corrupt_fraction: ") + ".* exceeds"):
        list(make_loader(cfg, GEOMETRY))


def test_corrupt_over_budget_stops_pretraining_with_checkpoint_intact(local_ray, shards, tmp_path):
    """Clean shards first (no shuffling), faults at the end: the run checkpoints at steps 2 and 4, then the
    first corrupt sample (read ahead for step 5) is over budget and stops it with the shard set named."""
    from pretrain.trainer import fit

    shard_dir, _ = broken_shard_set(Path(shards), tmp_path / "broken")
    cfg = tiny_config(shards, tmp_path, "budget", f"data.shards={shard_dir}", "data.shuffle_shards=false",
                      "data.max_corrupt_fraction=0.05", "data.corrupt_min_samples=1",
                      "checkpoint.every_steps=2", "checkpoint.max_failures=0")
    with pytest.raises(DataError, match=re.escape(f"{shard_dir}: max_corrupt_fraction")) as err:
        fit(cfg)
    assert "\n" not in str(err.value)
    saved = checkpoints(tmp_path / "budget")
    print(f"\nover budget: stopped; checkpoints kept {sorted(saved)}")
    assert max(saved) == 4 and all(problems(p) == [] for p in saved.values())


# ---- safe loading --------------------------------------------------------------------------------------

# Loads that unpickle, allowed because the file is one this project wrote for itself (not user input).
UNPICKLING_ALLOWED = {
    ("pretrain/train_loop.py", "load_checkpoint"): "DeepSpeed resume checkpoint of this run (commit-checked)",
}


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def unsafe_loads(path: Path, rel: str) -> list[str]:
    """torch.load without weights_only=True, np.load with allow_pickle=True, pickle.load(s), load_checkpoint."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        name = node.func.attr
        bad = ((owner == "torch" and name == "load" and _keyword(node, "weights_only") is not True)
               or (owner in ("np", "numpy") and name == "load" and _keyword(node, "allow_pickle") is True)
               or (owner in ("pickle", "dill", "cloudpickle") and name in ("load", "loads"))
               or name == "load_checkpoint")
        if bad and (rel, name) not in UNPICKLING_ALLOWED:
            found.append(f"{rel}:{node.lineno} {owner}.{name}")
    return found


def test_no_unsafe_unpickling_in_the_source():
    files = [p for folder in ("data", "pretrain", "finetune", "spotting", "launch", "benchmarks")
             for p in (REPO / folder).rglob("*.py")]
    assert len(files) > 40
    found = [hit for p in files for hit in unsafe_loads(p, p.relative_to(REPO).as_posix())]
    assert found == [], f"loads that may unpickle user files: {found}"


def test_the_scanner_catches_an_unsafe_load(tmp_path):
    code = ("import torch, pickle, numpy as np\ntorch.load('a')\ntorch.load('b', weights_only=False)\n"
            "torch.load('c', weights_only=True)\nnp.load('d', allow_pickle=True)\npickle.loads(b'')\n")
    (tmp_path / "m.py").write_text(code)
    assert [h.split()[0] for h in unsafe_loads(tmp_path / "m.py", "m.py")] == ["m.py:2", "m.py:3", "m.py:5",
                                                                              "m.py:6"]


def test_commit_marker_lists_every_file(tmp_path):
    from pretrain.checkpoint_commit import write_marker

    (tmp_path / "step_1").mkdir()
    (tmp_path / "step_1" / "weights.pt").write_bytes(b"x" * 100)
    (tmp_path / "latest").write_text("step_1")
    assert problems(tmp_path) == ["no commit marker (half-written, or written before markers existed)"]
    write_marker(tmp_path, rank=0, world_size=2, step=1)
    assert problems(tmp_path) == ["markers of ranks [1] missing"]
    record = json.loads((tmp_path / marker_name(0)).read_text())
    assert record["files"] == {"latest": 6, "step_1/weights.pt": 100}
    (tmp_path / "step_1" / "weights.pt").write_bytes(b"x" * 10)
    assert "step_1/weights.pt has 10 bytes, 100 were written" in problems(tmp_path)

"""Bad input to the data and evaluation commands (issue 16): flow outputs of same-named videos, short videos,
loose or half-written shards, wrong video tables, truncated synthetic videos, mismatched or repeated interval
rows. Real CLIs as subprocesses on real H.264 video."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_checks import one_error, run_cli
from conftest import TINY_SPOTTING_OVERRIDES

from data.common.assets import carphone_video
from data.common.errors import DataError
from data.common.video_io import read_frames, video_info, write_mp4
from data.shards.format import read_manifest, shard_name, verify_shards
from data.shards.pack import PackConfig, pack

REPO = Path(__file__).resolve().parents[1]
INTERVALS = "subject,video,onset,apex,offset,type,emotion\n"


@pytest.fixture(scope="module")
def carphone40() -> np.ndarray:
    return read_frames(carphone_video(), range(40))


# ---------------------------------------------------------------- data flow


def test_flow_keeps_same_named_videos_apart_and_refuses_a_name_collision(carphone40, tmp_path):
    videos = tmp_path / "videos"
    write_mp4(videos / "sub1" / "clip.mp4", carphone40, 30.0)
    write_mp4(videos / "sub2" / "clip.mp4", carphone40, 200.0)
    proc = run_cli("data", "flow", videos, "--out", tmp_path / "flow")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 computed" in proc.stderr
    for name, fps, ks in (("sub1__clip", 30.0, [6, 18]), ("sub2__clip", 200.0, [37, 120])):
        with np.load(tmp_path / "flow" / f"{name}.npz") as z:  # each file holds one video's own gaps
            assert float(z["fps"]) == pytest.approx(fps, rel=1e-3) and z["ks"].tolist() == ks
    assert not (tmp_path / "flow" / "clip.npz").exists()
    shutil.copy(videos / "sub1" / "clip.mp4", videos / "sub1__clip.mp4")  # the name sub1/clip.mp4 gets
    clash = run_cli("data", "flow", videos, "--out", tmp_path / "flow2")
    one_error(clash, "sub1__clip", "rename one of them")
    assert not (tmp_path / "flow2").exists()


def test_flow_on_a_video_shorter_than_the_frame_gaps_says_so(carphone40, tmp_path):
    video = write_mp4(tmp_path / "three.mp4", carphone40[:3], 30.0)
    proc = run_cli("data", "flow", video, "--out", tmp_path / "flow")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 computed, 0 cached" in proc.stderr
    assert re.search(r"three\.mp4: 3 frame\(s\), too short for frame gap\(s\) k=6, 18", proc.stderr), proc.stderr
    again = run_cli("data", "flow", video, "--out", tmp_path / "flow")
    assert "0 computed, 1 cached" in again.stderr and "too short" in again.stderr


# ---------------------------------------------------------------- data pack


def pack_args(source: Path, out: Path, workers: int = 1, **changes) -> list[str]:
    settings = {"source": "folder", "source_path": source, "out_dir": out, "clip_frames": 64, "clip_stride": 4,
                "size": 80, "clips_per_shard": 2, "crf": 10, "gop": 16, "workers": workers, **changes}
    return ["data", "pack", "--config", "configs/data/pack_synthetic.yaml", "--no-progress",
            *[f"{k}={v}" for k, v in settings.items()]]


def test_pack_refuses_a_folder_of_loose_shards(ramp_videos, tmp_path):
    out = tmp_path / "shards"
    out.mkdir()
    old = {shard_name(i): f"an older shard set, part {i}".encode() for i in range(4)}
    for name, data in old.items():
        (out / name).write_bytes(data)
    proc = run_cli(*pack_args(ramp_videos, out))
    one_error(proc, str(out), "shard-000000.tar", "no manifest.json")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old


def test_pack_refuses_shards_its_manifest_does_not_describe(ramp_shards, tmp_path):
    out = Path(shutil.copytree(ramp_shards, tmp_path / "shards"))
    (out / shard_name(99)).write_bytes(b"a stray shard")
    cfg = PackConfig(**{**read_manifest(out)["config"], "out_dir": str(out)})
    with pytest.raises(DataError, match=r"shard-000099\.tar.*describes 6 shard"):
        pack(cfg, progress=False)
    assert verify_shards(out) == []


def test_a_finished_shard_set_packs_again_untouched(ramp_shards, tmp_path):
    """Its own shards are never strays: packing a complete set again is a no-op."""
    out = Path(shutil.copytree(ramp_shards, tmp_path / "shards"))
    cfg = PackConfig(**{**read_manifest(out)["config"], "out_dir": str(out)})
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    pack(cfg, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")} == before


@pytest.fixture(scope="module")
def noise_videos(tmp_path_factory) -> Path:
    """Two 240-frame videos of noise: slow enough to encode that a shard is being written for a while."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_mp4(root / name / f"{name}.mp4", rng.integers(0, 255, (240, 96, 96, 3), dtype=np.uint8), 30.0)
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_during_pack_leaves_no_temp_files_and_a_rerun_finishes(noise_videos, tmp_path, workers):
    out = tmp_path / "shards"
    args = pack_args(noise_videos, out, workers, clip_frames=16, clip_stride=2, size=96, clips_per_shard=100)
    proc = subprocess.Popen([sys.executable, "-m", *map(str, args)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 200
    while not list(out.glob(".shard-*.tar.*.tar")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert list(out.glob(".shard-*.tar.*.tar")), "no shard was being written"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=200)
    assert proc.returncode == 128 + signal.SIGTERM and stderr.strip().splitlines()[-1] == "terminated", stderr
    assert sorted(p.name for p in out.rglob(".*")) == []  # every half-written file was removed
    stale = out / ".shard-000001.tar.k1ll3d99.tar"  # what a SIGKILL leaves: only a rerun can remove it
    stale.write_bytes(b"half a shard")
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not stale.exists() and "removed 1 temp file(s)" in rerun.stderr
    assert read_manifest(out)["complete"] and verify_shards(out) == []


# ---------------------------------------------------------------- video tables and synthetic videos


def test_baseline_refuses_a_video_table_whose_frame_count_is_wrong(carphone40, tmp_path):
    data = tmp_path / "data"
    write_mp4(data / "videos" / "v1.mp4", carphone40, 30.0)
    (data / "videos.csv").write_text("subject,video,path,fps,num_frames\ns1,v1,videos/v1.mp4,30,5000\n")
    proc = run_cli("spotting", "baseline", "--data", data, "--out", tmp_path / "out")
    one_error(proc, str(data / "videos.csv"), "num_frames", "row 2", "5000", "40 frames")
    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_synth_rerun_renders_a_truncated_video_again(tmp_path):
    args = ["data", "synth", "--out", tmp_path / "set", "--no-progress", *TINY_SPOTTING_OVERRIDES, "subjects=1"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    video = tmp_path / "set" / "videos" / "s01_v01.mp4"
    frames = video_info(video)["num_frames"]
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "rendering it again" in again.stderr
    assert video_info(video)["num_frames"] == frames


# ---------------------------------------------------------------- evaluation and annotations


def write_tables(folder: Path, gt_rows: list[str], pred_rows: list[str]) -> tuple[Path, Path]:
    gt, pred = folder / "gt.csv", folder / "pred.csv"
    gt.write_text(INTERVALS + "".join(r + "\n" for r in gt_rows))
    pred.write_text(INTERVALS.strip() + ",score\n" + "".join(r + "\n" for r in pred_rows))
    return gt, pred


def overall(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)["overall"]


def test_evaluate_warns_when_no_prediction_names_a_ground_truth_video(tmp_path):
    gt, pred = write_tables(tmp_path, ["s1,v1,10,12,15,macro,", "s2,v2,30,31,33,micro,"],
                            ["s1,v1.mp4,10,12,15,macro,,0.9", "s2,v2.mp4,30,31,33,micro,,0.8"])
    proc = run_cli("spotting", "evaluate", "--gt", gt, "--pred", pred, "--json")
    assert overall(proc)["f1"] == 0.0
    warning = next(ln for ln in proc.stderr.splitlines() if "WARNING" in ln)
    assert "no prediction video is a ground-truth video" in warning
    assert "v1.mp4" in warning and "'v1'" in warning and "file suffix" in warning


def test_repeated_ground_truth_rows_count_once_and_are_named(tmp_path):
    rows = ["s1,v1,10,12,15,macro,", "s1,v1,30,31,33,micro,", "s1,v1,60,70,90,macro,"]
    clean_gt, pred = write_tables(tmp_path, rows, ["s1,v1,10,12,15,macro,,0.9", "s1,v1,61,70,90,macro,,0.8"])
    repeated = tmp_path / "repeated.csv"
    repeated.write_text(INTERVALS + "".join(r + "\n" for r in rows + [rows[0], rows[2]]))
    clean = overall(run_cli("spotting", "evaluate", "--gt", clean_gt, "--pred", pred, "--json"))
    proc = run_cli("spotting", "evaluate", "--gt", repeated, "--pred", pred, "--json")
    assert overall(proc) == clean  # not one more miss per repeat
    assert "2 repeated row(s) dropped" in proc.stderr and "row 5 repeats row 2; row 6 repeats row 4" in proc.stderr
    converted = run_cli("data", "annotations", repeated, "--out", tmp_path / "intervals.csv")
    assert converted.returncode == 0 and "row 5 repeats row 2" in converted.stderr
    assert (tmp_path / "intervals.csv").read_text() == clean_gt.read_text()


def test_ground_truth_and_predictions_read_the_type_column_alike(tmp_path):
    """One type reader (issue 29): `--pred` took only 'macro' / 'micro' where `--gt` took any case and the
    published spellings; now both give the score of the lower-case tables."""
    gt, pred = write_tables(tmp_path, ["s1,v1,10,12,15,macro,", "s1,v1,30,31,33,micro,"],
                            ["s1,v1,10,12,15,macro,,0.9", "s1,v1,30,31,33,micro,,0.8"])
    (tmp_path / "shouted").mkdir()
    shouted_gt, shouted_pred = write_tables(tmp_path / "shouted", ["s1,v1,10,12,15,MACRO,", "s1,v1,30,31,33,Micro,"],
                                            ["s1,v1,10,12,15,Macro-expression,,0.9", "s1,v1,30,31,33,MICRO,,0.8"])
    lower = overall(run_cli("spotting", "evaluate", "--gt", gt, "--pred", pred, "--json"))
    assert lower["tp"] == 2
    for g, p in ((gt, shouted_pred), (shouted_gt, pred), (shouted_gt, shouted_pred)):
        assert overall(run_cli("spotting", "evaluate", "--gt", g, "--pred", p, "--json")) == lower
    bad = tmp_path / "bad_pred.csv"
    bad.write_text(shouted_pred.read_text().replace("MICRO", "tiny"))
    one_error(run_cli("spotting", "evaluate", "--gt", gt, "--pred", bad), str(bad), "type", "'tiny'")


def test_config_error_stops_finetune_before_any_work(tmp_path):
    out, root = tmp_path / "ft", tmp_path / "data"
    proc = run_cli("finetune", "train", "--config", "configs/finetune/synthetic.yaml", "train.lr=-1", f"out={out}",
                   f"data.root={root}")
    one_error(proc, "override 'train.lr=-1'", "train.lr", "must be > 0")
    assert not out.exists() and not root.exists()  # no synthetic set generated, no training started

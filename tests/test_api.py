"""The Python API (spotting.api, docs/api.md): a spotter loaded from a folder or a Hub id spots a video file or its
frames in memory and returns exactly what `python -m spotting spot` writes; bad input is one named error.
A real (untrained) spotter whose logistic reader reads the flow cues and the heads, on real H.264 video cut from
the carphone clip (benchmarks/spot.py makes the spotter, as tests/test_bad_input_spot.py does)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hub_cache import add_to_cache

from data.common.assets import carphone_video
from data.common.errors import DataError
from data.common.tables import write_predictions
from data.common.video_io import read_frames, video_info, write_mp4
from spotting.api import Spotter

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spotter_folder(tmp_path_factory) -> Path:
    spec = importlib.util.spec_from_file_location("bench_spot", REPO / "benchmarks" / "spot.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.untrained_model(tmp_path_factory.mktemp("spotter"), with_cues=True)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The first 60 frames of the carphone video (a face, head motion)."""
    return write_mp4(tmp_path_factory.mktemp("clip") / "carphone60.mp4", read_frames(carphone_video(), range(60)),
                     29.97)


@pytest.fixture(scope="module")
def spotted(spotter_folder, clip, tmp_path_factory):
    """(spot's summary, its output folder, the API's result) for the same video and spotter."""
    from spotting.spot import spot

    out = tmp_path_factory.mktemp("files")
    summary = spot(clip, spotter_folder, out)
    return summary, out, Spotter.from_pretrained(spotter_folder).spot(clip)


def test_the_api_returns_what_spot_writes(spotted, clip, tmp_path):
    summary, out, result = spotted
    write_predictions(result.intervals, tmp_path / "api.csv")
    assert (tmp_path / "api.csv").read_text() == (out / f"{clip.stem}.csv").read_text()
    assert summary["intervals"] == result.intervals.drop(columns=["subject", "emotion"]).to_dict("records")
    written = np.load(out / f"{clip.stem}_curves.npz")
    curves = result.curves
    assert len(curves) == 60 and sorted(curves.columns) == sorted(k.replace("__", ".") for k in written.files)
    for key in written.files:
        np.testing.assert_array_equal(curves[key.replace("__", ".")].to_numpy(), written[key])
    assert {"fused.macro", "fused.micro", "cue.micro.all", "micro.micro_present"} <= set(curves.columns)
    assert result.crops.shape == (60, 160, 160, 3) and result.face_track["face_fraction"] >= 0.95
    assert set(result.stage_seconds) == {"decode + faces", "channels", "heads", "intervals"}


def test_frames_in_memory_give_the_same_result(spotted, spotter_folder, clip):
    _, _, from_file = spotted
    frames = read_frames(clip)
    from_frames = Spotter.from_pretrained(spotter_folder).spot(frames, fps=video_info(clip)["fps"], name=clip.stem)
    pd.testing.assert_frame_equal(from_frames.intervals, from_file.intervals)
    pd.testing.assert_frame_equal(from_frames.curves, from_file.curves)


def test_frames_without_a_rate_or_of_another_shape_are_refused(spotter_folder):
    spotter = Spotter.from_pretrained(spotter_folder)
    frames = np.zeros((8, 32, 32, 3), np.uint8)
    with pytest.raises(DataError, match="fps"):
        spotter.spot(frames)
    with pytest.raises(DataError, match=r"expected RGB uint8 \[T, H, W, 3\]"):
        spotter.spot(frames[..., 0], fps=30)
    with pytest.raises(DataError, match="notes.mp4"):
        spotter.spot(Path(spotter_folder) / "notes.mp4")


def test_a_hub_id_is_read_from_the_local_hub_cache(spotter_folder, tmp_path, monkeypatch):
    from huggingface_hub import constants, scan_cache_dir

    from launch.release import main as release_main

    release = tmp_path / "release"
    assert release_main(["--spotter", str(spotter_folder), "--out", str(release)]) == 0
    cache = tmp_path / "hub"
    snapshot = add_to_cache(cache, "someone/untrained-spotter", release)
    repos = {r.repo_id: r for r in scan_cache_dir(cache).repos}  # huggingface_hub reads the layout back
    assert set(repos) == {"someone/untrained-spotter"}
    (revision,) = repos["someone/untrained-spotter"].revisions
    assert revision.commit_hash == snapshot.name and revision.refs == {"main"}
    assert {f.file_name for f in revision.files} >= {"spotter.json", "model.safetensors", "README.md"}

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    folder, by_id = Spotter.from_pretrained(spotter_folder), Spotter.from_pretrained("someone/untrained-spotter")
    by_commit = Spotter.from_pretrained(f"someone/untrained-spotter@{snapshot.name}")
    for loaded in (by_id, by_commit):
        assert (loaded.reader_name, loaded.sets) == (folder.reader_name, folder.sets)
        for name, tensor in folder.heads.state_dict().items():
            assert torch.equal(loaded.heads.state_dict()[name], tensor), name
    with pytest.raises(DataError, match=r"someone/missing.*not found.*local Hub cache.*hf download someone/missing"):
        Spotter.from_pretrained("someone/missing")
    with pytest.raises(DataError, match="no spotter.json"):
        Spotter.from_pretrained(tmp_path / "not" / "a" / "folder")


def test_a_loso_config_from_yaml_and_dotted_changes_is_checked(tmp_path):
    from data.common.errors import ConfigError
    from spotting.api import LosoConfig, loso_config

    cfg = loso_config(REPO / "configs/spotting/loso.yaml", {"finetune.data.root": str(tmp_path), "parallel": False,
                                                            "channels": ["cues"], "reader": "logistic"})
    assert isinstance(cfg, LosoConfig) and cfg.finetune.data.root == str(tmp_path) and cfg.sets == ("cues",)
    assert cfg.finetune.train.epochs == 30  # the YAML's value, kept
    # the YAML fuses late; narrowing the channel sets then asks for groups of what is read, naming the way out
    assert loso_config(REPO / "configs/spotting/loso.yaml", {}).detector.groups == [["cues", "flow"], ["encoder"]]
    with pytest.raises(ConfigError, match=r"\['encoder'\].*detector.groups=\[\]"):
        loso_config(REPO / "configs/spotting/loso.yaml", {"channels": ["cues", "flow"]})
    with pytest.raises(ConfigError, match="no_such_key"):
        loso_config(None, {"finetune.no_such_key": 1})
    with pytest.raises(ConfigError, match="logistic reader cannot read"):
        loso_config(None, {"reader": "logistic", "channels": ["encoder"]})

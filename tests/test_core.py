"""The shared plumbing: config loading, tables, atomic writes, video I/O, landmarks, CLI errors."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from data import atomic, tables
from data.config import load_config
from data.errors import ConfigError, DataError
from data.video_io import encode_mp4, read_frames, video_info, write_mp4


@dataclasses.dataclass
class Inner:
    k: int = 3
    method: str = "dis"


@dataclasses.dataclass
class Outer:
    name: str = "x"
    rate: float = 0.5
    sizes: tuple[int, int] = (1, 2)
    inner: Inner = dataclasses.field(default_factory=Inner)
    flag: bool = False
    maybe: int | None = None


def test_config_loads_nested_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: y\nrate: 1\ninner:\n  k: 7\nsizes: [4, 5]\n")
    cfg = load_config(path, Outer, ["inner.method=tvl1", "flag=true", "maybe=2"])
    assert cfg == Outer(name="y", rate=1.0, sizes=(4, 5), inner=Inner(k=7, method="tvl1"), flag=True, maybe=2)
    assert isinstance(cfg.rate, float)


@pytest.mark.parametrize("text,field", [
    ("nme: y\n", "nme"),
    ("inner:\n  kk: 1\n", "inner.kk"),
    ("rate: fast\n", "rate"),
    ("inner:\n  k: 1.5\n", "inner.k"),
    ("flag: 1\n", "flag"),
    ("sizes: [1, 2, 3]\n", "sizes"),
])
def test_config_rejects_unknown_keys_and_wrong_types(tmp_path, text, field):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, Outer)
    assert str(path) in str(err.value) and field in str(err.value)


def test_config_missing_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", Outer)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, Outer, ["rate"])


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def _intervals(**over):
    row = dict(subject="s1", video="v1", onset=10, apex=12, offset=20, type="micro", emotion="")
    row.update(over)
    return pd.DataFrame([row])


def test_interval_table_round_trip(tmp_path):
    df = pd.concat([_intervals(), _intervals(video="v0", onset=0, apex=0, offset=0, type="macro")])
    path = tables.write_intervals(df, tmp_path / "gt.csv")
    back = tables.read_intervals(path)
    assert list(back.columns) == tables.INTERVAL_COLUMNS
    assert back["video"].tolist() == ["v0", "v1"] and back["onset"].dtype == np.int64


@pytest.mark.parametrize("over,field", [
    (dict(onset=30), "offset"), (dict(type="nano"), "type"), (dict(apex=99), "apex"), (dict(onset="x"), "onset"),
])
def test_interval_table_names_row_and_field(tmp_path, over, field):
    path = tmp_path / "gt.csv"
    _intervals(**over).to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        tables.read_intervals(path)
    assert "row 2" in str(err.value) and field in str(err.value) and str(path) in str(err.value)


def test_interval_beyond_video_end_is_rejected(tmp_path):
    path = tmp_path / "gt.csv"
    _intervals().to_csv(path, index=False)
    with pytest.raises(DataError, match="beyond the last frame"):
        tables.read_intervals(path, num_frames={"v1": 15})


def test_video_table_resolves_relative_paths(tmp_path):
    df = pd.DataFrame([dict(subject="s1", video="v1", path="videos/v1.mp4", fps=30, num_frames=100)])
    tables.write_videos(df, tmp_path / "videos.csv")
    back = tables.read_videos(tmp_path / "videos.csv")
    assert back["path"][0] == str(tmp_path / "videos" / "v1.mp4")


def test_video_round_trip_keeps_frame_order(tmp_path):
    frames = np.zeros((12, 64, 96, 3), np.uint8)
    for i in range(12):
        frames[i] = 20 * i  # one flat intensity per frame: order survives lossy coding
    path = write_mp4(tmp_path / "v.mp4", frames, fps=29.97)
    info = video_info(path)
    assert (info["num_frames"], info["height"], info["width"]) == (12, 64, 96)
    assert abs(info["fps"] - 29.97) < 0.01
    back = read_frames(path)
    assert np.allclose(back.mean(axis=(1, 2, 3)), np.arange(12) * 20, atol=3)
    sub = read_frames(encode_mp4(frames, 30), indices=[3, 7])
    assert np.allclose(sub.mean(axis=(1, 2, 3)), [60, 140], atol=3)


def test_bad_video_names_the_file(tmp_path):
    bad = tmp_path / "notavideo.mp4"
    bad.write_text("hello")
    with pytest.raises(DataError, match="notavideo.mp4"):
        read_frames(bad)
    with pytest.raises(DataError, match="not found"):
        video_info(tmp_path / "missing.mp4")


def test_landmarks_on_a_real_face():
    from skimage.data import astronaut

    from data.landmarks import face_landmarks, region_boxes, similarity_to_canonical, transform_points

    image = astronaut()
    lm = face_landmarks(image)
    assert lm is not None and lm.shape == (68, 2)
    aligned = transform_points(lm, similarity_to_canonical(lm))
    boxes = region_boxes(aligned, (160, 160))
    # Anatomy in the canonical crop: brows above eyes above nose above mouth.
    assert boxes["right_brow"][1] < boxes["right_eye"][1] < boxes["nose"][1] < boxes["mouth"][1]
    assert boxes["right_eye"][0] < boxes["left_eye"][0]


def test_cli_user_error_is_one_line_with_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "spotting", "nosuchcommand"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr

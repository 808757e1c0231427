"""The shared plumbing: config loading, tables, atomic writes, video I/O, landmarks, CLI errors."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from data.common import atomic, tables
from data.common.config import Config, load_config, replace, setting
from data.common.errors import ConfigError, DataError
from data.common.video_io import encode_mp4, read_frames, video_info, write_mp4


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


@dataclasses.dataclass
class Ranged(Config):
    lr: float = setting(0.01, gt=0)
    scales: tuple[float, ...] = setting((0.5, 1.0), gt=0, le=1)
    low: int = 1
    high: int = 2

    def check(self):
        if self.low > self.high:
            raise ConfigError(f"low {self.low} is above high {self.high}", field="low")


@dataclasses.dataclass
class Holder(Config):
    ranged: Ranged = dataclasses.field(default_factory=Ranged)


@pytest.mark.parametrize("override,field,text", [
    ("ranged.lr=-1", "ranged.lr", "must be > 0"),
    ("ranged.lr=.nan", "ranged.lr", "nan"),
    ("ranged.scales=[0.5, 1.5]", "ranged.scales", "must be <= 1"),
    ("ranged.low=5", "ranged.low", "above high"),
])
def test_config_ranges_and_rules_are_checked_on_load_naming_the_override(tmp_path, override, field, text):
    path = tmp_path / "ok.yaml"
    path.write_text("ranged:\n  lr: 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, Holder, [override])
    message = str(err.value)
    assert f"override {override!r}" in message and field in message and text in message
    assert str(path) not in message  # the file is fine: the command line is to blame


def test_config_errors_from_the_file_name_the_file_and_suggest_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("ranged:\n  lr: 0\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: ranged.lr: must be > 0"):
        load_config(path, Holder)
    with pytest.raises(ConfigError, match=r"override 'ranged.lrr=1'.*did you mean 'lr'"):
        load_config(None, Holder, ["ranged.lrr=1"])
    with pytest.raises(ConfigError, match="must be > 0"):  # built in code: the same checks
        Ranged(lr=0.0)
    with pytest.raises(ConfigError, match="above high"):
        dataclasses.replace(Ranged(), low=9)


def test_config_replace_takes_typed_values_at_dotted_keys():
    cfg = replace(Holder(), {"ranged.lr": 0.2, "ranged.scales": [0.25]})
    assert cfg.ranged.lr == 0.2 and cfg.ranged.scales == (0.25,) and Holder().ranged.lr == 0.01
    with pytest.raises(ConfigError, match="must be > 0"):
        replace(Holder(), {"ranged.lr": -3.0})
    with pytest.raises(ConfigError, match="unknown key"):
        replace(Holder(), {"ranged.nope": 1})
    with pytest.raises(ConfigError, match="expected float"):
        replace(Holder(), {"ranged.lr": "fast"})


@dataclasses.dataclass
class Tuned(Config):
    """A parent whose default section differs from the section class's own defaults."""
    ranged: Ranged = dataclasses.field(default_factory=lambda: Ranged(lr=0.5, high=7))


def test_config_section_set_in_part_keeps_the_parents_default_for_the_rest(tmp_path):
    path = tmp_path / "part.yaml"
    path.write_text("ranged:\n  low: 3\n")
    cfg = load_config(path, Tuned, ["ranged.scales=[0.25]"])
    assert (cfg.ranged.lr, cfg.ranged.high, cfg.ranged.low, cfg.ranged.scales) == (0.5, 7, 3, (0.25,))
    with pytest.raises(ConfigError, match="ranged.low: low 9 is above high 7"):
        load_config(path, Tuned, ["ranged.low=9"])


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

    from data.faces.landmarks import face_landmarks, region_boxes, similarity_to_canonical, transform_points

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

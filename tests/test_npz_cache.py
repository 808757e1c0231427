"""The .npz caches: one reader and one atomic writer (data.common.npz_cache). Every cache reads the files its
earlier writer wrote (formats and keys unchanged), refuses one of other settings, and recomputes one that is cut
short or damaged instead of failing; nothing is ever unpickled."""
from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest

from data.common.errors import DataError
from data.common.npz_cache import read_npz, write_npz
from data.faces import stabilise as st
from data.flow import curves as cv
from data.flow import regions as fl
from finetune.encoder import features as mf
from spotting.published import inputs


def _damaged(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "empty":
        data = b""
    elif how == "cut":
        data = data[: len(data) // 2]
    else:  # a member's bytes overwritten: the archive's index is intact, its content is not
        data[60:110] = b"\xff" * 50
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("compressed", [False, True])
def test_read_gives_every_array_once_and_write_is_atomic(tmp_path, compressed):
    path = tmp_path / "c.npz"
    arrays = {"x": np.arange(12.0).reshape(3, 4), "name": np.asarray("v01"), "k": np.int64(3)}
    write_npz(path, arrays, compressed=compressed)
    got = read_npz(path)
    assert set(got) == set(arrays) and all(isinstance(v, np.ndarray) for v in got.values())
    np.testing.assert_array_equal(got["x"], arrays["x"])
    assert str(got["name"]) == "v01" and int(got["k"]) == 3

    class Unconvertible:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("the disk filled up")

    with pytest.raises(RuntimeError):
        write_npz(path, {"y": np.zeros(3), "z": Unconvertible()}, compressed=compressed)
    np.testing.assert_array_equal(read_npz(path)["x"], arrays["x"])  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temp file left


@pytest.mark.parametrize("how", ["empty", "cut", "overwritten"])
@pytest.mark.parametrize("compressed", [False, True])
def test_a_damaged_file_is_a_warning_and_none(tmp_path, caplog, how, compressed):
    path = tmp_path / "c.npz"
    write_npz(path, {"x": np.arange(10000.0)}, compressed=compressed)
    _damaged(path, how)
    with caplog.at_level(logging.WARNING):
        assert read_npz(path) is None
    assert "unreadable cache" in caplog.text and str(path) in caplog.text


def test_absent_pickled_incomplete_and_stale_files(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    assert read_npz(tmp_path / "none.npz") is None and not caplog.records  # absent: nothing to say
    np.savez(tmp_path / "pickled.npz", x=np.array([{"a": 1}], dtype=object))
    assert read_npz(tmp_path / "pickled.npz") is None  # never unpickled
    write_npz(tmp_path / "c.npz", {"x": np.zeros(3), "key": np.asarray("a")})
    assert read_npz(tmp_path / "c.npz", needs=("x", "y")) is None
    assert read_npz(tmp_path / "c.npz", check=lambda z: None if z["missing"] else "x") is None
    assert [r.levelname for r in caplog.records] == ["WARNING"] * 3
    caplog.clear()
    assert read_npz(tmp_path / "c.npz", check=lambda z: None if str(z["key"]) == "b" else "made with b") is None
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", f"recomputing {tmp_path / 'c.npz'}: made with b")]  # other settings are not a fault
    assert read_npz(tmp_path / "c.npz", ("x",), lambda z: None if str(z["key"]) == "a" else "no") is not None


def _stable(n: int = 4) -> st.StableVideo:
    rng = np.random.default_rng(0)
    return st.StableVideo("v01", 29.97, 2 * n, 15.0, np.arange(0, 2 * n, 2), rng.integers(0, 255, (n, 8, 8), np.uint8),
                          rng.random((n, 68, 2), np.float32), rng.random((n, 68, 2), np.float32),
                          rng.random((n, 2, 3), np.float32))


def test_the_stabilised_stream_cache_reads_the_earlier_format(tmp_path):
    cfg, sv, path = st.StabiliseConfig(), _stable(), tmp_path / "v01.npz"
    with open(path, "wb") as f:  # as the writer before data.common.npz_cache wrote it
        np.savez(f, key=cfg.key(), video=sv.video, fps=sv.fps, num_frames=sv.num_frames, rate_hz=sv.rate_hz,
                 sources=sv.sources, crops=sv.crops, landmarks=sv.landmarks, raw_landmarks=sv.raw_landmarks,
                 matrices=sv.matrices)
    earlier = path.read_bytes()
    got = st.load_stable(path, cfg)
    assert (got.video, got.fps, got.num_frames, got.rate_hz) == ("v01", 29.97, 8, 15.0)
    for name in ("sources", "crops", "landmarks", "raw_landmarks", "matrices"):
        np.testing.assert_array_equal(getattr(got, name), getattr(sv, name))
    st.save_stable(path, sv, cfg)
    with np.load(path) as z, np.load(io.BytesIO(earlier)) as old:
        assert z.files == old.files  # the same arrays under the same names, in the same order
    assert st.load_stable(path, st.StabiliseConfig(rate_hz=25.0)) is None  # another config
    _damaged(path, "cut")
    assert st.load_stable(path, cfg) is None


def test_the_flow_curve_cache_reads_the_earlier_format(tmp_path):
    params = {"method": "dis", "scale": 1.0, "landmarks": "auto", "head_model": "affine",
              "features": list(fl.FEATURES)}
    curves = {3: np.random.default_rng(0).random((len(fl.FEATURES), 10, len(fl.REGIONS)), np.float32)}
    path = tmp_path / "a.npz"
    np.savez_compressed(path, params=json.dumps(params), fps=30.0, num_frames=10, ks=np.array([3], np.int64),
                        regions=np.array(fl.REGIONS), k3=curves[3])  # the earlier writer's format
    got = cv.load_curves(path, params)
    assert (got["fps"], got["num_frames"], got["params"], list(got["curves"])) == (30.0, 10, params, [3])
    np.testing.assert_array_equal(got["curves"][3], curves[3])
    assert cv.load_curves(path, {**params, "method": "farneback"}) is None
    cv.save_curves(path, {**curves, 6: curves[3]}, 30.0, 10, params)
    with np.load(path) as z:
        assert sorted(z.files) == ["fps", "k3", "k6", "ks", "num_frames", "params", "regions"]
    _damaged(path, "empty")
    assert cv.load_curves(path, params) is None
    write_npz(path, {"params": json.dumps(params), "fps": 30.0, "num_frames": 10, "ks": np.array([3, 6])})
    assert cv.load_curves(path, params) is None  # lists gaps it does not hold: damaged


def test_the_encoder_feature_cache_reads_the_earlier_format(tmp_path):
    path = tmp_path / "v01.npz"
    arrays = {name: np.random.default_rng(0).random((6, 5, 4)).astype(np.float16) for name in mf.FEATURE_ARRAYS}
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # the earlier writer's format
    got = mf._read_features(path, 6)
    assert list(got) == list(mf.FEATURE_ARRAYS) and all(v.dtype == np.float32 for v in got.values())
    assert all(np.array_equal(got[k], arrays[k].astype(np.float32)) for k in arrays)
    assert mf._read_features(path, 7) is None  # another grid
    _damaged(path, "overwritten")
    assert mf._read_features(path, 6) is None


def test_a_published_input_cache_of_other_settings_or_damaged_is_recomputed(tmp_path):
    cache = tmp_path / "v.npz"
    features = np.random.default_rng(0).random((5, 256)).astype(np.float32)
    np.savez(cache, features=features, size=16)  # the earlier writer's format
    missing_video = tmp_path / "gone.mp4"
    np.testing.assert_array_equal(inputs.appearance_features(missing_video, cache, 16), features)
    for damage in (None, "cut"):  # recomputing is what fails here: the video is gone; the cache is not the error
        if damage:
            _damaged(cache, damage)
        with pytest.raises(DataError, match="gone.mp4"):
            inputs.appearance_features(missing_video, cache, 8 if damage is None else 16)

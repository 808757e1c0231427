"""Bad input to `spotting spot` and the model folders it loads (issue 16): short videos, damaged spotter folders,
output folders shared with the user's files, and the same video spotted twice. Real CLIs as subprocesses, a
real (untrained) spotter with a logistic reader of the flow cues, real H.264 video cut from the carphone clip."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_checks import one_error, run_cli

from data.common.assets import carphone_video
from data.common.video_io import read_frames, write_mp4

REPO = Path(__file__).resolve().parents[1]
SHORT = (3, 4, 5, 8)  # 3: shorter than the 9-frame box smoothing; 4-8: shorter than the baseline's hops


@pytest.fixture(scope="module")
def spotter(tmp_path_factory) -> Path:
    """benchmarks/spot.py's untrained spotter (fresh lgi_tiny encoder, default heads) with a logistic reader that
    reads the flow cues, so spot runs every stage: faces, cues, heads, intervals."""
    path = REPO / "benchmarks" / "spot.py"
    spec = importlib.util.spec_from_file_location("bench_spot", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.untrained_model(tmp_path_factory.mktemp("spotter"), with_cues=True)


@pytest.fixture(scope="module")
def short_videos(tmp_path_factory) -> dict[int, Path]:
    """The first 3, 4, 5 and 8 frames of the carphone video, encoded with PyAV."""
    folder = tmp_path_factory.mktemp("short")
    frames = read_frames(carphone_video(), range(max(SHORT)))
    return {n: write_mp4(folder / f"first{n}.mp4", frames[:n], 29.97) for n in SHORT}


@pytest.fixture(scope="module")
def carphone_clip(tmp_path_factory) -> Path:
    """The first 60 frames of the carphone video (a face, head motion): enough for every stage, half the time."""
    frames = read_frames(carphone_video(), range(60))
    return write_mp4(tmp_path_factory.mktemp("clip") / "carphone60.mp4", frames, 29.97)


def damaged_copy(spotter: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(spotter, tmp_path / "model"))


@pytest.mark.parametrize("frames", SHORT)
def test_spot_on_a_short_video_writes_its_results(spotter, short_videos, tmp_path, frames):
    proc = run_cli("spotting", "spot", short_videos[frames], "--model", spotter, "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / f"first{frames}.json").read_text())
    assert summary["num_frames"] == frames
    assert np.load(tmp_path / f"first{frames}_curves.npz")["fused__micro"].shape == (frames,)
    assert "too short for frame gap(s)" in proc.stderr  # the flow cues say why they are empty


def test_faces_on_a_short_video_alone_and_in_a_folder(short_videos, tmp_path):
    single = run_cli("data", "faces", short_videos[3], "--out", tmp_path / "single")
    assert single.returncode == 0, single.stderr[-3000:]
    assert json.loads((tmp_path / "single" / "first3.json").read_text())["status"] == "ok"
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(short_videos[3], folder / "a_short.mp4")
    shutil.copy(carphone_video(), folder / "b_carphone.mp4")
    both = run_cli("data", "faces", folder, "--out", tmp_path / "both")
    assert both.returncode == 0, both.stderr[-3000:]
    assert "2 done" in both.stdout and "0 failed" in both.stdout
    assert (tmp_path / "both" / "b_carphone_aligned.mp4").is_file()


def test_spotter_folder_without_heads_is_one_error(spotter, carphone_clip, tmp_path):
    model = damaged_copy(spotter, tmp_path)
    (model / "heads.safetensors").unlink()
    proc = run_cli("spotting", "spot", carphone_clip, "--model", model, "--out", tmp_path / "out")
    one_error(proc, str(model / "heads.safetensors"), "missing")
    assert not (tmp_path / "out").exists()


def test_truncated_encoder_weights_are_one_error_in_spot_and_release(spotter, carphone_clip, tmp_path):
    model = damaged_copy(spotter, tmp_path)
    weights = model / "encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    spot = run_cli("spotting", "spot", carphone_clip, "--model", model, "--out", tmp_path / "out")
    one_error(spot, str(weights), "truncated")
    release = run_cli("launch", "release", "--checkpoint", model, "--out", tmp_path / "release")
    one_error(release, str(weights), "truncated")
    # the encoder folder alone has no checksum record: the reader itself must say the file is unreadable
    alone = run_cli("launch", "release", "--checkpoint", model / "encoder", "--out", tmp_path / "release")
    one_error(alone, str(weights), "not a readable safetensors file")


def test_bit_flipped_heads_are_refused_not_scored(spotter, carphone_clip, tmp_path):
    model = damaged_copy(spotter, tmp_path)
    heads = model / "heads.safetensors"
    data = bytearray(heads.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 1000] = bytes(b ^ 0xFF for b in data[middle:middle + 1000])
    heads.write_bytes(bytes(data))
    proc = run_cli("spotting", "spot", carphone_clip, "--model", model, "--out", tmp_path / "out")
    one_error(proc, str(heads), "sha256")


def test_spotter_folder_records_the_size_and_sha256_of_its_files(spotter):
    from data.common.checksums import file_record

    files = json.loads((spotter / "spotter.json").read_text())["files"]
    assert set(files) == {"encoder/model.safetensors", "encoder/config.json", "heads.safetensors", "logistic.json",
                          "channels.json"}
    for name, record in files.items():
        assert record == file_record(spotter / name)


def test_spot_out_that_is_a_file_is_one_error(spotter, carphone_clip, tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("my notes\n")
    proc = run_cli("spotting", "spot", carphone_clip, "--model", spotter, "--out", target)
    one_error(proc, str(target), "is a file")
    assert target.read_text() == "my notes\n"


def test_spot_never_replaces_a_file_it_did_not_write(spotter, carphone_clip, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    video = Path(shutil.copy(carphone_clip, folder / "x.mp4"))
    (folder / "x_aligned.mp4").write_bytes(b"the user's own aligned video")
    proc = run_cli("spotting", "spot", video, "--model", spotter, "--out", folder)
    one_error(proc, str(folder / "x_aligned.mp4"), "did not write it")
    assert (folder / "x_aligned.mp4").read_bytes() == b"the user's own aligned video"
    assert sorted(p.name for p in folder.iterdir()) == ["x.mp4", "x_aligned.mp4"]
    (folder / "x_aligned.mp4").unlink()
    first = run_cli("spotting", "spot", video, "--model", spotter, "--out", folder)
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_cli("spotting", "spot", video, "--model", spotter, "--out", folder)  # its own files: replaced
    assert again.returncode == 0, again.stderr[-3000:]
    (folder / "x.csv").write_text("edited by the user\n")
    edited = run_cli("spotting", "spot", video, "--model", spotter, "--out", folder)
    one_error(edited, str(folder / "x.csv"), "changed since")
    assert (folder / "x.csv").read_text() == "edited by the user\n"


def test_the_same_video_spotted_twice_gives_the_same_output(spotter, carphone_clip, tmp_path):
    runs = [run_cli("spotting", "spot", carphone_clip, "--model", spotter, "--out", tmp_path / f"run{i}")
            for i in (1, 2)]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr[-3000:]
    stem = carphone_clip.stem
    first, second = (np.load(tmp_path / f"run{i}" / f"{stem}_curves.npz") for i in (1, 2))
    assert sorted(first.files) == sorted(second.files) and any(k.startswith("cue__") for k in first.files)
    for key in first.files:  # model and flow-cue curves, bit for bit
        assert np.array_equal(first[key], second[key]), key
    assert (tmp_path / "run1" / f"{stem}.csv").read_text() == (tmp_path / "run2" / f"{stem}.csv").read_text()


def test_a_video_far_from_the_training_rate_gets_a_warning(spotter, tmp_path):
    """issue 29: a 200 fps video given to a spotter trained at 30 fps found the macro and missed the micro without
    a word. The spotter folder records its training videos' rates; spot names both."""
    from spotting.pipeline import rate_warning

    model = damaged_copy(spotter, tmp_path)
    manifest = json.loads((model / "spotter.json").read_text())
    (model / "spotter.json").write_text(json.dumps({**manifest, "training_fps": [29.97, 29.97]}))
    fast = write_mp4(tmp_path / "fast.mp4", read_frames(carphone_video(), range(40)), 200.0)
    proc = run_cli("spotting", "spot", fast, "--model", model, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    warning = next(ln for ln in proc.stderr.splitlines() if "WARNING" in ln and "fps" in ln)
    assert str(fast) in warning and "runs at 200 fps" in warning and "trained on 29.97 fps videos" in warning
    # 25 and 30 fps mix without a word; a spotter folder without the record (older ones) says nothing
    assert rate_warning([29.97, 29.97], 25.0) is None and rate_warning([25.0, 30.0], 40.0) is None
    assert "trained on 25-30 fps" in rate_warning([25.0, 30.0], 60.0)
    assert rate_warning(None, 200.0) is None


def test_spot_on_a_720p_video_decodes_at_a_working_size_and_shows_every_stage(spotter, tmp_path):
    """issue 29: an 8 s 1080p video had not finished the flow cues after 300 s, with nothing shown. Frames whose
    short side exceeds data.faces.face_video.MAX_SHORT_SIDE are decoded at a working size, and decoding, face
    tracking and the flow each show a bar. A real face (the carphone clip, enlarged to 720 px and padded to
    1280x720 as benchmarks/spot.py widens its synthetic face); the 1080p speed is benchmarks/spot.py's."""
    import cv2

    frames = read_frames(carphone_video(), range(40))
    big = np.stack([cv2.resize(f, (880, 720), interpolation=cv2.INTER_CUBIC) for f in frames])
    video = write_mp4(tmp_path / "wide720.mp4", np.pad(big, ((0, 0), (0, 0), (200, 200), (0, 0)), mode="edge"),
                      29.97)
    proc = run_cli("spotting", "spot", video, "--model", spotter, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1280x720 frames decoded at 960x540" in proc.stderr
    for bar in ("decode wide720", "faces wide720", "flow wide720", "heads windows", "spot wide720.mp4"):
        assert bar in proc.stderr, bar
    summary = json.loads((tmp_path / "out" / "wide720.json").read_text())
    assert summary["num_frames"] == 40 and summary["face_track"]["face_fraction"] >= 0.9
    assert read_frames(tmp_path / "out" / "wide720_aligned.mp4").shape[:3] == (40, 160, 160)

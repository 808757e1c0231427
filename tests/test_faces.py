"""Face tracking, alignment and the `python -m data faces` CLI on real video (carphone) and real images."""
from __future__ import annotations

import json

import numpy as np
import pytest

from data.common.cli import run_main
from data.common.errors import ConfigError, DataError
from data.common.video_io import read_frames, write_mp4
from data.faces import landmarks as lmk
from data.faces.align import align_video, alignment_matrices
from data.faces.cli import main as faces_main
from data.faces.track import centred_mean, fill_nearest, load_track, save_track, track_faces

RIGID = [36, 39, 42, 45, 27, 28, 29, 30]  # eye corners and nose: they move with the head, not with expressions


def jitter(aligned: np.ndarray) -> float:
    """Mean frame-to-frame displacement (px) of the rigid points in the crop."""
    return float(np.nanmean(np.linalg.norm(np.diff(aligned[:, RIGID], axis=0), axis=-1)))


def similarity(angle_deg: float, tx: float, ty: float, centre=(256.0, 256.0)) -> np.ndarray:
    import cv2

    matrix = cv2.getRotationMatrix2D(centre, angle_deg, 1.0)
    matrix[:, 2] += (tx, ty)
    return matrix.astype(np.float32)


# --- tracking -------------------------------------------------------------------------------------------------

def test_carphone_track_finds_the_face_in_nearly_every_frame(carphone_track, carphone_frames):
    track = carphone_track
    assert track.num_frames == 120 and track.frame_size == (176, 144)
    assert track.face_fraction >= 0.95
    assert track.landmarks.shape == (120, 68, 2) and track.landmarks.dtype == np.float32
    assert not (track.detected & ~track.found).any()
    assert 0 < track.detected.sum() < track.found.sum()  # detection on a schedule, propagation in between
    found = track.landmarks[track.found]
    assert np.isfinite(found).all() and np.isfinite(track.boxes[track.found]).all()
    assert (found[..., 0] >= -5).all() and (found[..., 0] <= 181).all()
    assert (found[..., 1] >= -5).all() and (found[..., 1] <= 149).all()
    # landmarks are lightly smoothed: close to the raw predictor output
    assert np.nanmean(np.abs(track.landmarks - track.raw_landmarks)) < 1.0


def test_propagated_landmarks_agree_with_detecting_every_frame(carphone_frames, carphone_track):
    every = track_faces(carphone_frames[:40], detect_every=1)
    both = every.found & carphone_track.found[:40]
    assert both.mean() >= 0.95
    gap = np.linalg.norm(every.landmarks[both] - carphone_track.landmarks[:40][both], axis=-1).mean()
    assert gap < 1.5  # px in the 176x144 source; the inter-ocular distance is ~20 px


def test_face_leaving_the_frame_is_flagged_not_faked(carphone_frames):
    grey = np.full((20, 144, 176, 3), 128, np.uint8)
    track = track_faces(np.concatenate([carphone_frames[:30], grey]), max_missed=5)
    assert track.found[:30].all()
    assert not track.found[30:].any()  # the appearance check stops propagation onto the empty frame
    assert np.isnan(track.landmarks[30:]).all()
    assert track.face_fraction == pytest.approx(0.6)


def test_bad_tracking_arguments_are_config_errors(carphone_frames):
    with pytest.raises(ConfigError, match="detect_every"):
        track_faces(carphone_frames[:2], detect_every=0)
    with pytest.raises(DataError, match="uint8"):
        track_faces(carphone_frames[:2].astype(np.float32))


# --- smoothing --------------------------------------------------------------------------------------------------

def test_landmark_smoothing_keeps_a_micro_expression_and_cuts_jitter():
    t = np.arange(60)
    pulse = np.clip(1 - np.abs(t - 30) / 4, 0, 1)  # 7-frame micro-expression: ~0.23 s at 30 fps
    valid = np.ones(60, bool)
    assert centred_mean(pulse[:, None], valid, 3)[30, 0] >= 0.8
    noise = np.random.default_rng(0).normal(0, 1, (5000, 1))
    assert centred_mean(noise, np.ones(5000, bool), 3).std() < 0.7


def test_smoothing_skips_missing_frames_and_fill_takes_the_nearest():
    values = np.arange(8, dtype=np.float32)[:, None] * 10
    valid = np.array([1, 1, 0, 0, 0, 1, 1, 1], bool)
    smoothed = centred_mean(values, valid, 3)
    assert np.isnan(smoothed[2:5]).all()
    assert smoothed[0, 0] == pytest.approx((2 * 0 + 10) / 3)  # edge: only valid neighbours count
    assert smoothed[6, 0] == pytest.approx(60)
    filled = fill_nearest(values, valid)
    assert filled[:, 0].tolist() == [0, 10, 10, 10, 50, 50, 60, 70]
    with pytest.raises(DataError, match="no face"):
        fill_nearest(values, np.zeros(8, bool), "clip.mp4")


def test_fit_similarity_recovers_a_known_transform_and_ignores_blinks(carphone_track):
    src = np.array([[10.0, 20.0], [50.0, 22.0], [31.0, 60.0], [5.0, 5.0]], np.float32)
    truth = similarity(17, 3.5, -8.0, centre=(30.0, 30.0)) * np.float32([[1.3], [1.3]]) + [[0, 0, 2], [0, 0, -1]]
    np.testing.assert_allclose(lmk.fit_similarity(src, lmk.transform_points(src, truth)), truth, atol=1e-3)
    with pytest.raises(ValueError, match="degenerate"):
        lmk.fit_similarity(np.zeros((3, 2)), lmk.canonical_points())
    blink = carphone_track.landmarks[0].copy()
    blink[[37, 38, 43, 44]] = blink[[41, 40, 47, 46]]  # upper lids down onto the lower lids
    np.testing.assert_allclose(lmk.rigid_anchor_points(blink), lmk.rigid_anchor_points(carphone_track.landmarks[0]))


# --- alignment ------------------------------------------------------------------------------------------------

def test_carphone_alignment_is_stable_and_removes_head_motion(carphone_frames, carphone_track):
    crops, aligned, matrices = align_video(carphone_frames, carphone_track, size=160, reference="frame")
    assert crops.shape == (120, 160, 160, 3) and crops.dtype == np.uint8
    assert aligned.shape == (120, 68, 2) and matrices.shape == (120, 2, 3)
    per_frame = jitter(aligned)
    _, aligned_first, _ = align_video(carphone_frames, carphone_track, size=160, reference="first")
    assert per_frame < 1.5  # px in the 160 crop (the face is upscaled ~3.5x from the source)
    assert per_frame < 0.6 * jitter(aligned_first)  # the per-video reference keeps the head motion
    # anchors sit where a least-squares similarity puts them: the best further fit to canonical is ~identity
    # (not an exact match: three points of a real face do not have the canonical proportions)
    anchors = np.stack([lmk.rigid_anchor_points(a) for a in aligned[carphone_track.found]]).mean(0)
    residual = lmk.fit_similarity(anchors, lmk.canonical_points(160))
    np.testing.assert_allclose(residual[:, :2], np.eye(2), atol=0.03)
    np.testing.assert_allclose(residual[:, 2], 0, atol=3.0)


def test_alignment_reference_and_size_choices(carphone_track):
    first = alignment_matrices(carphone_track, size=112, reference="first")
    median = alignment_matrices(carphone_track, size=112, reference="median")
    assert (first == first[0]).all() and (median == median[0]).all()
    assert not np.allclose(first[0], median[0])
    with pytest.raises(ConfigError, match="reference"):
        alignment_matrices(carphone_track, reference="mean")
    with pytest.raises(ConfigError, match="size"):
        alignment_matrices(carphone_track, size=161)


def test_alignment_undoes_a_known_rotation_and_shift():
    import cv2
    from skimage.data import astronaut

    image = astronaut()
    moves = [similarity(0, 0, 0), similarity(8, 12, -8), similarity(-10, -10, 14), similarity(5, 20, 10)]
    frames = np.stack([cv2.warpAffine(image, m, (512, 512), borderMode=cv2.BORDER_REFLECT) for m in moves])
    track = track_faces(frames, detect_every=1, smooth=1, box_smooth=1)
    assert track.found.all()
    for move, landmarks in zip(moves, track.landmarks):  # tracking follows the motion
        assert np.linalg.norm(landmarks - lmk.transform_points(track.landmarks[0], move), axis=1).mean() < 2.0
    crops, aligned, matrices = align_video(frames, track, reference="frame", smooth=1)
    for k, move in enumerate(moves):  # the true face points land where frame 0 put them
        truth = lmk.transform_points(lmk.transform_points(track.landmarks[0], move), matrices[k])
        assert np.linalg.norm(truth - aligned[0], axis=1).mean() < 2.0
        centre = (slice(40, 120), slice(40, 120))
        assert np.abs(crops[k][centre].astype(int) - crops[0][centre]).mean() < 12


# --- saving, loading, bad input ------------------------------------------------------------------------------

def test_track_save_load_round_trip_and_damaged_file(tmp_path, carphone_track):
    path = save_track(tmp_path / "car.npz", carphone_track, matrices=np.zeros((120, 2, 3), np.float32))
    track, extra = load_track(path)
    np.testing.assert_array_equal(track.landmarks, carphone_track.landmarks)
    np.testing.assert_array_equal(track.found, carphone_track.found)
    assert track.frame_size == carphone_track.frame_size and extra["matrices"].shape == (120, 2, 3)
    np.savez(tmp_path / "bad.npz", landmarks=track.landmarks)
    with pytest.raises(DataError, match="bad.npz: raw_landmarks"):
        load_track(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(DataError, match="junk.npz"):
        load_track(tmp_path / "junk.npz")


def write_text_video(path):
    path.write_text("this is a text file, not a video\n")
    return path


def write_zero_frame_video(path):
    """An mp4 with a video stream header and no frames."""
    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    return path


def write_noise_video(path, frames=10):
    rng = np.random.default_rng(0)
    return write_mp4(path, rng.integers(0, 256, (frames, 96, 128, 3), dtype=np.uint8), 30)


def test_bad_videos_raise_data_errors_naming_the_file(tmp_path):
    for path in (write_text_video(tmp_path / "notes.mp4"), write_zero_frame_video(tmp_path / "empty.mp4")):
        with pytest.raises(DataError, match=path.name):
            track_faces(path)


def test_video_of_noise_is_a_flagged_result_not_a_crash(tmp_path):
    track = track_faces(write_noise_video(tmp_path / "noise.mp4"))
    assert track.num_frames == 10 and track.face_fraction == 0.0 and np.isnan(track.landmarks).all()
    with pytest.raises(DataError, match="noise.mp4.*no face"):
        align_video(tmp_path / "noise.mp4", track)


@pytest.fixture
def video_folder(tmp_path, carphone_frames):
    folder = tmp_path / "videos"
    (folder / "s01").mkdir(parents=True)
    write_mp4(folder / "s01" / "car.mp4", carphone_frames[:30], 29.97)
    write_text_video(folder / "notes.mp4")
    write_zero_frame_video(folder / "empty.mp4")
    write_noise_video(folder / "noise.mp4")
    return folder


def test_cli_continues_past_bad_files_and_skips_finished_work(video_folder, tmp_path, capsys, caplog):
    out = tmp_path / "faces"
    assert faces_main([str(video_folder), "--out", str(out), "--size", "96"]) == 1
    printed = capsys.readouterr().out
    assert "1 done" in printed and "1 without a face" in printed and "2 failed" in printed
    assert "failed: notes" in printed and "failed: empty" in printed and "no face: noise" in printed
    summary = json.loads((out / "s01__car.json").read_text())
    assert summary["status"] == "ok" and summary["face_fraction"] >= 0.95 and summary["num_frames"] == 30
    track, extra = load_track(out / "s01__car.npz")
    assert extra["aligned_landmarks"].shape == (30, 68, 2) and extra["matrices"].shape == (30, 2, 3)
    assert read_frames(out / "s01__car_aligned.mp4").shape == (30, 96, 96, 3)
    noise = json.loads((out / "noise.json").read_text())
    assert noise["status"] == "no_face" and noise["face_fraction"] == 0.0
    assert not list(out.glob("notes*")) and not list(out.glob("empty*"))

    stamp = (out / "s01__car.json").stat().st_mtime_ns
    (out / "noise.json").unlink()  # as if interrupted before the summary: that video is redone
    caplog.set_level("INFO", logger="data.faces.cli")
    assert faces_main([str(video_folder), "--out", str(out), "--size", "96"]) == 1
    assert "s01__car: already done" in caplog.text
    assert "1 skipped" in capsys.readouterr().out
    assert (out / "s01__car.json").stat().st_mtime_ns == stamp
    assert (out / "noise.json").is_file()

    assert faces_main([str(video_folder / "s01" / "car.mp4"), "--out", str(out), "--size", "128",
                       "--reference", "frame", "--no-video"]) == 0  # new parameters: redone
    assert json.loads((out / "car.json").read_text())["params"]["reference"] == "frame"


def test_cli_single_bad_file_is_a_one_line_error(video_folder, tmp_path, capsys):
    assert run_main(faces_main, [str(video_folder / "notes.mp4"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "notes.mp4" in err and "not a decodable video" in err
    assert run_main(faces_main, [str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert run_main(faces_main, [str(video_folder), "--out", str(tmp_path / "o"), "--size", "161"]) == 2
    assert "size" in capsys.readouterr().err

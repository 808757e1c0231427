"""data.faces.face_video: one decode and one face track per video, on first use; large frames at a working size;
the track cached between runs and refused when it does not fit the frames."""
from __future__ import annotations

import numpy as np
import pytest

from data.common.assets import carphone_video
from data.common.errors import DataError
from data.common.video_io import read_frames, write_mp4
from data.faces.face_video import MAX_SHORT_SIDE, FaceVideo, working_size


def test_working_size_keeps_small_frames_and_shrinks_large_ones_to_even_sides():
    assert working_size(640, 360, MAX_SHORT_SIDE) == (640, 360)
    assert working_size(1920, 1080, MAX_SHORT_SIDE) == (960, 540)
    assert working_size(2040, 1088, 540) == (1012, 540)
    assert working_size(1920, 1080, None) == (1920, 1080)


@pytest.fixture(scope="module")
def large_video(tmp_path_factory):
    """The carphone face scaled 6x (a 1056x864 frame, short side past MAX_SHORT_SIDE), 20 frames."""
    import cv2

    frames = read_frames(carphone_video(), range(20))
    big = np.stack([cv2.resize(f, (176 * 6, 144 * 6), interpolation=cv2.INTER_LINEAR) for f in frames])
    return write_mp4(tmp_path_factory.mktemp("large") / "large.mp4", big, 30.0)


def test_large_frames_are_decoded_and_tracked_at_the_working_size(large_video, tmp_path):
    video = FaceVideo(large_video, track_cache=tmp_path / "track.npz")
    assert video.info["width"] == 1056 and video.frames.shape == (20, 540, 660, 3)
    track = video.track
    assert track.frame_size == (660, 540) and track.face_fraction == 1.0
    # the face is where the shrunk frame shows it: the carphone's landmarks scaled by 6 x 540/864 (dlib fits a
    # 3.75x larger face a few pixels differently: its inter-ocular distance here is ~100 px)
    small = FaceVideo(carphone_video()).track.landmarks[:20] * 6 * 540 / 864
    error = np.abs(track.landmarks - small)
    assert error.mean() < 3.0 and error.max() < 12.0, (error.mean(), error.max())


def test_a_cached_track_is_reused_and_one_of_another_size_is_not(large_video, tmp_path):
    cache = tmp_path / "track.npz"
    first = FaceVideo(large_video, track_cache=cache).track
    again = FaceVideo(large_video, track_cache=cache)
    assert again._cached_track() is not None and np.array_equal(again.track.landmarks, first.landmarks)
    full = FaceVideo(large_video, track_cache=cache, max_short_side=None)  # another working size: track again
    assert full._cached_track() is None and full.track.frame_size == (1056, 864)


def test_a_video_or_frames_is_needed_and_a_bad_file_is_named(tmp_path):
    with pytest.raises(DataError, match="needs a video path or frames"):
        FaceVideo()
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(DataError, match="notes.mp4"):
        FaceVideo(bad).frames

"""Region boxes from the face tracked through the video (data.flow.curves tracked sources, spotting/baseline.py)."""
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from data.common.config import load_config
from data.common.errors import ConfigError
from data.common.tables import read_predictions, write_intervals, write_videos
from data.common.video_io import read_frames, write_mp4
from data.faces import landmarks as lmk
from data.faces.track import load_track
from data.flow import curves
from data.flow import regions as fl
from spotting import baseline as bl
from spotting.cli import baseline as baseline_cli

CONFIG = "configs/spotting/baseline.yaml"
OFFSET = np.array([48.0, 24.0])  # where the 160x160 face clip sits in the larger frame
HEAD = np.array([0.1, 0.0])  # head drift, px per frame
FRAMES, FACELESS, SMILE = 60, 6, (20, 34)  # the last FACELESS frames show no face


@pytest.fixture(scope="module")
def moved_face_clip(tmp_path_factory, face_clip_factory):
    """A 256x208 video: the test face (smiling over SMILE) away from where the canonical face would be,
    drifting, with a face-free grey tail."""
    root = tmp_path_factory.mktemp("moved_face")
    clip = face_clip_factory(root / "face.mp4", FRAMES, [(*SMILE, "mouth", 3.0)], head=tuple(map(float, HEAD)),
                             noise=1.5)
    face = read_frames(clip)
    frames = np.full((FRAMES, 208, 256, 3), 128, np.uint8)
    x, y = OFFSET.astype(int)
    frames[:FRAMES - FACELESS, y:y + 160, x:x + 160] = face[:FRAMES - FACELESS]
    return write_mp4(root / "videos" / "moved.mp4", frames, 30.0)


@pytest.fixture(scope="module")
def tracked_curves(moved_face_clip, tmp_path_factory):
    """(folder, video_curves result): k=6 curves of the moved face with landmarks="tracked"."""
    root = tmp_path_factory.mktemp("tracked")
    return root, curves.video_curves(moved_face_clip, root / "curves" / "moved.npz", [6], landmarks="tracked")


def test_tracked_regions_sit_on_the_face_and_see_its_smile(moved_face_clip, tracked_curves, aligned_face_landmarks,
                                                           caplog):
    root, result = tracked_curves
    track, _ = load_track(root / "faces" / "moved.npz")  # cached beside the curves folder
    assert track.found[:FRAMES - FACELESS].mean() > 0.9 and not track.found[FRAMES - FACELESS:].any()

    # The median tracked set is this face where it is: the aligned landmarks moved by the offset and the
    # median head drift (frames 0..53 -> 26.5 frames of drift).
    with caplog.at_level(logging.INFO, logger="data.flow.curves"):
        points = curves.tracked_landmarks(moved_face_clip, root / "faces" / "moved.npz")
    assert "no face in 10.0% of 60 frames" in caplog.text
    expected = aligned_face_landmarks + OFFSET + HEAD * (FRAMES - FACELESS - 1) / 2
    assert np.linalg.norm(points - expected, axis=1).mean() < 2.5
    x0, y0, x1, y1 = lmk.region_boxes(points, (256, 208))["mouth"]
    mouth = track.landmarks[track.found][:, lmk.MOUTH]  # every frame, smile included
    assert (mouth[..., 0] >= x0).all() and (mouth[..., 0] < x1).all()
    assert (mouth[..., 1] >= y0).all() and (mouth[..., 1] < y1).all()

    # The mouth curve peaks on the smile; the brows stay quiet (pairs that reach the blank tail left out).
    magnitude = result["curves"][6][fl.FEATURES.index("flow")]
    mouth_curve = magnitude[:, fl.REGIONS.index("mouth")]
    usable = FRAMES - FACELESS - 6
    peak = int(np.argmax(mouth_curve[:usable]))
    assert SMILE[0] - 6 <= peak <= SMILE[1]
    pairs = np.arange(usable)
    still = (pairs + 6 < SMILE[0]) | (pairs > SMILE[1])  # pairs that see no smile
    assert mouth_curve[peak] > 4 * np.median(mouth_curve[:usable][still])
    assert magnitude[:usable, fl.REGIONS.index("brows")].max() < 0.5 * mouth_curve[peak]


def test_cached_track_is_reused_and_per_frame_regions_work(moved_face_clip, tracked_curves, tmp_path, monkeypatch):
    shutil.copytree(tracked_curves[0], tmp_path, dirs_exist_ok=True)
    curves_path = tmp_path / "curves" / "moved.npz"
    stamp = (tmp_path / "faces" / "moved.npz").stat().st_mtime_ns
    monkeypatch.setattr("data.faces.track.track_faces", lambda *a, **k: pytest.fail("face re-tracked"))
    # A new gap needs flow again, but not tracking.
    again = curves.video_curves(moved_face_clip, curves_path, [2, 6], landmarks="tracked")
    assert sorted(again["curves"]) == [2, 6] and again["params"]["landmarks"] == "tracked"
    # Per-frame boxes come from the same cached track; they are other curves, cached separately.
    per_frame = curves.video_curves(moved_face_clip, tmp_path / "curves_frame" / "moved.npz", [6],
                                      landmarks="tracked-frame", track_path=tmp_path / "faces" / "moved.npz")
    assert (tmp_path / "faces" / "moved.npz").stat().st_mtime_ns == stamp
    mouth = per_frame["curves"][6][fl.FEATURES.index("flow"), :, fl.REGIONS.index("mouth")]
    assert SMILE[0] - 6 <= int(np.argmax(mouth[:FRAMES - FACELESS - 6])) <= SMILE[1]
    assert not np.allclose(mouth, again["curves"][6][fl.FEATURES.index("flow"), :, fl.REGIONS.index("mouth")])


def test_baseline_with_tracked_regions_spots_and_reuses_its_caches(moved_face_clip, tmp_path, monkeypatch):
    data = moved_face_clip.parent.parent
    write_videos(pd.DataFrame([{"subject": "s1", "video": "moved", "path": "videos/moved.mp4", "fps": 30.0,
                                "num_frames": FRAMES}]), data / "videos.csv")
    write_intervals(pd.DataFrame([{"subject": "s1", "video": "moved", "onset": SMILE[0], "apex": sum(SMILE) // 2,
                                   "offset": SMILE[1], "type": "micro", "emotion": ""}]), data / "intervals.csv")
    out = tmp_path / "out"
    # Both types at k=6 (the clip is 2 s long): the baseline reads gaps 6 and 2 only.
    args = ["--config", CONFIG, "--data", str(data), "--out", str(out), "landmarks=tracked", "workers=1",
            "macro.mean_duration_s=0.37"]
    assert baseline_cli.main(args) == 0
    assert [p.name for p in (out / "curves").iterdir()] == ["moved.npz"]
    assert (out / "faces" / "moved.npz").is_file()
    spotted = read_predictions(out / "predictions.csv")
    assert ((spotted["onset"] <= SMILE[1]) & (spotted["offset"] >= SMILE[0])).any()

    monkeypatch.setattr("data.faces.track.track_faces", lambda *a, **k: pytest.fail("face re-tracked"))
    monkeypatch.setattr("data.flow.regions.region_curves", lambda *a, **k: pytest.fail("flow recomputed"))
    assert baseline_cli.main(args + ["micro.p=0.5"]) == 0


def test_real_carphone_video_gets_tracked_region_cues_for_every_pair(tmp_path):
    from data.common.assets import carphone_video

    ks = [1, 6]
    result = curves.video_curves(carphone_video(), tmp_path / "curves" / "carphone.npz", ks,
                                   landmarks="tracked-frame")
    track, _ = load_track(tmp_path / "faces" / "carphone.npz")
    assert track.num_frames == result["num_frames"] == 120 and track.face_fraction > 0.9
    for k in ks:
        cues = result["curves"][k]
        assert cues.shape == (len(fl.FEATURES), 120, len(fl.REGIONS))
        assert np.isfinite(cues).all() and (cues[:, :120 - k] > 0).all() and (cues[:, 120 - k:] == 0).all()


def test_config_default_is_per_frame_tracking_and_rejects_an_unknown_source():
    # The YAML and the dataclass agree (per-frame tracked boxes beat canonical ones on two synthetic sets).
    assert load_config(CONFIG, bl.BaselineConfig).landmarks == bl.BaselineConfig().landmarks == "tracked-frame"
    with pytest.raises(ConfigError, match="landmarks"):
        load_config(CONFIG, bl.BaselineConfig, ["landmarks=dlib"])
    assert load_config(CONFIG, bl.BaselineConfig, ["landmarks=canonical"]).landmarks == "canonical"

"""The synthetic expressive-face benchmark: ground truth, distractors, determinism, resume, config errors."""
import json
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skimage_data

from data.common.cli import run_main
from data.common.errors import ConfigError, DataError
from data.common.tables import read_intervals, read_videos
from data.common.video_io import read_frames, video_info
from data.faces import landmarks as lm
from data.synthetic.faces import ACTION_UNITS, AU_INDEX, FIELD_STEP, build_identity
from data.synthetic.generate import generate, load_synthetic_config, neutral_landmarks, render_video, video_ids
from data.synthetic.motion import EMOTION_AUS, rise_decay

TINY = ["subjects=2", "videos_per_subject=2", "duration_s=8", "events.macro_per_video=[1,1]",
        "events.micro_per_video=[1,2]", "events.macro_duration_s=[0.6,2.0]"]
# No noise, head motion, light changes or distractors: what changes between two frames is the expression alone.
CLEAN = ["noise_sigma=[0,0]", "head.drift_px=0", "head.drift_deg=0", "head.drift_scale=0", "head.min_moves=0",
         "head.moves_per_minute=[0,0]", "light.gain_drift=0", "light.gradient_drift=0", "blinks.min_count=0",
         "blinks.per_minute=[0,0]", "talking.segments_per_video=[0,0]", "talking.min_count=0"]
GROUPS = {"brows": ("right_brow", "left_brow"), "eyes": ("right_eye", "left_eye"), "mouth": ("mouth",),
          "nose": ("nose",)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    cfg = load_synthetic_config(None, TINY)
    out = generate(cfg, tmp_path_factory.mktemp("synth") / "ds", progress=False)
    return cfg, out


def _metas(out, cfg):
    return [json.loads((out / "meta" / f"{vid}.json").read_text()) for _, _, vid in video_ids(cfg)]


def test_same_seed_same_frames_and_truth():
    cfg = load_synthetic_config(None, TINY + ["size=96"])
    frames_a, meta_a = render_video(cfg, 1, 0)
    frames_b, meta_b = render_video(cfg, 1, 0)
    assert np.array_equal(frames_a, frames_b)
    assert meta_a == meta_b
    frames_c, meta_c = render_video(load_synthetic_config(None, TINY + ["size=96", "seed=5"]), 1, 0)
    assert meta_c["events"] != meta_a["events"]
    assert not np.array_equal(frames_c, frames_a)


def test_ground_truth_within_bounds(dataset):
    cfg, out = dataset
    videos = read_videos(out / "videos.csv")
    truth = read_intervals(out / "intervals.csv", num_frames=dict(zip(videos["video"], videos["num_frames"])))
    assert load_synthetic_config(out / "config.yaml") == cfg  # the saved config reproduces the dataset
    assert sorted(videos["video"]) == [vid for _, _, vid in video_ids(cfg)]
    assert list(videos["subject"].unique()) == ["s01", "s02"]
    assert set(truth["video"]) == set(videos["video"])  # every video holds events
    length = truth["offset"] - truth["onset"] + 1
    micro, macro = truth["type"] == "micro", truth["type"] == "macro"
    assert micro.any() and macro.any()
    assert length[micro].between(4, 15).all(), length[micro].tolist()
    assert length[macro].between(15, 120).all(), length[macro].tolist()
    assert ((truth["onset"] < truth["apex"]) & (truth["apex"] < truth["offset"])).all()
    assert set(truth["emotion"]) <= set(EMOTION_AUS)
    gap = int(cfg.events.min_gap_s * cfg.fps) - 1
    for _, rows in truth.sort_values("onset").groupby("video"):
        assert (rows["onset"].to_numpy()[1:] - rows["offset"].to_numpy()[:-1] > gap).all()
    for _, row in truth.iterrows():  # apex is the frame of peak amplitude
        assert int(np.argmax(rise_decay(row["onset"], row["apex"], row["offset"], 400))) == row["apex"]


def test_every_video_has_every_distractor(dataset):
    cfg, out = dataset
    for meta in _metas(out, cfg):
        assert meta["blinks"] and meta["blink_frames"] and meta["talking"] and meta["head_moves"]
        assert np.ptp(meta["head"]["tx"]) > 0.5 and np.ptp(meta["head"]["rot_deg"]) > 0.2
        assert np.ptp(meta["illumination"]["gain"]) > 0.01 and np.ptp(meta["illumination"]["gx"]) > 0.01
        assert meta["noise_sigma"] > 0 and meta["crf"] == cfg.crf
        assert len(meta["head"]["tx"]) == meta["num_frames"]
        for event in meta["events"]:  # distractors stay out of the event's own region
            span = range(event["onset"], event["offset"] + 1)
            if {"eyes", "brows"} & set(event["regions"]):
                assert not any(b["onset"] in span or b["offset"] in span for b in meta["blinks"])
            if "mouth" in event["regions"]:
                assert not any(s["start"] <= event["offset"] and event["onset"] <= s["end"] for s in meta["talking"])


def test_videos_decode_to_the_table(dataset):
    cfg, out = dataset
    videos = read_videos(out / "videos.csv")
    for _, row in videos.iterrows():
        info = video_info(row["path"])
        assert info["num_frames"] == row["num_frames"] == round(cfg.duration_s * cfg.fps)
        assert (info["height"], info["width"]) == (cfg.size, cfg.size)
        assert info["fps"] == pytest.approx(cfg.fps, rel=1e-3)
    landmarks = neutral_landmarks(out, "s01_v01")
    assert landmarks.shape == (68, 2)
    # The face sits on the canonical points, so the fixed canonical boxes fit.
    assert np.abs(lm.anchor_points(landmarks) - lm.canonical_points(cfg.size)).max() < 0.15 * cfg.size


def _region_change(a, b, boxes, group):
    diff = np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(-1)
    return np.mean([diff[y0:y1, x0:x1].mean() for x0, y0, x1, y1 in (boxes[p] for p in GROUPS[group])])


def test_deformation_at_apex_is_in_the_event_region():
    cfg = load_synthetic_config(None, TINY + CLEAN + ["events.micro_per_video=[2,2]"])
    checked = {"macro": 0, "micro": 0}
    for subject in range(2):
        frames, meta = render_video(cfg, subject, 0)
        boxes = lm.region_boxes(np.asarray(meta["identity"]["neutral_landmarks"]), (cfg.size, cfg.size))
        for e in meta["events"]:
            change = {g: _region_change(frames[e["apex"]], frames[e["onset"]], boxes, g) for g in GROUPS}
            near = max(change[g] for g in e["regions"])
            far = min(change[g] for g in GROUPS if g not in e["regions"])
            assert near > 3 * far and near > (0.3 if e["type"] == "micro" else 1.0), (e, near, far)
            checked[e["type"]] += 1
    assert checked["macro"] >= 2 and checked["micro"] >= 4


def test_micro_smaller_than_macro_and_warp_never_folds():
    cfg = load_synthetic_config(None, TINY)
    identity = build_identity(cfg, 0)
    biggest = cfg.events.macro_amplitude[1] * 1.2  # events jitter AU weights by up to 20 %
    for emotion, aus in EMOTION_AUS.items():
        field = sum(w * biggest * identity.fields[AU_INDEX[name]] for name, w in aus.items())
        grad = np.stack(np.gradient(field, axis=(0, 1)), -1) / FIELD_STEP
        assert np.abs(grad).max() < 0.9, emotion  # a backward warp folds once |dD/dx| reaches 1
    assert identity.fields.shape[0] == len(ACTION_UNITS)
    micro_px = cfg.events.micro_amplitude[1] * identity.iod
    assert micro_px < 3.0 < cfg.events.macro_amplitude[0] * identity.iod


def test_200fps_gives_more_frames_for_the_same_durations():
    base = TINY[:2] + ["subjects=1", "videos_per_subject=1", "duration_s=6", "size=64",
                       "events.macro_per_video=[1,1]", "events.micro_per_video=[1,1]",
                       "events.macro_duration_s=[0.6,1.5]"]
    slow = render_video(load_synthetic_config(None, base), 0, 0)[1]
    fast_frames, fast = render_video(load_synthetic_config(None, base + ["fps=200"]), 0, 0)
    assert len(fast_frames) == fast["num_frames"] == 1200 and slow["num_frames"] == 180
    assert [e["emotion"] for e in fast["events"]] == [e["emotion"] for e in slow["events"]]
    for a, b in zip(slow["events"], fast["events"]):
        len_slow, len_fast = a["offset"] - a["onset"] + 1, b["offset"] - b["onset"] + 1
        assert len_fast / 200 == pytest.approx(len_slow / 30, abs=1.5 / 30)
        assert b["onset"] / 200 == pytest.approx(a["onset"] / 30, abs=1 / 30)
    micro = [b for b in fast["events"] if b["type"] == "micro"][0]
    assert micro["offset"] - micro["onset"] + 1 > 15  # at 200 fps a micro-expression spans many frames


def test_resume_skips_finished_videos(tmp_path):
    small = ["subjects=1", "videos_per_subject=2", "duration_s=5", "size=64", "events.macro_per_video=[1,1]",
             "events.micro_per_video=[1,1]", "events.macro_duration_s=[0.6,1.0]"]
    cfg = load_synthetic_config(None, small)
    out = generate(cfg, tmp_path / "ds", progress=False)
    first = {p.name: p.stat().st_mtime_ns for p in (out / "videos").glob("*.mp4")}
    meta_v2 = (out / "meta" / "s01_v02.json").read_text()
    (out / "meta" / "s01_v02.json").unlink()  # as if the run died before finishing this video
    generate(cfg, out, progress=False)
    again = {p.name: p.stat().st_mtime_ns for p in (out / "videos").glob("*.mp4")}
    assert again["s01_v01.mp4"] == first["s01_v01.mp4"]
    assert again["s01_v02.mp4"] != first["s01_v02.mp4"]
    assert (out / "meta" / "s01_v02.json").read_text() == meta_v2
    assert len(read_frames(out / "videos" / "s01_v02.mp4")) == 150
    changed = load_synthetic_config(None, small + ["seed=9"])
    with pytest.raises(ConfigError, match="different config"):
        generate(changed, out, progress=False)
    generate(changed, out, force=True, progress=False)
    assert (out / "videos" / "s01_v01.mp4").stat().st_mtime_ns != first["s01_v01.mp4"]
    assert json.loads((out / "meta" / "s01_v01.json").read_text())["events"] != \
        json.loads(meta_v2)["events"]


def test_bad_config_is_rejected(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("subjects: 2\nevents:\n  micro_per_vid: [1, 2]\n")
    with pytest.raises(ConfigError, match="micro_per_vid"):
        load_synthetic_config(bad)
    with pytest.raises(ConfigError, match="events.micro_duration_s"):
        load_synthetic_config(None, ["events.micro_duration_s=[0.2,0.8]"])
    with pytest.raises(ConfigError, match="identity.sources"):
        load_synthetic_config(None, ["identity.sources=[no_such_face.png]"])
    # too short: the error states the shortest duration that works (issue 29), and that one is accepted
    demo = "configs/data/synthetic_demo.yaml"
    with pytest.raises(ConfigError, match=r"10.0 s of events .*the shortest that works is 12.5 s"):
        load_synthetic_config(demo, ["duration_s=12"])
    assert load_synthetic_config(demo, ["duration_s=12.5"]).duration_s == 12.5
    with pytest.raises(ConfigError, match=r"duration_s >= 13.8"):
        load_synthetic_config(None, ["duration_s=12.5"])  # the defaults allow longer macro events
    assert load_synthetic_config(None, ["duration_s=13.8"]).duration_s == 13.8
    no_face = Path(skimage_data.__file__).parent / "coffee.png"
    with pytest.raises(DataError, match="no face"):
        build_identity(load_synthetic_config(None, [f"identity.sources=[{no_face}]"]), 0)
    from data.synthetic.cli import main

    assert run_main(main, ["--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "micro_per_vid" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_writes_dataset_and_region_plot(tmp_path):
    from data.synthetic.cli import main
    from data.synthetic.plot import video_visibility

    args = ["--out", str(tmp_path / "ds"), "--plot", "s01_v01", "--no-progress", "size=96", "subjects=1",
            "videos_per_subject=1", "duration_s=8", "events.macro_per_video=[1,1]", "events.micro_per_video=[2,2]",
            "events.macro_duration_s=[0.6,2.0]"]
    assert run_main(main, args) == 0
    png = tmp_path / "ds" / "plots" / "s01_v01_regions.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    rows = video_visibility(tmp_path / "ds", "s01_v01")
    kinds = {r["kind"] for r in rows}
    assert {"macro", "micro", "blink", "talking"} <= kinds
    macro = max(r["ratio"] for r in rows if r["kind"] == "macro")
    micro = max(r["ratio"] for r in rows if r["kind"] == "micro")
    assert macro > 3.0 and micro > 1.5, rows  # events stand above the region's typical motion, micro ones faintly

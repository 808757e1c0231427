"""spotting/intervals.py, spotting/baseline.py (+ CLI) and spotting/plots.py."""
import json

import numpy as np
import pandas as pd
import pytest

from data.common.config import load_config
from data.common.errors import ConfigError, DataError
from data.common.tables import read_predictions, write_intervals, write_videos
from spotting import baseline as bl
from spotting import intervals as iv
from spotting.cli import baseline as baseline_cli
from spotting.evaluation.metric import evaluate

CONFIG = "configs/spotting/baseline.yaml"


def bump(n, centre, half, height=1.0):
    x = np.arange(n)
    return height * np.clip(1 - np.abs(x - centre) / half, 0, None)


def test_smooth_keeps_constants_and_spreads_spikes():
    np.testing.assert_allclose(iv.smooth(np.full(10, 2.0), 5), 2.0)
    spike = np.zeros(11)
    spike[5] = 3.0
    out = iv.smooth(spike, 3)
    np.testing.assert_allclose(out[4:7], 1.0)
    assert out.sum() == pytest.approx(3.0) and iv.smooth(spike, 1)[5] == 3.0


def test_threshold_peaks_and_fixed_intervals():
    curve = bump(100, 20, 5) + bump(100, 60, 5, 0.5) + 0.01
    assert iv.softnet_threshold(curve, 0.0) == pytest.approx(curve.mean())
    assert iv.softnet_threshold(curve, 1.0) == pytest.approx(curve.max())
    assert list(iv.detect_peaks(curve, iv.softnet_threshold(curve, 0.3), distance=10)) == [20, 60]
    assert list(iv.detect_peaks(curve, iv.softnet_threshold(curve, 0.7), distance=10)) == [20]
    found = iv.peak_intervals(curve, [20, 98], half_width=6, kind="micro")
    assert [(i.onset, i.apex, i.offset) for i in found] == [(14, 20, 26), (92, 98, 99)]
    assert found[0].score == pytest.approx(curve[20]) and found[0].type == "micro"


def test_half_max_extent_follows_a_wide_event():
    curve = bump(200, 100, 40)  # 80 frames above zero, half maximum at +-20
    [wide] = iv.peak_intervals(curve, [100], half_width=6, kind="macro", extent="half_max")
    assert (wide.onset, wide.offset) == (80, 120)
    [capped] = iv.peak_intervals(curve, [100], half_width=6, kind="macro", extent="half_max", max_half=10)
    assert (capped.onset, capped.offset) == (90, 110)
    with pytest.raises(ValueError):
        iv.peak_intervals(curve, [100], 6, "macro", extent="guess")


def test_nms_iou_and_type_resolution():
    a = iv.Interval(0, 5, 10, "macro", 0.9)
    b = iv.Interval(2, 6, 12, "macro", 0.5)
    c = iv.Interval(30, 32, 34, "macro", 0.1)
    assert iv.iou(a, b) == pytest.approx(9 / 13)
    assert iv.iou(a, c) == 0.0
    assert iv.nms([b, c, a], 0.5) == [a, c]
    inside = iv.Interval(3, 5, 8, "micro", 2.0)
    half_out = iv.Interval(8, 10, 13, "micro", 2.0)
    apart = iv.Interval(50, 52, 54, "micro", 2.0)
    assert iv.resolve_types([a], [inside, half_out, apart], max_inside=0.5) == [a, half_out, apart]


def test_spot_curve_and_to_frame():
    curve = bump(120, 30, 6) + bump(120, 90, 6, 0.9)
    found = iv.spot_curve(curve, half_width=6, p=0.5, kind="micro", smooth_window=3)
    assert [(i.onset, i.apex, i.offset) for i in found] == [(24, 30, 36), (84, 90, 96)]
    df = iv.to_frame(found, "s01", "s01_v1")
    assert list(df["type"]) == ["micro", "micro"] and list(df["onset"]) == [24, 84]
    assert len(iv.to_frame([], "s01", "v")) == 0


def test_apex_score_prefers_transients_over_steps():
    n, k = 100, 6
    m = np.zeros(n)  # pair motion m[i] = |x[i+k] - x[i]|
    x = bump(n + k, 30, 6) + (np.arange(n + k) >= 70)  # an expression at 30, a lasting step at 70
    m = np.abs(x[k:k + n] - x[:n])
    apex = bl.frame_score(m, k, n, "apex")
    assert abs(int(np.argmax(apex)) - 30) <= 1
    assert apex[60:80].max() < 0.05  # the step moves in but never back out
    forward = bl.frame_score(m, k, n, "forward")
    assert forward[60:80].max() == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        bl.frame_score(m, k, n, "median")


def test_monotonicity_suppresses_back_and_forth_motion():
    k, hop, n = 6, 2, 200
    t = np.arange(n + k)
    ramp = np.clip((t - 20) / 6, 0, 1)  # an expression's onset: one way, 1 unit in 6 frames
    talk = 0.5 * (1 - np.cos(np.pi * (t - 100) / 2)) * ((t >= 100) & (t < 140))  # open/close every 4 frames
    ratios = {}
    for name, x in (("ramp", ramp), ("talk", talk)):
        m_k, m_hop = np.abs(x[k:k + n] - x[:n]), np.abs(x[hop:hop + n] - x[:n])
        ratio = bl.monotonicity(m_k, m_hop, hop, k // hop)
        assert ratio.min() >= 0 and ratio.max() <= 1
        ratios[name] = ratio[m_k > 0.5]
    assert ratios["ramp"].min() > 0.99
    # Only the first opening and the last closing of a talking bout are one-way; the bulk is 1/3.
    assert np.median(ratios["talk"]) == pytest.approx(1 / 3, abs=1e-3)


def test_config_rejects_bad_values(tmp_path):
    cfg = load_config(CONFIG, bl.BaselineConfig)
    assert bl.type_k(cfg, "micro", 30) == 6 and bl.type_k(cfg, "macro", 30) == 18
    with pytest.raises(ConfigError, match="micro.regions"):
        load_config(CONFIG, bl.BaselineConfig, ["micro.regions=[nose]"])
    with pytest.raises(ConfigError, match="macro.p"):
        load_config(CONFIG, bl.BaselineConfig, ["macro.p=1.5"])
    with pytest.raises(ConfigError, match="method"):
        load_config(CONFIG, bl.BaselineConfig, ["method=sift"])
    with pytest.raises(ConfigError, match="micro.hops"):
        load_config(CONFIG, bl.BaselineConfig, ["micro.hops=0"])
    assert bl.needed_ks(load_config(CONFIG, bl.BaselineConfig), 30) == [2, 6, 18]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, face_clip_factory):
    """Two 5 s aligned-face videos with a macro brow raise and a micro smile each, plus head drift and noise."""
    root = tmp_path_factory.mktemp("tiny")
    events = {"s1_v1": [(30, 75, "brows", 5.0, "macro"), (110, 120, "mouth", 2.0, "micro")],
              "s2_v1": [(20, 30, "mouth", 2.0, "micro"), (80, 130, "mouth", 6.0, "macro")]}
    videos, gt = [], []
    for i, (video, evs) in enumerate(events.items()):
        face_clip_factory(root / "videos" / f"{video}.mp4", 150, [e[:4] for e in evs], head=(0.05, 0.02),
                          noise=1.5, seed=i)
        videos.append({"subject": video[:2], "video": video, "path": f"videos/{video}.mp4", "fps": 30.0,
                       "num_frames": 150})
        for onset, offset, _, _, kind in evs:
            gt.append({"subject": video[:2], "video": video, "onset": onset, "apex": (onset + offset) // 2,
                       "offset": offset, "type": kind, "emotion": ""})
    write_videos(pd.DataFrame(videos), root / "videos.csv")
    write_intervals(pd.DataFrame(gt), root / "intervals.csv")
    return root


def test_baseline_cli_finds_the_events_and_reuses_curves(tiny_dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert baseline_cli.main(["--config", CONFIG, "--data", str(tiny_dataset), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "macro" in printed and "megc" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"megc", "softnet", "strs"}
    assert metrics["megc"]["macro"]["f1"] == 1.0 and metrics["megc"]["micro"]["f1"] == 1.0
    assert sorted((out / "curves").iterdir()) == [out / "curves" / "s1_v1.npz", out / "curves" / "s2_v1.npz"]
    predictions = read_predictions(out / "predictions.csv")
    assert (predictions["score"] > 0).all()

    # Rerun with another threshold (in-process this time): the cached curves are reused, only spotting reruns.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "curves").iterdir()}
    monkeypatch.setattr("data.flow.regions.region_curves", lambda *a, **k: pytest.fail("flow recomputed"))
    assert baseline_cli.main(["--config", CONFIG, "--data", str(tiny_dataset), "--out", str(out),
                              "micro.p=1.0", "macro.p=1.0", "workers=1"]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert len(read_predictions(out / "predictions.csv")) <= 4  # p=1: at most the top peak per type and video


def test_baseline_without_videos_table_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="videos.csv"):
        bl.run_baseline(bl.BaselineConfig(), tmp_path, tmp_path / "out")


def test_timeline_plot_marks_true_and_false_positives(tiny_dataset, tmp_path):
    from data.common.tables import read_intervals, read_videos
    from spotting.evaluation.plots import plot_timeline, true_positive_rows

    gt = read_intervals(tiny_dataset / "intervals.csv")
    pred = gt.assign(score=1.0)
    pred = pd.concat([pred, pred.iloc[[0]].assign(onset=0, apex=1, offset=2)], ignore_index=True)
    assert true_positive_rows(gt, pred) == {0, 1, 2, 3}
    assert evaluate(gt, pred)["overall"]["fp"] == 1
    path = plot_timeline(gt, pred, read_videos(tiny_dataset / "videos.csv"), tmp_path / "t.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def _copies(intervals) -> int:
    return sum(a.type == b.type and iv.iou(a, b) >= 0.5 for i, a in enumerate(intervals) for b in intervals[i + 1:])


def test_the_final_step_changes_baseline_and_published_outputs_only_where_they_hold_copies():
    """spotting.intervals.final_intervals is the last step of every spotter. The baseline and the published
    methods suppress at IoU <= 0.5 themselves, so their intervals come out as before (resolve_types alone); a
    curve whose NMS lets copies through (nms_iou 1.0, half-maximum extents of two peaks on one bump) loses
    exactly the copy."""
    from data.flow import regions as fl
    from spotting.published import lgnmnet, softnet

    rng = np.random.default_rng(0)
    fps, n = 30.0, 900
    cfg = bl.BaselineConfig()
    total = 0
    for _ in range(4):
        curves = {k: rng.random((len(fl.FEATURES), n, len(fl.REGIONS))) ** 4 for k in bl.needed_ks(cfg, fps)}
        found = {kind: bl.spot_type(curves, cfg, kind, fps, n) for kind in ("macro", "micro")}
        assert bl.spot_curves(curves, cfg, fps, n) == iv.resolve_types(found["macro"], found["micro"], 0.5)
        total += len(found["macro"]) + len(found["micro"])
        score = rng.random(n) ** 4
        for spotted in (softnet.spot(score, 6, 0.3, "micro"), lgnmnet.spot(score, 6, 0.3, "micro", 15)):
            assert spotted and iv.drop_copies(spotted) == spotted
    assert total > 20  # the curves gave intervals to compare

    curve = np.zeros(300)
    curve[100:201], curve[115], curve[140] = 1.0, 1.2, 1.3  # two peaks on one bump
    own = iv.spot_curve(curve, 6, 0.0, "macro", extent="half_max", nms_iou=1.0, max_half=30)
    assert [(i.onset, i.offset) for i in own] == [(100, 145), (110, 170)] and _copies(own) == 1
    assert iv.final_intervals(own, [], 0.5) == [own[1]]  # the higher-scored copy, unchanged

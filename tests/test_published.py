"""The published methods (spotting/published): label rules, SOFTNet network, smoothing/pairing, STRS, LGSNet
parts, a tiny end-to-end LOSO run scored by the metric."""
import numpy as np
import pandas as pd
import pytest
import torch

from data.common.errors import ConfigError
from spotting.published import lgnmnet, mean, softnet
from spotting.published.config import PublishedConfig


def _windows(*pairs):
    a = np.array(pairs, dtype=np.int64)
    return a[:, 0], a[:, 1]


# --- label rules -------------------------------------------------------------------------------------------------
def test_overlap_vs_intersection_rate_labels():
    # window [0, 9] against a long macro [5, 30]: 5 shared frames
    # window [0, 9] against a short micro [3, 6] lying inside it: 4 shared frames
    # window [40, 49]: touches nothing
    start, end = _windows((0, 9), (0, 9), (40, 49))
    long_gt, short_gt = np.array([[5, 30]]), np.array([[3, 6]])
    soft = [softnet.overlap_labels(start[i:i + 1], end[i:i + 1], g)[0] for i, g in enumerate([long_gt, short_gt, long_gt])]
    assert soft == pytest.approx([5 / 31, 4 / 10, 0.0])
    hard = [softnet.overlap_labels(start[i:i + 1], end[i:i + 1], g, soft=False)[0]
            for i, g in enumerate([long_gt, short_gt, long_gt])]
    assert hard == [1.0, 1.0, 0.0]
    rate = [lgnmnet.intersection_rate_labels(start[i:i + 1], end[i:i + 1], g)[0]
            for i, g in enumerate([long_gt, short_gt, long_gt])]
    # 5 / min(10, 26) = 0.5 is not above 0.5; 4 / min(10, 4) = 1 is
    assert rate == [0.0, 1.0, 0.0]


def test_labels_take_the_best_ground_truth_and_handle_none():
    start, end = _windows((10, 19))
    gts = np.array([[0, 11], [12, 21]])  # IoU 2/20 and 8/12
    assert softnet.overlap_labels(start, end, gts)[0] == pytest.approx(8 / 12)
    assert softnet.best_match(start, end, gts)[0] == 1
    empty = np.zeros((0, 2), np.int64)
    assert softnet.overlap_labels(start, end, empty)[0] == 0.0
    assert lgnmnet.intersection_rate_labels(start, end, empty)[0] == 0.0
    assert softnet.best_match(start, end, empty)[0] == -1


# --- SOFTNet network -----------------------------------------------------------------------------------------------
def test_softnet_shapes_and_shared_features():
    model = softnet.SoftNet(42, extra_heads={"emotion": 5})
    x = torch.randn(4, 3, 42, 42)
    out = model(x)
    assert out["spot"].shape == (4,) and out["emotion"].shape == (4, 5)
    assert model.features(x).shape == (4, 400)
    assert [c.out_channels for c in model.streams] == [3, 5, 8]
    # every head reads the same shared layers: no parameters of their own beyond one linear layer each
    head_params = sum(p.numel() for p in model.heads.parameters())
    assert head_params == (400 + 1) * (1 + 5)


def test_one_training_step_lowers_the_loss():
    torch.manual_seed(0)
    model = softnet.SoftNet(42, extra_heads={"emotion": 3})
    x = torch.randn(16, 3, 42, 42)
    y = torch.rand(16)
    emotion = torch.tensor([0, 1, 2, -1] * 4)
    softnet.fit_scale(model, x)
    opt = torch.optim.Adam(model.parameters(), lr=PublishedConfig().train.lr)
    before = softnet.loss_fn(model(x), y, emotion, 1.0)
    opt.zero_grad()
    before.backward()
    opt.step()
    after = softnet.loss_fn(model(x), y, emotion, 1.0)
    assert float(after.detach()) < float(before.detach())


# --- smoothing, peaks, pairing -------------------------------------------------------------------------------------
def test_savgol_keeps_quadratics_and_short_curves():
    t = np.arange(50, dtype=float)
    quad = 0.01 * (t - 20) ** 2 + 3
    assert np.allclose(lgnmnet.savgol(quad, 11), quad)
    assert np.allclose(lgnmnet.savgol(np.array([1.0, 2.0]), 11), [1.0, 2.0])


def test_pair_peaks_rule():
    assert lgnmnet.pair_peaks([100, 10, 20], max_gap=15) == [(10, 20), (100, 100)]
    # three close peaks: the first two pair, the third stays alone (each peak is used once)
    assert lgnmnet.pair_peaks([0, 5, 9], max_gap=10) == [(0, 5), (9, 9)]
    assert lgnmnet.pair_peaks([], max_gap=10) == []


def _bumps(n, centres, width=3.0):
    t = np.arange(n, dtype=float)
    return sum(np.exp(-0.5 * ((t - c) / width) ** 2) for c in centres)


def test_lgnmnet_spot_pairs_two_adjacent_peaks_into_one_interval():
    k = 6
    score = _bumps(300, [100, 120]) + _bumps(300, [230])  # pair scores: window [i, i+k]
    found = lgnmnet.spot(score, k, 0.3, "macro", max_duration=30)
    spans = [(i.onset, i.offset) for i in found]
    # centred by k//2 = 3: peaks at 103, 123 -> [103 - 3, 123 + 3]; the lone one at 233 -> [233 - 6, 233 + 6]
    assert spans == [(100, 126), (227, 239)]


def test_softnet_spot_one_interval_per_peak():
    k = 6
    score = _bumps(200, [50, 150], width=4.0)
    found = softnet.spot(score, k, 0.55, "micro")
    assert [(i.onset, i.apex, i.offset) for i in found] == [(47, 53, 59), (147, 153, 159)]
    assert softnet.spot(np.zeros(200), k, 0.55, "micro") == []


# --- STRS ----------------------------------------------------------------------------------------------------------
def _table(rows, score=False):
    cols = ["subject", "video", "onset", "apex", "offset", "type", "emotion"] + (["score"] if score else [])
    return pd.DataFrame([r + ((1.0,) if score else ()) for r in rows], columns=cols)


def test_strs_on_a_crafted_case():
    gt = _table([("s1", "v1", 10, 15, 20, "micro", "happiness"), ("s1", "v1", 100, 120, 140, "macro", "anger"),
                 ("s1", "v2", 50, 60, 70, "macro", "sadness")])
    pred = _table([("s1", "v1", 10, 15, 21, "micro", "happiness"),   # TP, right emotion
                   ("s1", "v1", 102, 120, 142, "macro", "surprise"),  # TP, wrong emotion
                   ("s1", "v2", 200, 210, 220, "macro", "sadness")],  # FP; v2's ground truth is missed
                  score=True)
    result = mean.strs(gt, pred)
    assert result["spot_f1"] == pytest.approx(2 / 3)  # TP 2, FP 1, FN 1
    # classes among the TP pairs: happiness (F1 1), anger (0), surprise (0)
    assert result["recog_f1"] == pytest.approx(1 / 3)
    assert result["strs"] == pytest.approx(2 / 9)
    assert result["n_tp"] == 2
    assert mean.strs(gt, pred.iloc[:0])["strs"] == 0.0


def test_interval_emotion_uses_mean_probability():
    probs = np.zeros((10, 2))
    probs[:, 0] = 0.7
    probs[:, 1] = 0.3
    probs[4:6] = [0.0, 1.0]  # two frames strongly class 1, the rest mildly class 0
    assert mean.interval_emotion(probs, 0, 9, ["a", "b"]) == "a"
    assert mean.interval_emotion(probs, 4, 5, ["a", "b"]) == "b"


# --- LGSNet-style detector ----------------------------------------------------------------------------------------
def test_lgsnet_anchors_encode_decode_round_trip():
    from spotting.published import lgsnet

    anchors = lgsnet.make_anchors(5, [2.0, 6.0])
    assert anchors.shape == (10, 2)
    assert anchors[:2].tolist() == [[0.5, 2.0], [0.5, 6.0]]  # step-major: every length at step 0 first
    gt = np.array([[3.2, 4.0]] * len(anchors))
    back = lgsnet.decode(lgsnet.encode(gt, anchors), anchors)
    assert np.allclose(back, gt)
    # frames <-> steps: inclusive frames 10..19 at stride 2 are centre 7.5, length 5 steps, and back
    centre, length = lgsnet.frames_to_steps(10, 19, 2)
    assert (centre, length) == (7.5, 5.0)
    assert lgsnet.steps_to_frames(centre, length, 2, 100) == (10, 19)


def test_lgsnet_assignment_and_nms():
    from spotting import intervals as iv
    from spotting.published import lgsnet

    anchors = lgsnet.make_anchors(20, [2.0, 8.0])
    gt = np.array([[10.0, 8.0], [3.0, 1.0]])  # a macro matching the 8-step anchor at step 9; a tiny micro
    labels, deltas = lgsnet.assign(anchors, gt, np.array([1, 2]), pos_iou=0.5, neg_iou=0.3)
    best = int(np.flatnonzero((anchors[:, 0] == 9.5) & (anchors[:, 1] == 8.0))[0])
    assert labels[best] == 1
    assert np.allclose(lgsnet.decode(deltas[best:best + 1], anchors[best:best + 1]), gt[:1])
    assert (labels == 2).sum() >= 1  # the micro keeps its best anchor although no anchor reaches IoU 0.5
    assert labels[anchors[:, 0] > 17].tolist() == [0] * int((anchors[:, 0] > 17).sum())  # far away: background
    assert -1 in labels  # partial overlaps are ignored
    # NMS keeps the best of two overlapping detections and the separate one
    dets = [iv.Interval(10, 15, 20, "macro", 0.9), iv.Interval(11, 15, 21, "macro", 0.8),
            iv.Interval(50, 55, 60, "macro", 0.7)]
    assert [d.score for d in iv.nms(dets, 0.3)] == [0.9, 0.7]


def test_lgsnet_detector_shapes_and_background_clips():
    from spotting.published import lgsnet

    model = lgsnet.Detector(16, 24, 8, [1, 2, 4], num_anchors=3)
    logits, deltas = model(torch.randn(2, 16, 30), torch.randn(2, 24, 30))
    assert logits.shape == (2, 90, 3) and deltas.shape == (2, 90, 2)
    cfg = lgsnet.LgsnetConfig(pseudo_per_clip=2, bg_weight=3.0)
    anchors = lgsnet.make_anchors(40, [2.0, 4.0])
    empty = (np.zeros((0, 2)), np.zeros(0, np.int64))
    labels, _, weights = lgsnet.clip_targets(*empty, 0, 40, anchors, cfg, np.random.default_rng(0))
    assert (labels == 0).all() and (weights == 3.0).any() and set(np.unique(weights)) <= {1.0, 3.0}


# --- config --------------------------------------------------------------------------------------------------------
def test_unknown_method_is_a_config_error():
    from data.common.config import load_config
    from spotting.published.config import PublishedConfig

    with pytest.raises(ConfigError, match="method"):
        load_config(None, PublishedConfig, ["method=nope"])


# --- end to end ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_softnet_loso_run_is_scored_and_resumes(tiny_spotting_set, tmp_path):
    from data.common.config import load_config
    from data.common.tables import read_intervals, read_predictions, read_videos
    from spotting.evaluation.metric import evaluate
    from spotting.published.compare import run
    from spotting.published.config import PublishedConfig

    out = tmp_path / "published"
    cfg = load_config(None, PublishedConfig, [f"data.root={tiny_spotting_set}", f"out={out}", "method=softnet",
                                              "train.epochs=2"])
    rows = run(cfg)
    videos = read_videos(tiny_spotting_set / "videos.csv")
    pred = read_predictions(out / "softnet" / "predictions.csv")
    assert set(pred["video"]) <= set(videos["video"])
    folds = sorted(p.parent.name for p in (out / "softnet" / "folds").glob("*/predictions.csv"))
    assert folds == sorted(videos["subject"].astype(str).unique())
    gt = read_intervals(tiny_spotting_set / "intervals.csv")
    assert rows["softnet"].metrics["megc"] == evaluate(gt, pred, "megc")
    assert len(pred) > 0  # the SOFTNet threshold always keeps the top peak of a non-flat curve
    stamp = {p: p.stat().st_mtime_ns for p in (out / "softnet" / "folds").glob("*/predictions.csv")}
    run(cfg)  # every fold is finished: nothing is retrained
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp

"""The detector reader: targets, learned boundaries, seconds not frames, training subjects only,
self-checking files, and `spot` giving exactly the intervals LOSO's final model gives."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_DETECTOR_OVERRIDES

from data.common.errors import DataError
from spotting.channels.vocabulary import CUES, FLOW, Channel, video_features
from spotting.detector import inputs
from spotting.detector import model as dt
from spotting.detector import reader as ds
from spotting.evaluation.metric import evaluate

# hard NMS only: with 2 subjects per inner fold the inner scores are too weak to choose between suppressions
FAST = ds.DetectorReaderConfig(steps_grid=[60, 120], nms_grid=["hard:0.3"], detector=dt.DetectorConfig(crop_s=12.0))


def test_events_are_taught_at_the_levels_their_length_needs_from_inside_them():
    cfg = dt.DetectorConfig()
    events = np.array([[10, 14, 1], [100, 160, 0]], np.float32)  # 4 steps micro, 60 steps macro
    targets = dt.level_targets(events, 256, cfg)
    levels = {k: [lv for lv, (cls, _, pos) in enumerate(targets) if cls[pos, k].any()] for k in (0, 1)}
    # a position takes the level whose range holds its larger distance to the event's ends (ActionFormer)
    assert levels[1] == [0] and levels[0] and min(levels[0]) >= 3  # short at stride 1, long at strides >= 8
    cls, dist, pos = targets[levels[0][0]]
    pos = pos & (cls[:, 0] > 0)
    stride = cfg.strides[levels[0][0]]
    centres = dt.positions(256, stride)[pos]
    assert ((centres > 100) & (centres < 160)).all()
    # onset + offset distances rebuild the event from every positive position
    np.testing.assert_allclose(centres - dist[pos, 0] * stride, 100, atol=1e-4)
    np.testing.assert_allclose(centres + dist[pos, 1] * stride, 160, atol=1e-4)


def _bump_items(fps: float = 30.0, videos: int = 4, seconds: float = 20.0, seed: int = 0):
    """Videos whose cue channel rises over 2 s macro and 0.13 s micro events (plus noise); labels in frames."""
    rng, noise = np.random.default_rng(seed), np.random.default_rng(seed + 1)  # events: the same at any fps
    n = int(seconds * fps)
    items, rows = [], []
    for v in range(videos):
        t = np.arange(n) / fps
        curves = {Channel(CUES, kind, "all", "motion"): 0.05 * noise.random(n) for kind in ("macro", "micro")}
        for start, length, kind in [(2.0, 2.0, "macro"), (7.0, 0.13, "micro"), (11.0, 3.0, "macro"),
                                    (16.0, 0.13, "micro")]:
            on_s = start + rng.uniform(-0.5, 0.5)
            on, off = int(round(on_s * fps)), int(round((on_s + length) * fps)) - 1
            inside = (t >= on / fps) & (t < (off + 1) / fps)
            curves[Channel(CUES, kind, "all", "motion")][inside] += 1.0
            rows.append({"subject": f"s{v}", "video": f"s{v}_v1", "onset": on, "apex": (on + off) // 2,
                         "offset": off, "type": kind, "emotion": ""})
        items.append(video_features(f"s{v}", f"s{v}_v1", fps, n, curves))
    return items, pd.DataFrame(rows)


@pytest.fixture(scope="module")
def bump_spotter(one_torch_thread_module):
    items, gt = _bump_items()
    return ds.fit_reader(items[:3], gt, (CUES,), FAST), items, gt


@pytest.fixture(scope="module")
def one_torch_thread_module():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_long_events_come_out_as_one_interval_with_learned_boundaries(bump_spotter):
    spotter, items, gt = bump_spotter
    pred = spotter.predict(items[3:])  # a video of a subject it was not fitted on
    truth = gt[gt["video"] == "s3_v1"]
    result = evaluate(truth, pred)
    assert result["macro"]["tp"] == 2 and result["micro"]["tp"] == 2, pred
    # one confident box per event: each 2-3 s event is one interval, not a run of peaks (the inner folds, with
    # 2 subjects each, choose a low threshold here, so a few low-scored extra boxes pass it)
    confident = pred[pred["score"] >= 0.5]
    assert len(confident) == 4 and evaluate(truth, confident)["overall"]["f1"] == 1.0, pred
    assert set(spotter.selection) >= {"steps", "threshold", "nms", "inner_f1", "tried"}
    assert spotter.selection["steps"] in FAST.steps_grid


def test_weight_grid_holds_each_group_alone_and_favours_the_first():
    assert ds.weight_grid(1, 0.25) == [(1.0,)]
    two = ds.weight_grid(2, 0.25)
    assert two == [(1.0, 0.0), (0.75, 0.25), (0.5, 0.5), (0.25, 0.75), (0.0, 1.0)]
    three = ds.weight_grid(3, 0.5)
    assert len(three) == 6 and all(abs(sum(w) - 1) < 1e-9 for w in three) and three[0] == (1.0, 0.0, 0.0)


def _with_noise_set(items, seed: int = 7):
    """The bump items plus a FLOW channel of pure noise: a channel set that cannot help."""
    rng = np.random.default_rng(seed)
    for it in items:
        it.curves[Channel(FLOW, "any", "gap0.mouth", "flow")] = rng.random(it.num_frames)
    return items


def test_late_fusion_gives_a_useless_channel_set_no_weight(one_torch_thread_module):
    """Groups [cues] and [flow]: the flow set is noise, so the inner folds keep the cues alone (weight 1, 0), no
    detector is trained for the noise group, and the fitted reader finds the held-out subject's events."""
    items, gt = _bump_items()
    items = _with_noise_set(items)
    cfg = dataclasses.replace(FAST, groups=[["cues"], ["flow"]], weight_step=0.5)
    reader = ds.fit_reader(items[:3], gt, (CUES, FLOW), cfg)
    assert reader.selection["weights"] == [1.0, 0.0] and reader.models[1] == []
    assert set(reader.selection["tried"]) == {f"{s}@{w}" for s in (60, 120) for w in ("1,0", "0.5,0.5", "0,1")}
    assert evaluate(gt[gt["video"] == "s3_v1"], reader.predict(items[3:]))["macro"]["tp"] == 2
    # swapped roles: the noise alone is never chosen, the informative set keeps at least half the weight
    swapped = ds.fit_reader(items[:3], gt, (CUES, FLOW), dataclasses.replace(cfg, groups=[["flow"], ["cues"]]))
    assert swapped.selection["weights"][1] >= 0.5
    assert evaluate(gt[gt["video"] == "s3_v1"], swapped.predict(items[3:]))["macro"]["tp"] == 2


def test_a_late_fusion_reader_saves_and_loads_every_group(one_torch_thread_module, tmp_path):
    items, gt = _bump_items()
    items = _with_noise_set(items)
    cfg = dataclasses.replace(FAST, groups=[["cues"], ["flow"]], weight_step=1.0)
    reader = ds.fit_reader(items[:3], gt, (CUES, FLOW), cfg)
    loaded = ds.DetectorReader.load(reader.save(tmp_path / "model"))
    assert loaded.selection == reader.selection and [len(m) for m in loaded.models] == [len(m) for m in reader.models]
    np.testing.assert_array_equal(loaded.boxes(items[3]), reader.boxes(items[3]))


def test_the_detector_works_in_seconds_so_200_fps_gives_the_same_events(bump_spotter):
    spotter, items30, gt30 = bump_spotter
    items200, gt200 = _bump_items(fps=200.0)  # same seed: same events in seconds, 6.7x the frames
    pred30, pred200 = spotter.predict(items30[3:]), spotter.predict(items200[3:])
    # the noise averages differently into the grid at 200 fps: compare the confident boxes
    pred30, pred200 = (p[p["score"] >= 0.5].reset_index(drop=True) for p in (pred30, pred200))
    assert len(pred30) == len(pred200) == 4
    np.testing.assert_allclose(pred200["onset"] / 200, pred30["onset"] / 30, atol=0.1)
    np.testing.assert_allclose((pred200["offset"] + 1) / 200, (pred30["offset"] + 1) / 30, atol=0.1)
    assert list(pred30["type"]) == list(pred200["type"])


def test_on_grid_keeps_a_video_at_the_grid_rate_and_averages_a_faster_one():
    x = np.random.default_rng(0).random((300, 2))
    np.testing.assert_allclose(inputs.on_grid(x, 30.0, 30.0), x.T.astype(np.float32))
    y = np.repeat(x, 4, axis=0)  # the same signal at 120 fps
    np.testing.assert_allclose(inputs.on_grid(y, 120.0, 30.0), x.T.astype(np.float32), rtol=1e-6)
    assert inputs.on_grid(x[:, :1], 30.0, 200.0).shape == (1, 2000)  # slower than the grid: interpolated


def test_principal_directions_are_the_covariance_eigenvectors_with_a_fixed_sign():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(40, 6)) * [5, 4, 3, 2, 1, 0.5]) @ np.linalg.qr(rng.normal(size=(6, 6)))[0]  # [N, C]
    basis = inputs.principal_directions(x.T.astype(np.float32), 3)
    values, vectors = np.linalg.eigh(np.cov(x.T, bias=True))  # closed form: the covariance's eigenvectors
    leading = vectors[:, ::-1][:, :3].T
    np.testing.assert_allclose(np.abs(np.sum(basis * leading, 1)), 1.0, atol=1e-5)  # each one, up to its sign
    np.testing.assert_allclose(np.var(x @ basis.T, 0), values[::-1][:3], rtol=1e-4)  # in decreasing variance
    assert (basis[np.arange(3), np.abs(basis).argmax(1)] > 0).all()  # the largest loading positive: no LAPACK sign
    with pytest.raises(DataError, match="encoder_pca"):
        inputs.principal_directions(x.T[:, :2], 3)  # fewer time steps than directions

def test_fit_reads_only_the_training_videos_labels(bump_spotter):
    spotter, items, gt = bump_spotter
    moved = gt.copy()
    moved.loc[moved["video"] == "s3_v1", ["onset", "apex", "offset"]] //= 2  # a subject outside the fit
    again = ds.fit_reader(items[:3], moved, (CUES,), FAST)
    assert again.selection == spotter.selection
    np.testing.assert_array_equal(again.boxes(items[3]), spotter.boxes(items[3]))


def test_a_saved_detector_gives_the_same_boxes_and_refuses_a_damaged_file(bump_spotter, tmp_path):
    spotter, items, _ = bump_spotter
    loaded = ds.DetectorReader.load(spotter.save(tmp_path / "model"))
    np.testing.assert_array_equal(loaded.boxes(items[3]), spotter.boxes(items[3]))
    weights = tmp_path / "model" / "detector_0_0.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(DataError, match="detector_0_0.safetensors"):
        ds.DetectorReader.load(tmp_path / "model")
    (tmp_path / "model" / "detector.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(DataError, match="format 99"):
        ds.DetectorReader.load(tmp_path / "model")
    old_layout = {**spotter.to_dict(), "files": {}}  # a file from before late fusion: no "groups"
    del old_layout["groups"]
    (tmp_path / "model" / "detector.json").write_text(json.dumps(old_layout))
    with pytest.raises(DataError, match="no groups in the detector file"):
        ds.DetectorReader.load(tmp_path / "model")


def test_bad_detector_settings_are_refused():
    from data.common.errors import ConfigError
    from spotting.evaluation.loso import LosoConfig

    with pytest.raises(ConfigError, match="channels: the logistic reader cannot read"):
        LosoConfig(reader="logistic", channels=["cues", "encoder"])
    with pytest.raises(ConfigError, match="detector.groups"):
        LosoConfig(channels=["cues", "flow"], detector=ds.DetectorReaderConfig(groups=[["cues"], ["encoder"]]))
    with pytest.raises(ConfigError, match="weight_step"):
        ds.DetectorReaderConfig(weight_step=0.3)

    with pytest.raises(ConfigError, match="nms_grid"):
        ds.DetectorReaderConfig(nms_grid=["gaussian:0.5"])
    with pytest.raises(ConfigError, match="steps_grid"):
        dataclasses.replace(FAST, steps_grid=[])


# Boxes (onset_s, end_s, score, class) as the demo's spotter gave them on a real clip (issue 29): near-copies of
# one macro event (frames 386-404 and 389-408; 431-470 and 432-464 at 30 fps), a lone micro box, and two micro
# boxes 0.23 s apart that overlap by less than IoU 0.5.
OVERLAPPING = np.array([[12.87, 13.50, 1.00, 0], [12.97, 13.63, 0.88, 0], [14.37, 15.70, 0.95, 0],
                        [14.40, 15.50, 0.23, 0], [3.00, 3.30, 0.60, 1], [20.00, 20.30, 0.70, 1],
                        [20.17, 20.47, 0.50, 1]])


def _same_type_copies(intervals) -> list:
    from spotting.evaluation.metric import interval_iou

    return [(a, b) for i, a in enumerate(intervals) for b in intervals[i + 1:]
            if a.type == b.type and interval_iou(a.onset, a.offset, b.onset, b.offset) >= 0.5]


def test_no_two_final_intervals_of_one_type_overlap_by_iou_half():
    from spotting import intervals as iv
    from spotting.detector import decode as dd

    boxes = dd.suppress_all(OVERLAPPING, {"macro": "soft:0.5", "micro": "soft:0.5"})  # copies kept, scores lowered
    low = {"macro": 0.05, "micro": 0.05}  # an inner fold's low threshold lets the lowered copies through
    spans = dd.frame_spans(boxes, 30.0, 900)
    by_type = {k: [iv.Interval(int(a), int(a), int(b), dt.CLASSES[int(c)], float(s))
                   for (a, b), (_, _, s, c) in zip(spans, boxes) if c == k and s >= 0.05] for k in (0, 1)}
    assert len(_same_type_copies(iv.resolve_types(by_type[0], by_type[1], 0.5))) == 2  # before: both pairs

    found = dd.to_intervals(boxes, 30.0, 900, low, micro_inside_macro=0.5)
    assert _same_type_copies(found) == []
    macro = [(i.onset, i.offset, round(i.score, 2)) for i in found if i.type == "macro"]
    assert macro == [(386, 404, 1.0), (431, 470, 0.95)]  # the better copy, as decoded: kept, not merged
    micro = [(i.onset, i.offset) for i in found if i.type == "micro"]
    assert micro == [(90, 98), (600, 608), (605, 613)]  # IoU 4/14 < 0.5: both stay


def test_thresholds_are_chosen_on_the_intervals_prediction_outputs():
    """select.class_counts counts, at every threshold, the intervals to_intervals outputs (copies dropped), so
    the inner folds choose a threshold for what spot and LOSO will write."""
    from spotting.detector import decode as dd
    from spotting.detector import select

    item = video_features("s0", "v0", 30.0, 900, {})
    gt = pd.DataFrame([{"subject": "s0", "video": "v0", "onset": 386, "apex": 395, "offset": 404, "type": "macro",
                        "emotion": ""}])
    thresholds = np.array([0.05, 0.2, 0.5, 0.9, 0.99])
    off = float("inf")
    for spec in ("soft:0.5", "hard:0.3"):
        boxes = dd.suppress_all(OVERLAPPING, {"macro": spec, "micro": spec})
        for kind in ("macro", "micro"):
            k = dt.CLASSES.index(kind)
            tp, n_pred, _ = select.class_counts({"v0": boxes[boxes[:, 3] == k]}, [item], gt, kind, thresholds,
                                                None, 0.5)
            for thr, n in zip(thresholds, n_pred):
                found = dd.to_intervals(boxes, 30.0, 900, {kind: thr, **{o: off for o in dt.CLASSES if o != kind}},
                                        0.5)
                assert n == len(found), (spec, kind, thr)
            if kind == "macro":
                assert tp[0] == 1 and n_pred[0] == 2  # one hit, one other event: no copy counted as a miss


@pytest.fixture(scope="module")
def full_loso(tiny_spotting_set, tmp_path_factory, one_torch_thread_module):
    """A detector LOSO run on flow cues + encoder channels, with its final model (in this process, folds one
    after another)."""
    from data.common.config import load_config
    from spotting.evaluation import loso

    out = tmp_path_factory.mktemp("full_loso") / "loso"
    cfg = load_config("configs/spotting/loso.yaml", loso.LosoConfig, [
        f"finetune.data.root={tiny_spotting_set}", f"out={out}", "parallel=false", "channels=[cues,flow,encoder]",
        "detector.encoder_pca=8", *TINY_DETECTOR_OVERRIDES])
    loso.run_loso(cfg)
    return cfg, loso.prepare(cfg, out)


def test_spot_gives_exactly_the_intervals_of_the_loso_code_path(full_loso, tmp_path):
    from spotting.channels.vocabulary import ENCODER, FLOW
    from spotting.evaluation import loso
    from spotting.spot import spot

    from finetune.store import read_manifest

    cfg, shared = full_loso
    model = Path(cfg.out) / "model"
    spotter = ds.DetectorReader.load(model)
    assert read_manifest(model)["training_fps"] == [30.0, 30.0]  # what spot compares a video's rate with
    row = shared.videos.iloc[0]
    item = loso.features_for(shared, [str(row.video)], None)[0]
    assert spotter.channel_sets == {CUES, FLOW, ENCODER} and len(spotter.norms[0].basis) == 8
    expected = spotter.predict([item])
    summary = spot(Path(cfg.finetune.data.root) / row.path, model, tmp_path / "spot")
    got = pd.read_csv(tmp_path / "spot" / f"{Path(row.path).stem}.csv", keep_default_na=False)
    assert summary["reader"] == "detector"
    assert len(got) == len(expected)
    def rows(frame):  # the CSV lists by onset, predict by score: the same intervals in another order
        return sorted(zip(frame["onset"], frame["offset"], frame["type"]))
    assert rows(got) == rows(expected)
    # the channels themselves are the same numbers: one builder for both paths
    curves = np.load(tmp_path / "spot" / f"{Path(row.path).stem}_curves.npz")
    for channel, curve in item.curves.items():
        np.testing.assert_array_equal(curves[channel.name.replace(".", "__")], curve)
    # and the detector's own scores agree, box for box
    spot_item = video_features("", str(row.video), item.fps, item.num_frames,
                               {c: curves[c.name.replace(".", "__")] for c in item.curves})
    np.testing.assert_array_equal(spotter.boxes(spot_item), spotter.boxes(item))


def test_spot_decodes_every_frame_once_and_tracks_it_once(full_loso, tmp_path, monkeypatch):
    """One pass over the frames: cues, the stabilised stream, the encoder channels and the aligned crops all come
    from one decode and one face track of the video (counted at decord and at the tracker)."""
    import decord

    from data.common.assets import carphone_video
    from data.faces.track import Tracker
    from spotting.spot import spot

    decoded, tracked = [], []
    get_batch, step = decord.VideoReader.get_batch, Tracker.step
    monkeypatch.setattr(decord.VideoReader, "get_batch", lambda self, idx: decoded.extend(idx) or get_batch(self, idx))
    monkeypatch.setattr(Tracker, "step", lambda self, frame: tracked.append(1) or step(self, frame))
    cfg, _ = full_loso
    summary = spot(carphone_video(), Path(cfg.out) / "model", tmp_path / "spot")
    assert summary["channels"] == ["cues", "flow", "encoder"]
    assert sorted(decoded) == list(range(120)) and len(tracked) == 120


TUNING_OVERRIDES = ["encoder_tuning.mode=partial", "encoder_tuning.epochs=2", "encoder_tuning.windows_per_epoch=8",
                    "encoder_tuning.val_windows=8", "encoder_tuning.batch_size=4", "encoder_tuning.probe_epochs=3"]


@pytest.fixture(scope="module")
def tuned_loso(full_loso, tmp_path_factory):
    """A detector LOSO on encoder channels only, the encoder fine-tuned inside every fold (and for the final
    model); the stabilised streams come from full_loso's cache."""
    from data.common.config import load_config
    from spotting.evaluation import loso

    base, _ = full_loso
    out = tmp_path_factory.mktemp("tuned_loso") / "loso"
    shutil.copytree(Path(base.out) / "cues", out / "cues")  # the flow baseline's label-free curves, as computed there
    cfg = load_config("configs/spotting/loso.yaml", loso.LosoConfig, [
        f"finetune.data.root={base.finetune.data.root}", f"out={out}", "parallel=false", "channels=[encoder]",
        "detector.encoder_pca=8", f"encoder_cache={Path(base.out) / 'encoder_input'}", *TUNING_OVERRIDES,
        *TINY_DETECTOR_OVERRIDES])
    loso.run_loso(cfg)
    return cfg, loso.prepare(cfg, out)


def test_encoder_tuning_inside_loso_reads_training_subjects_only_and_spot_uses_the_tuned_encoder(tuned_loso,
                                                                                                   tmp_path):
    from finetune.encoder.load import encoder_digest
    from finetune.store import load_spotter
    from spotting.evaluation import loso
    from spotting.spot import spot

    cfg, shared = tuned_loso
    out = Path(cfg.out)
    for fold in sorted((out / "folds").iterdir()):
        record = json.loads((fold / "encoder_tuning.json").read_text())
        summary = json.loads((fold / "fold.json").read_text())
        assert fold.name not in record["fitted"] + record["early_stopping"]
        assert sorted(record["fitted"] + record["early_stopping"]) == summary["train_subjects"]
        assert record["early_stopping"] == [max(summary["train_subjects"])]
        assert summary["best_epoch"] == record["best_epoch"] and len(record["history"]) >= 2
    assert (out / "encoder_tuning.png").stat().st_size > 0
    # the final model carries the encoder tuned on every subject: the same weights from the tuning cache and
    # when tuned again without it (seeded)
    subjects = sorted(shared.videos["subject"].unique())
    saved = encoder_digest(load_spotter(out / "model")[0].encoder)
    _, cached, _ = loso.tuned_shared(cfg, shared, subjects)
    shutil.rmtree(Path(cfg.encoder_cache) / "tuned")
    tuned_shared, encoder, record = loso.tuned_shared(cfg, shared, subjects)
    assert saved == encoder_digest(cached) == encoder_digest(encoder) == \
        record["history"][record["best_epoch"]]["digest"]
    # and `spot` gives a video exactly the intervals and encoder channels the LOSO code path gives it
    row = shared.videos.iloc[0]
    item = loso.features_for(tuned_shared, [str(row.video)], None)[0]
    expected = ds.DetectorReader.load(out / "model").predict([item])
    spot(Path(cfg.finetune.data.root) / row.path, out / "model", tmp_path / "spot")
    got = pd.read_csv(tmp_path / "spot" / f"{Path(row.path).stem}.csv", keep_default_na=False)
    def rows(frame):  # the CSV lists by onset, predict by score: the same intervals in another order
        return sorted(zip(frame["onset"], frame["offset"], frame["type"]))
    assert rows(got) == rows(expected)
    curves = np.load(tmp_path / "spot" / f"{Path(row.path).stem}_curves.npz")
    for channel, curve in item.curves.items():
        np.testing.assert_array_equal(curves[channel.name.replace(".", "__")], curve)

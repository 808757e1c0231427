"""LOSO evaluation and the logistic reader: weights from training subjects only, per-fold files, pooled metrics,
resume."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from data.common.config import load_config
from data.common.tables import read_predictions
from finetune.windows import CHANNELS
from spotting import logistic as fu
from spotting.channels.heads import head_channels
from spotting.channels.vocabulary import CUES, Channel, video_features
from spotting.evaluation import loso, protocol


@pytest.fixture(scope="module")
def loso_cfg(tiny_spotting_set, tiny_finetune_overrides, tiny_loso_run):
    out = tiny_loso_run[1]  # reuse its cached flow cues and encoder features
    return load_config("configs/spotting/loso.yaml", loso.LosoConfig, [
        f"finetune.data.root={tiny_spotting_set}", f"out={out}",
        "parallel=false", "reader=logistic", "channels=[cues,heads]",  # the logistic reader's inputs
        *[f"finetune.{o}" for o in tiny_finetune_overrides]])


@pytest.fixture(scope="module")
def shared(loso_cfg):
    from pathlib import Path

    return loso.prepare(loso_cfg, Path(loso_cfg.out))


def _with_changed_labels(shared: loso.Shared, subject: str) -> loso.Shared:
    """A copy whose `subject` has different ground truth (events moved, one dropped)."""
    from finetune.heads.train import video_labels

    gt = shared.gt.copy()
    rows = gt.index[gt["subject"] == subject]
    gt = gt.drop(rows[:1])
    later = gt["subject"] == subject
    gt.loc[later, ["onset", "apex", "offset"]] = (gt.loc[later, ["onset", "apex", "offset"]] // 2).to_numpy()
    return loso.Shared(shared.videos, gt, shared.channels, shared.features, video_labels(shared.videos, gt),
                       shared.dim, shared.tubelet)


def _names(fusion: fu.LogisticReader, kind: str) -> list[str]:
    return [c.name for c in fusion.types[kind].channels]


def test_fusion_weights_depend_only_on_training_subjects(loso_cfg, shared):
    first, _ = loso.fit_fold_reader(loso_cfg, shared, ["s01", "s02"])
    same, _ = loso.fit_fold_reader(loso_cfg, _with_changed_labels(shared, "s03"), ["s01", "s02"])
    assert json.dumps(first.to_dict(), sort_keys=True) == json.dumps(same.to_dict(), sort_keys=True)
    # the check has teeth: changing a training subject's labels does change the weights
    other, _ = loso.fit_fold_reader(loso_cfg, _with_changed_labels(shared, "s02"), ["s01", "s02"])
    assert [f.weights for f in other.types.values()] != [f.weights for f in first.types.values()]
    every = dataclasses.replace(loso_cfg, logistic=dataclasses.replace(loso_cfg.logistic, select_heads=False))
    fused, _ = loso.fit_fold_reader(every, shared, ["s01", "s02"])
    assert set(_names(fused, "micro")) >= {"cue.micro.all", "micro.micro_present", "macro.micro_present"}


def _bump_items(seed: int = 0):
    """Videos whose cue curves peak exactly on 4-frame micro and 40-frame macro events; the "model" curves
    are noise. Ground truth: onset/offset of each event (micro: 4 frames, macro: 40)."""
    rng = np.random.default_rng(seed)
    items, rows = [], []
    for v in range(4):
        n = 600
        heads = {g: np.stack([rng.random(n) for _ in CHANNELS], axis=1) for g in ("micro", "macro")}
        cues = {Channel(CUES, kind, "all", "motion"): 0.05 * rng.random(n) for kind in ("micro", "macro")}
        for onset, length, kind in [(60, 4, "micro"), (200, 40, "macro"), (380, 4, "micro"), (480, 40, "macro")]:
            shift = int(rng.integers(-10, 10))
            on, off = onset + shift, onset + shift + length - 1
            centre = (on + off) / 2
            cues[Channel(CUES, kind, "all", "motion")] += np.exp(-0.5 * ((np.arange(n) - centre) / (length / 4)) ** 2)
            rows.append({"subject": f"s{v}", "video": f"s{v}_v1", "onset": on, "apex": round(centre),
                         "offset": off, "type": kind, "emotion": ""})
        items.append(video_features(f"s{v}", f"s{v}_v1", 30.0, n, head_channels(heads), cues))
    return items, pd.DataFrame(rows)


def test_thresholds_choose_the_interval_width_that_matches_the_events():
    items, gt = _bump_items()
    cfg = fu.LogisticConfig()
    fusion = fu.choose_thresholds(fu.fit_weights(items, gt, cfg, ("cues",)), items, gt)
    # a 4-frame event needs an interval of at most 8 frames for IoU >= 0.5: half-width <= 0.1 s = 3 frames
    assert fusion.types["micro"].half_width_s == 0.1 and fusion.types["micro"].inner_f1 == 1.0
    assert fusion.types["macro"].inner_f1 == 1.0
    wide = fu.choose_thresholds(fu.fit_weights(items, gt, dataclasses.replace(
        cfg, micro=fu.LogisticTypeConfig(0.17, 0.07, 0.5)), ("cues",)), items, gt)  # no grid: SOFTNet-like fixed width
    assert wide.types["micro"].half_width_s == 0.17 and wide.types["micro"].inner_f1 == 0.0


def test_model_curves_that_add_nothing_are_left_out():
    items, gt = _bump_items()
    fusion = fu.fit_reader(items, gt, ("cues", "heads"), fu.LogisticConfig())
    assert {kind: _names(fusion, kind) for kind in fusion.types} == {"macro": ["cue.macro.all"],
                                                                     "micro": ["cue.micro.all"]}
    every = fu.fit_reader(items, gt, ("cues", "heads"), fu.LogisticConfig(select_heads=False))
    assert "micro.micro_present" in _names(every, "micro")


def test_test_subject_labels_do_not_change_its_predictions(loso_cfg, shared):
    split = protocol.loso_splits(["s01", "s02", "s03"])[2]
    fold = protocol.run_fold(loso.ReaderFolds(loso_cfg, shared), split)
    again = protocol.run_fold(loso.ReaderFolds(loso_cfg, _with_changed_labels(shared, "s03")), split)
    pd.testing.assert_frame_equal(fold.predictions, again.predictions)
    info, info2 = fold.info, again.info
    assert info["logistic"] == info2["logistic"] and info["inner"] == "cross" and "s03" not in info["train_subjects"]


def test_logistic_reader_output_has_no_copies_even_when_its_own_nms_keeps_them():
    """Two peaks on one broad bump give half-maximum intervals [100, 145] and [110, 170] (IoU 36/71 >= 0.5); a
    reader whose NMS lets both through (nms_iou 1.0) still outputs only the better one (final_intervals)."""
    from spotting import intervals as iv

    n, fps = 300, 30.0
    x = np.zeros(n)
    x[100:201] = 20.0  # log1p(20) = 3.04 in the reader's design
    x[115], x[140] = 25.0, 26.0
    macro, micro = Channel(CUES, "macro", "all", "motion"), Channel(CUES, "micro", "all", "motion")
    item = video_features("s0", "v0", fps, n, {macro: x, micro: np.zeros(n)})
    cfg = fu.LogisticConfig(macro=fu.LogisticTypeConfig(0.2, 0.0, 2.0), micro=fu.LogisticTypeConfig(0.1, 0.0, 0.5),
                            extent="half_max", nms_iou=1.0)
    types = {kind: fu.TypeFit([ch], [0.0], [1.0], [3.0], -5.0, p=0.0, min_score=0.5)
             for kind, ch in (("macro", macro), ("micro", micro))}
    reader = fu.LogisticReader(cfg, types)
    curve = fu.smoothed_curve(fu.fused_curve(reader, item, "macro"), cfg.macro, fps)
    own = fu.spot_smoothed(curve, cfg.macro, fps, "macro", 0.0, 0.5, cfg, 0.2)
    assert [(i.onset, i.offset) for i in own] == [(100, 145), (110, 170)]  # the reader's NMS keeps both
    assert iv.iou(*own) >= 0.5
    assert [(i.onset, i.offset, i.type) for i in reader.spot_item(item)] == [(110, 170, "macro")]  # the higher


def test_logistic_fit_finds_the_informative_feature():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3))
    y = (x[:, 1] + 0.3 * rng.normal(size=4000) > 1.5).astype(float)  # rare positives, feature 1 decides
    w, b = fu.fit_logistic(x, y, l2=1.0)
    assert abs(w[1]) > 5 * max(abs(w[0]), abs(w[2])) and w[1] > 0


@pytest.mark.parametrize("l2", [0.0, 1.0, 50.0])
def test_logistic_fit_is_the_class_balanced_ridge_optimum(l2):
    """The fit is the zero of the objective's gradient, sum_i s_i (p_i - y_i) [x_i, 1] + l2 [w, 0] with
    s_i = n / (2 n_class(i)) (the bias unpenalised): the objective the Newton solver written here before
    scikit-learn minimised. It is strictly convex on data that are not separable, so the zero is its one optimum."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 4))
    y = (x @ [1.0, -0.5, 0.0, 0.2] + rng.normal(size=3000) > 2.0).astype(float)  # ~9% positives
    w, b = fu.fit_logistic(x, y, l2=l2)
    p = 1 / (1 + np.exp(-(x @ w + b)))
    s = np.where(y > 0.5, len(y) / (2 * y.sum()), len(y) / (2 * (len(y) - y.sum())))
    grad = np.append(x.T @ (s * (p - y)) + l2 * w, np.sum(s * (p - y)))
    assert np.abs(grad).max() < 1e-8 * len(y)  # a wrong C (e.g. n / l2) leaves |grad| / n ~ 1e-3
    # more ridge shrinks the weights
    w_more, _ = fu.fit_logistic(x, y, l2=l2 + 1000.0)
    assert np.linalg.norm(w_more) < np.linalg.norm(w)


def test_logistic_fit_of_one_class_is_that_class_everywhere():
    x = np.random.default_rng(0).normal(size=(50, 3))
    for label, sign in ((0.0, -1), (1.0, 1)):
        w, b = fu.fit_logistic(x, np.full(50, label), l2=1.0)
        assert not w.any() and b == sign * fu.LOGIT_CLIP


def test_fusion_round_trips_through_json(loso_cfg, shared, tmp_path):
    fusion, _ = loso.fit_fold_reader(loso_cfg, shared, ["s01", "s02"])
    loaded = fu.LogisticReader.load(fusion.save(tmp_path).parent)
    item = loso.features_for(shared, ["s01_v01"], None)[0]
    item.curves.update({c: np.random.default_rng(0).random(item.num_frames) for c in fusion.types["micro"].channels
                        if c.set != CUES})
    assert np.allclose(fu.fused_curve(loaded, item, "micro"), fu.fused_curve(fusion, item, "micro"))
    (tmp_path / "bad" / "logistic.json").parent.mkdir()
    (tmp_path / "bad" / "logistic.json").write_text("{}")
    with pytest.raises(fu.DataError, match="logistic.json"):
        fu.LogisticReader.load(tmp_path / "bad")
    # a file of an earlier format (fusion.json's 1: one dict per field, keyed by type): refused, naming the file
    # and the fix
    (tmp_path / "old" / "logistic.json").parent.mkdir()
    (tmp_path / "old" / "logistic.json").write_text(json.dumps({"config": {}, "names": {"macro": ["cue.macro.all"]}}))
    with pytest.raises(fu.DataError,
                       match=r"logistic.json: format: logistic reader format 1.*rerun `python -m spotting loso`"):
        fu.LogisticReader.load(tmp_path / "old")


def test_loso_cli_writes_folds_pooled_metrics_and_resumes(tiny_loso_run, tiny_spotting_set):
    run, out = tiny_loso_run
    assert run.returncode == 0, run.stderr[-3000:]
    for subject in ("s01", "s02", "s03"):
        fold = out / "folds" / subject
        info = json.loads((fold / "fold.json").read_text())
        assert info["test_subject"] == subject and subject not in info["train_subjects"]
        preds = read_predictions(fold / "predictions.csv")
        assert set(preds["subject"]) <= {subject}
        fit = json.loads((fold / "detector_fit.json").read_text())  # the default reader: the detector
        assert fit["selection"] == info["detector"] and fit["selection"]["steps"] in (30, 60)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"megc", "softnet", "strs"}
    for variant in metrics.values():
        for kind in ("macro", "micro", "overall"):
            assert set(variant[kind]) == {"tp", "fp", "fn", "precision", "recall", "f1"}
            assert 0.0 <= variant[kind]["f1"] <= 1.0
    gt = pd.read_csv(tiny_spotting_set / "intervals.csv")
    assert metrics["megc"]["overall"]["tp"] + metrics["megc"]["overall"]["fn"] == len(gt)
    text = (out / "metrics.txt").read_text()
    assert "(megc)" in text and "(softnet)" in text and "(strs)" in text and "baseline" in text
    assert (out / "model" / "spotter.json").is_file() and (out / "model" / "detector.json").is_file()
    assert "detector.json" in json.loads((out / "model" / "spotter.json").read_text())["files"]
    assert (out / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    stamps = {s: (out / "folds" / s / "fold.json").stat().st_mtime_ns for s in ("s01", "s02", "s03")}
    again = subprocess.run(run.args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "3 of 3 folds already finished" in again.stderr
    assert stamps == {s: (out / "folds" / s / "fold.json").stat().st_mtime_ns for s in ("s01", "s02", "s03")}


def test_loso_rejects_a_config_without_inputs(tmp_path):
    run = subprocess.run([sys.executable, "-m", "spotting", "loso", "--config", "configs/spotting/loso.yaml",
                          "channels=[]", f"out={tmp_path}"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "channels" in run.stderr


def test_loso_refuses_modes_it_would_silently_ignore():
    from data.common.errors import ConfigError

    with pytest.raises(ConfigError, match="finetune.train.mode"):
        load_config("configs/spotting/loso.yaml", loso.LosoConfig, ["finetune.train.mode=partial"])

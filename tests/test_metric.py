"""The MEGC spotting metric (spotting/evaluation/metric.py) and `python -m spotting evaluate`."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from data.common.cli import dispatch
from data.common.errors import DataError
from data.common.tables import write_intervals, write_predictions
from spotting.__main__ import COMMANDS
from spotting.evaluation.metric import evaluate, format_table, interval_iou, match_max, per_video


def table(*rows, score=False):
    """rows: (video, onset, offset, type); apex = onset, subject = video."""
    df = pd.DataFrame([{"subject": v, "video": v, "onset": on, "apex": on, "offset": off, "type": t, "emotion": ""}
                       for v, on, off, t in rows],
                      columns=["subject", "video", "onset", "apex", "offset", "type", "emotion"])
    if score:
        df["score"] = 1.0
    return df


def counts(result, key="overall"):
    return result[key]["tp"], result[key]["fp"], result[key]["fn"]


def test_iou_is_inclusive():
    assert interval_iou(100, 119, 100, 109) == 0.5
    assert interval_iou(100, 119, 100, 108) == 9 / 20
    assert interval_iou(5, 5, 5, 5) == 1.0
    assert interval_iou(0, 4, 5, 9) == 0.0


def test_iou_exactly_half_is_a_hit_and_just_below_is_a_miss():
    gt = table(("v", 100, 119, "macro"))
    assert counts(evaluate(gt, table(("v", 100, 109, "macro")))) == (1, 0, 0)
    assert counts(evaluate(gt, table(("v", 100, 108, "macro")))) == (0, 1, 1)


def test_two_predictions_on_one_gt_give_one_tp_one_fp():
    gt = table(("v", 10, 29, "macro"))
    pred = table(("v", 10, 29, "macro"), ("v", 12, 30, "macro"))
    r = evaluate(gt, pred)
    assert counts(r, "macro") == (1, 1, 0)
    assert r["macro"]["precision"] == 0.5 and r["macro"]["recall"] == 1.0
    assert r["macro"]["f1"] == pytest.approx(2 / 3)


def test_one_prediction_over_two_overlapping_gts_is_one_tp_one_fn():
    gt = table(("v", 0, 9, "micro"), ("v", 5, 14, "micro"))
    pred = table(("v", 0, 14, "micro"))
    assert counts(evaluate(gt, pred), "micro") == (1, 0, 1)
    # strs lets that one prediction take both ground truths.
    assert counts(evaluate(gt, pred, variant="strs"), "micro") == (2, 0, 0)


def test_predictions_in_video_without_gt():
    gt = table(("a", 0, 9, "macro"))
    pred = table(("a", 0, 9, "macro"), ("b", 0, 9, "macro"), ("b", 20, 29, "micro"))
    assert counts(evaluate(gt, pred, "megc")) == (1, 2, 0)
    assert counts(evaluate(gt, pred, "softnet")) == (1, 0, 0)
    assert counts(evaluate(gt, pred, "strs")) == (1, 0, 0)


def test_softnet_scores_a_type_only_where_that_type_has_gt():
    # Video "a" has macro ground truth only: its micro prediction is ignored by softnet
    # but is a false positive for megc and strs (strs drops only videos without any GT).
    gt = table(("a", 0, 9, "macro"))
    pred = table(("a", 50, 55, "micro"))
    assert counts(evaluate(gt, pred, "megc"), "micro") == (0, 1, 0)
    assert counts(evaluate(gt, pred, "softnet"), "micro") == (0, 0, 0)
    assert counts(evaluate(gt, pred, "strs"), "micro") == (0, 1, 0)


def test_zero_predictions_give_zero_f1():
    gt = table(("a", 0, 9, "macro"), ("a", 30, 33, "micro"))
    for variant in ("megc", "softnet", "strs"):
        r = evaluate(gt, table(score=True), variant)
        assert counts(r) == (0, 0, 2)
        assert r["overall"] == {"tp": 0, "fp": 0, "fn": 2, "precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_single_frame_intervals_match():
    assert counts(evaluate(table(("v", 5, 5, "micro")), table(("v", 5, 5, "micro")))) == (1, 0, 0)
    assert counts(evaluate(table(("v", 5, 5, "micro")), table(("v", 6, 6, "micro")))) == (0, 1, 1)


def test_type_mismatch_is_not_a_match():
    r = evaluate(table(("v", 0, 20, "macro")), table(("v", 0, 20, "micro")))
    assert counts(r, "macro") == (0, 0, 1)
    assert counts(r, "micro") == (0, 1, 0)
    assert counts(r) == (0, 1, 1)


def _greedy_by_iou(gt, pred):
    """The naive alternative: take pairs by IoU descending, one-to-one."""
    pairs = sorted(((interval_iou(*g, *p), i, j) for i, g in enumerate(gt) for j, p in enumerate(pred)), reverse=True)
    used_g, used_p, n = set(), set(), 0
    for iou, i, j in pairs:
        if iou >= 0.5 and i not in used_g and j not in used_p:
            used_g.add(i), used_p.add(j)
            n += 1
    return n


def test_maximum_matching_beats_greedy_on_crafted_case():
    # P1 fits A perfectly but also hits B; P2 hits only A. Greedy pairs P1-A and strands both.
    gt = [(10, 19), (13, 22)]
    pred = [(10, 19), (8, 17)]
    assert _greedy_by_iou(gt, pred) == 1
    assert len(match_max(np.array(gt), np.array(pred))) == 2
    r = evaluate(table(*[("v", a, b, "macro") for a, b in gt]), table(*[("v", a, b, "macro") for a, b in pred]))
    assert counts(r) == (2, 0, 0)


def _brute_force_max(gt, pred):
    best = 0
    for k in range(min(len(gt), len(pred)), 0, -1):
        for gs in itertools.combinations(range(len(gt)), k):
            for ps in itertools.permutations(range(len(pred)), k):
                if all(interval_iou(*gt[g], *pred[p]) >= 0.5 for g, p in zip(gs, ps)):
                    return k
    return best


def test_matching_is_maximum_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(150):
        def draw(n):
            on = rng.integers(0, 40, n)
            return [(int(a), int(a + rng.integers(0, 12))) for a in on]
        gt, pred = draw(rng.integers(1, 5)), draw(rng.integers(1, 5))
        pairs = match_max(np.array(gt), np.array(pred))
        assert len({g for g, _ in pairs}) == len({p for _, p in pairs}) == len(pairs)
        assert all(interval_iou(*gt[g], *pred[p]) >= 0.5 for g, p in pairs)
        assert len(pairs) == _brute_force_max(gt, pred)


def test_per_video_sums_to_evaluate_and_format_table():
    gt = table(("a", 0, 9, "macro"), ("a", 40, 45, "micro"), ("b", 10, 60, "macro"))
    pred = table(("a", 1, 9, "macro"), ("b", 100, 120, "macro"), ("c", 3, 6, "micro"))
    r = evaluate(gt, pred)
    pv = per_video(gt, pred)
    assert set(pv["video"]) == {"a", "b", "c"}
    assert tuple(int(pv[k].sum()) for k in ("tp", "fp", "fn")) == counts(r) == (1, 2, 2)
    text = format_table(r)
    lines = text.splitlines()
    assert [ln.split()[0] for ln in lines[1:]] == ["macro", "micro", "overall"]
    assert len({len(ln) for ln in lines}) == 1  # aligned


def test_unknown_variant_is_an_error():
    with pytest.raises(DataError, match="variant"):
        evaluate(table(("a", 0, 9, "macro")), table(), variant="nope")


@pytest.fixture()
def gt_pred_files(tmp_path):
    gt = table(("a", 0, 9, "macro"), ("a", 40, 45, "micro"), ("b", 10, 60, "macro"))
    pred = table(("a", 1, 9, "macro"), ("a", 41, 45, "micro"), ("c", 3, 6, "micro"), score=True)
    write_intervals(gt, tmp_path / "gt.csv")
    write_predictions(pred, tmp_path / "pred.csv")
    return gt, pred, tmp_path / "gt.csv", tmp_path / "pred.csv"


def test_cli_json_matches_evaluate(gt_pred_files):
    gt, pred, gt_path, pred_path = gt_pred_files
    out = subprocess.run([sys.executable, "-m", "spotting", "evaluate", "--gt", str(gt_path), "--pred",
                          str(pred_path), "--json"], capture_output=True, text=True, check=True)
    parsed = json.loads(out.stdout)
    assert parsed == evaluate(gt, pred)
    assert set(parsed) == {"macro", "micro", "overall"}
    assert set(parsed["overall"]) == {"tp", "fp", "fn", "precision", "recall", "f1"}


def test_cli_table_variant_and_missing_score(gt_pred_files, tmp_path, capsys):
    gt, pred, gt_path, _ = gt_pred_files
    no_score = tmp_path / "pred_noscore.csv"
    pred.drop(columns="score").to_csv(no_score, index=False)
    per_video_csv = tmp_path / "pv.csv"
    assert dispatch("spotting", COMMANDS, ["evaluate", "--gt", str(gt_path), "--pred", str(no_score),
                                           "--variant", "softnet", "--per-video", str(per_video_csv)]) == 0
    text = capsys.readouterr().out
    expected = format_table(evaluate(gt, pred, "softnet"))
    assert expected.splitlines()[-1] in text
    assert pd.read_csv(per_video_csv)["tp"].sum() == 2
    friendly = tmp_path / "pred_friendly.csv"
    friendly.write_text("Video,Onset,Offset,Type,Score\na,1,9,Macro,0.7\n,,,,\nc,3,6,micro-expression,0.2\n")
    assert dispatch("spotting", COMMANDS, ["evaluate", "--gt", str(gt_path), "--pred", str(friendly), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["overall"] == evaluate(gt, table(("a", 1, 9, "macro"),
                                                                               ("c", 3, 6, "micro")))["overall"]


def test_cli_bad_file_exits_2_with_one_line_error(gt_pred_files, tmp_path, capsys):
    _, _, gt_path, pred_path = gt_pred_files
    bad = tmp_path / "bad_pred.csv"
    bad.write_text("subject,video,onset,apex,offset,type,emotion,score\ns,v,ten,1,5,macro,,0.9\n")
    assert dispatch("spotting", COMMANDS, ["evaluate", "--gt", str(gt_path), "--pred", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "onset" in err
    missing = tmp_path / "nope.csv"
    assert dispatch("spotting", COMMANDS, ["evaluate", "--gt", str(missing), "--pred", str(pred_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err and "not found" in err

"""The spotting metric (DESIGN.md §5): interval IoU matching, TP/FP/FN, precision, recall, F1.

Intervals are inclusive integer frames: length = offset - onset + 1, and
IoU = |intersection| / |union| counted in frames. A prediction and a ground-truth interval
*match* when they have the same type and IoU >= 0.5 (compared exactly in integers, so
[100, 109] against [100, 119] -- IoU 10/20 -- is a hit and [100, 108] -- 9/20 -- a miss).

Variants (pick the one the table you compare with used, and say which):

- ``"megc"`` (default, ours): one-to-one matching per video and type that maximises the
  number of matches (bipartite matching on the IoU >= 0.5 graph, ties broken towards the
  larger total IoU). Unmatched predictions are false positives in every video, including
  videos with no ground truth; TP/FP/FN are summed over videos per type. This is the
  protocol of the MEGC spotting challenges (2020-2023) as their papers describe it, and the
  one our own tables report.
- ``"softnet"``: the same matching, but a type is scored only in videos that hold ground
  truth of that type; predictions in every other video are ignored. SOFTNet's released
  CAS(ME)^2 / SAMM-LV code keeps only such videos before spotting (its ground-truth loader
  drops videos without intervals of the evaluated type), so its published CAS(ME)^2 and
  SAMM-LV tables follow this variant; so does any work that reuses that evaluation code.
- ``"strs"``: the loose counting of community scripts that loop over the annotated videos
  and count ground truths hit by any prediction (e.g. the public MEGC 2023 CAS(ME)^3 spotting
  script of qin123xyz/MEGC2023_macro-and-micro-expression-spotting, which also lets one
  ground truth count twice; we do not): predictions are taken in row order and each one is
  credited with *every* still-unmatched ground truth it overlaps at IoU >= 0.5, so one
  prediction may produce several true positives; videos without any ground truth are
  ignored. TP = matched ground truths, FP = predictions credited with nothing, FN =
  unmatched ground truths. It flatters long predictions; use it only to line up with tables
  computed that way, and say so.

In every variant P = TP / (TP + FP), R = TP / (TP + FN), F1 = 2PR / (P + R), each 0 when
its denominator is 0, computed from the sums; "overall" sums macro and micro counts.
Prediction scores are not used: threshold predictions before evaluating them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from data.common.errors import DataError
from data.common.tables import TYPES

VARIANTS = ("megc", "softnet", "strs")
COUNT_KEYS = ("tp", "fp", "fn")


def interval_iou(a_onset: int, a_offset: int, b_onset: int, b_offset: int) -> float:
    """IoU of two inclusive frame intervals."""
    inter, union = _overlap(a_onset, a_offset, b_onset, b_offset)
    return inter / union


def _overlap(a_on, a_off, b_on, b_off) -> tuple[int, int]:
    inter = max(0, min(a_off, b_off) - max(a_on, b_on) + 1)
    union = (a_off - a_on + 1) + (b_off - b_on + 1) - inter
    return inter, union


def _hit_matrix(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hits, iou) for every (gt, pred) pair; gt and pred are (n, 2) arrays of [onset, offset]."""
    g_on, g_off = gt[:, :1], gt[:, 1:2]
    p_on, p_off = pred[:, 0][None, :], pred[:, 1][None, :]
    inter = np.clip(np.minimum(g_off, p_off) - np.maximum(g_on, p_on) + 1, 0, None)
    union = (g_off - g_on + 1) + (p_off - p_on + 1) - inter
    # Integer test, so IoU exactly 0.5 is never lost to rounding.
    return 2 * inter >= union, inter / union


def match_max(gt: np.ndarray, pred: np.ndarray) -> list[tuple[int, int]]:
    """Maximum one-to-one matching on the IoU >= 0.5 graph: list of (gt index, pred index)."""
    if len(gt) == 0 or len(pred) == 0:
        return []
    hits, iou = _hit_matrix(gt, pred)
    if not hits.any():
        return []
    # Weight 1 per edge plus a tie-break below 1/(pairs) so cardinality always wins over IoU.
    weight = np.where(hits, 1.0 + iou / (min(hits.shape) + 1), 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if hits[r, c]]


def match_greedy(gt: np.ndarray, pred: np.ndarray) -> list[tuple[int, int]]:
    """The "strs" counting: predictions in row order, each takes every free GT it hits."""
    if len(gt) == 0 or len(pred) == 0:
        return []
    hits, _ = _hit_matrix(gt, pred)
    taken = np.zeros(len(gt), bool)
    pairs = []
    for p in range(len(pred)):
        for g in np.flatnonzero(hits[:, p] & ~taken):
            taken[g] = True
            pairs.append((int(g), p))
    return pairs


def _check_frame(df: pd.DataFrame, name: str) -> None:
    missing = [c for c in ("video", "onset", "offset", "type") if c not in df.columns]
    if missing:
        raise DataError(f"{name} table lacks column(s) {missing}", field=missing[0],
                        fix="pass an interval table (data.common.tables.read_intervals)")
    bad = sorted(set(df["type"]) - set(TYPES))
    if bad:
        raise DataError(f"{name} table has unknown type(s) {bad}", field="type", fix="types are 'macro' or 'micro'")


def _scored_videos(gt: pd.DataFrame, pred: pd.DataFrame, kind: str, variant: str) -> list[str]:
    if variant == "megc":
        videos = set(gt["video"]) | set(pred["video"])
    elif variant == "softnet":
        videos = set(gt.loc[gt["type"] == kind, "video"])
    else:  # strs: videos holding any ground truth
        videos = set(gt["video"])
    return sorted(videos)


def per_video(gt_df: pd.DataFrame, pred_df: pd.DataFrame, variant: str = "megc") -> pd.DataFrame:
    """Counts per (video, type) that the variant scores: video, type, n_gt, n_pred, tp, fp, fn.

    Useful for plots and for finding the videos that cost the most F1.
    """
    if variant not in VARIANTS:
        raise DataError(f"unknown metric variant {variant!r}", field="variant", fix=f"use one of {VARIANTS}")
    _check_frame(gt_df, "ground-truth")
    _check_frame(pred_df, "prediction")
    match = match_greedy if variant == "strs" else match_max
    rows = []
    for kind in TYPES:
        gt_k = gt_df[gt_df["type"] == kind]
        pred_k = pred_df[pred_df["type"] == kind]
        gt_by = {v: g[["onset", "offset"]].to_numpy(np.int64) for v, g in gt_k.groupby("video", sort=False)}
        pred_by = {v: p[["onset", "offset"]].to_numpy(np.int64) for v, p in pred_k.groupby("video", sort=False)}
        empty = np.zeros((0, 2), np.int64)
        for video in _scored_videos(gt_df, pred_df, kind, variant):
            g, p = gt_by.get(video, empty), pred_by.get(video, empty)
            pairs = match(g, p)
            tp = len(pairs)
            fp = len(p) - len({q for _, q in pairs})
            rows.append({"video": video, "type": kind, "n_gt": len(g), "n_pred": len(p),
                         "tp": tp, "fp": fp, "fn": len(g) - tp})
    return pd.DataFrame(rows, columns=["video", "type", "n_gt", "n_pred", "tp", "fp", "fn"])


def scores(tp: int, fp: int, fn: int) -> dict:
    """{tp, fp, fn, precision, recall, f1} from summed counts (0 where a denominator is 0)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": int(tp), "fp": int(fp), "fn": int(fn), "precision": precision, "recall": recall, "f1": f1}


def evaluate(gt_df: pd.DataFrame, pred_df: pd.DataFrame, variant: str = "megc") -> dict:
    """{"macro": {...}, "micro": {...}, "overall": {...}}, each {tp, fp, fn, precision, recall, f1}."""
    table = per_video(gt_df, pred_df, variant)
    result = {}
    for kind in TYPES:
        sums = table.loc[table["type"] == kind, list(COUNT_KEYS)].sum()
        result[kind] = scores(*(int(sums[k]) for k in COUNT_KEYS))
    result["overall"] = scores(*(result["macro"][k] + result["micro"][k] for k in COUNT_KEYS))
    return result


def evaluate_variants(gt_df: pd.DataFrame, pred_df: pd.DataFrame) -> dict:
    """{variant: evaluate(...)} for every metric variant."""
    return {variant: evaluate(gt_df, pred_df, variant) for variant in VARIANTS}


def format_variants(results: dict, title: str) -> str:
    """format_table of every variant in `results` (as evaluate_variants returns it), titled "<title> (<variant>)"."""
    return "\n\n".join(format_table(results[v], f"{title} ({v})") for v in VARIANTS) + "\n"


def format_table(result: dict, title: str | None = None) -> str:
    """Aligned text table: one row per macro, micro, overall."""
    head = f"{'':8s} {'TP':>5s} {'FP':>6s} {'FN':>5s} {'P':>7s} {'R':>7s} {'F1':>7s}"
    lines = [title] if title else []
    lines.append(head)
    for key in ("macro", "micro", "overall"):
        r = result[key]
        lines.append(f"{key:8s} {r['tp']:5d} {r['fp']:6d} {r['fn']:5d} "
                     f"{r['precision']:7.4f} {r['recall']:7.4f} {r['f1']:7.4f}")
    return "\n".join(lines)

"""Choosing how the detector's boxes become intervals, on out-of-sample boxes of training subjects only.

Per class: a suppression from `nms_grid` and a score threshold (the quantiles of the boxes' scores), where the
pooled F1 over the scored videos is best (ties: the higher threshold, fewer intervals). Macro first, by macro
F1. Boxes are counted as prediction outputs them (spotting.intervals.final_intervals): copies of a better box
dropped, and micro boxes within the chosen macro intervals removed. Micro is scored by the *overall* F1 with the
macro counts fixed: a micro detector that only adds false positives is then switched off (threshold infinity)
instead of being kept for a few hits.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from spotting import intervals as iv
from spotting.channels.vocabulary import VideoFeatures
from spotting.detector import decode as dd
from spotting.detector.model import CLASSES
from spotting.evaluation.metric import match_max

NO_PREDICTIONS = float("inf")  # a class threshold that switches the class off


def f1(tp, n_pred, n_gt):
    return 2 * np.asarray(tp, float) / np.maximum(np.asarray(n_pred, float) + n_gt, 1)


def _inside(micro: np.ndarray, macro: np.ndarray, max_inside: float) -> np.ndarray:
    """bool [M]: micro spans lying (by more than max_inside of their length) inside any macro span."""
    if not len(macro) or not len(micro):
        return np.zeros(len(micro), bool)
    inter = np.clip(np.minimum(micro[:, None, 1], macro[None, :, 1])
                    - np.maximum(micro[:, None, 0], macro[None, :, 0]) + 1, 0, None)
    return (inter / (micro[:, 1:2] - micro[:, 0:1] + 1)).max(1) > max_inside


def final_spans(boxes: np.ndarray, item: VideoFeatures) -> tuple[np.ndarray, np.ndarray]:
    """(scores [M'], frame spans [M', 2]) of one class's suppressed boxes of a video that can be final intervals
    (spotting.intervals.final_intervals drops copies): above any threshold, the ones prediction keeps above it."""
    scores, spans = boxes[:, 2], dd.frame_spans(boxes, item.fps, item.num_frames)
    first = iv.first_copies(spans, scores)
    return scores[first], spans[first]


def class_counts(boxes: dict, items: list[VideoFeatures], gt: pd.DataFrame, kind: str, thresholds: np.ndarray,
                 macro_kept: dict | None, max_inside: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Pooled (true positives [T], predictions [T], ground truths) of one class at each threshold."""
    k = CLASSES.index(kind)
    tp, n_pred, n_gt = np.zeros(len(thresholds)), np.zeros(len(thresholds)), 0
    for it in items:
        d = boxes[it.video]
        d = d[d[:, 3] == k]
        scores, spans = final_spans(d, it)
        if macro_kept is not None:
            keep = ~_inside(spans, macro_kept[it.video], max_inside)
            scores, spans = scores[keep], spans[keep]
        g = gt[(gt["video"] == it.video) & (gt["type"] == kind)][["onset", "offset"]].to_numpy(np.int64)
        n_gt += len(g)
        for i, thr in enumerate(thresholds):
            p = spans[scores >= thr]
            n_pred[i] += len(p)
            tp[i] += len(match_max(g, p))
    return tp, n_pred, n_gt


def threshold_grid(boxes: dict, k: int, size: int) -> np.ndarray:
    scores = np.concatenate([d[d[:, 3] == k, 2] for d in boxes.values()] + [np.zeros(0)])
    scores = scores[scores >= 0.01]
    return np.unique(np.quantile(scores, np.linspace(0, 1, size))) if len(scores) else np.array([0.5])


def choose(cands: dict, items: list[VideoFeatures], gt: pd.DataFrame, nms_grid: list[str], size: int,
           max_inside: float) -> dict:
    """{"threshold", "nms", "inner_f1"} per class and "inner_overall_f1", from candidates {video: [M, 4]}."""
    chosen = {"threshold": {}, "nms": {}, "inner_f1": {}}
    macro_kept, macro_counts = None, (0.0, 0.0, 0)
    for kind in ("macro", "micro"):
        k, best = CLASSES.index(kind), None
        for spec in nms_grid:
            boxes = {v: dd.suppress(c, k, spec) for v, c in cands.items()}
            grid = threshold_grid(boxes, k, size)
            if kind == "micro":
                grid = np.append(grid, NO_PREDICTIONS)
            tp, n_pred, n_gt = class_counts(boxes, items, gt, kind, grid, macro_kept, max_inside)
            goal = f1(tp, n_pred, n_gt)
            if kind == "micro":
                goal = f1(tp + macro_counts[0], n_pred + macro_counts[1], n_gt + macro_counts[2])
            i = max(range(len(grid)), key=lambda j: (goal[j], grid[j]))
            if best is None or (goal[i], grid[i]) > best[:2]:
                best = (float(goal[i]), float(grid[i]), spec, boxes, float(f1(tp, n_pred, n_gt)[i]),
                        (tp[i], n_pred[i], n_gt))
        goal, threshold, spec, boxes, class_f1, counts = best
        chosen["threshold"][kind], chosen["nms"][kind], chosen["inner_f1"][kind] = threshold, spec, class_f1
        if kind == "macro":
            macro_counts = counts
            macro_kept = {}
            for it in items:
                scores, spans = final_spans(boxes[it.video], it)
                macro_kept[it.video] = spans[scores >= threshold]
        else:
            chosen["inner_overall_f1"] = goal
    return chosen

"""The temporal detector's outputs -> scored candidate boxes -> suppressed boxes -> typed frame intervals.

Every (position, level, class) of spotting.detector.model is a candidate box in seconds. Candidates are suppressed per
class, by Gaussian soft-NMS ("soft:<sigma>") or hard NMS ("hard:<iou>"): which one, and the score threshold per
class, are chosen on the training subjects (spotting.detector.reader). Boxes are converted to frame intervals
at the video's own rate last, so one detector serves 30 and 200 fps alike.
"""
from __future__ import annotations

import numpy as np

from spotting import intervals as iv
from spotting.detector.model import CLASSES, DetectorConfig, positions

PRE_NMS_TOPK = 2000  # candidates kept per video before suppression (a 40 s video has ~2,300 positions)
MIN_SCORE = 1e-3  # candidates below this are never intervals
MAX_PER_CLASS = 200  # boxes kept per class and video after suppression


def average_outputs(runs: list) -> list[tuple[np.ndarray, np.ndarray]]:
    """Element-wise mean of several models' raw_outputs of one sequence (an ensemble)."""
    return [(np.mean([r[i][0] for r in runs], 0), np.mean([r[i][1] for r in runs], 0)) for i in range(len(runs[0]))]


def decode(raw: list, n: int, cfg: DetectorConfig) -> np.ndarray:
    """raw_outputs of a sequence of n grid steps -> candidates [M, 4] (onset_s, end_s, score, class), best
    first, at most PRE_NMS_TOPK, unsuppressed."""
    rows = []
    for stride, (prob, d) in zip(cfg.strides, raw):
        p = positions(prob.shape[1] * stride, stride)
        valid = p < n
        on, end = (p - d[0]) / cfg.rate_hz, (p + d[1]) / cfg.rate_hz
        for k in range(len(CLASSES)):
            keep = valid & (prob[k] >= MIN_SCORE)
            rows.append(np.stack([on[keep], end[keep], prob[k][keep], np.full(keep.sum(), k)], 1))
    cand = np.concatenate(rows) if rows else np.zeros((0, 4))
    cand[:, :2] = np.clip(cand[:, :2], 0, n / cfg.rate_hz)
    cand = cand[cand[:, 1] - cand[:, 0] > 0.5 / cfg.rate_hz]
    return cand[np.argsort(-cand[:, 2], kind="stable")[:PRE_NMS_TOPK]]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box a [2] with boxes b [M, 2]."""
    inter = np.clip(np.minimum(a[1], b[:, 1]) - np.maximum(a[0], b[:, 0]), 0, None)
    return inter / np.maximum((a[1] - a[0]) + (b[:, 1] - b[:, 0]) - inter, 1e-9)


def parse_nms(spec: str) -> tuple[str, float]:
    """"soft:<sigma>" or "hard:<iou>" -> (mode, value)."""
    mode, _, value = spec.partition(":")
    if mode not in ("soft", "hard") or not value:
        raise ValueError(f"unknown suppression {spec!r}: use soft:<sigma> or hard:<iou>")
    return mode, float(value)


def suppress(cand: np.ndarray, k: int, spec: str) -> np.ndarray:
    """Class k's candidates after suppression `spec`: [M', 4] best first."""
    mode, value = parse_nms(spec)
    c = cand[cand[:, 3] == k].copy()
    kept = []
    while len(c) and len(kept) < MAX_PER_CLASS:
        i = int(np.argmax(c[:, 2]))
        best = c[i].copy()
        if best[2] < MIN_SCORE:
            break
        kept.append(best)
        c = np.delete(c, i, 0)
        if len(c):
            overlap = _iou(best[:2], c[:, :2])
            if mode == "soft":
                c[:, 2] *= np.exp(-(overlap ** 2) / value)
            else:
                c = c[overlap < value]
    return np.asarray(kept).reshape(-1, 4)


def suppress_all(cand: np.ndarray, specs: dict[str, str]) -> np.ndarray:
    """Every class suppressed with its own spec ({"macro": "hard:0.3", "micro": "soft:0.5"})."""
    res = np.concatenate([suppress(cand, k, specs[name]) for k, name in enumerate(CLASSES)])
    return res[np.argsort(-res[:, 2], kind="stable")]


def frame_spans(boxes: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """Boxes in seconds [M, >=2] -> inclusive frame intervals [M, 2] (onset, offset) of a video."""
    on = np.clip(np.round(boxes[:, 0] * fps), 0, num_frames - 1).astype(np.int64)
    off = np.maximum(np.clip(np.round(boxes[:, 1] * fps) - 1, 0, num_frames - 1).astype(np.int64), on)
    return np.stack([on, off], 1)


def to_intervals(boxes: np.ndarray, fps: float, num_frames: int, threshold: dict[str, float],
                 micro_inside_macro: float) -> list[iv.Interval]:
    """Suppressed boxes -> typed frame intervals above each class's threshold, through the last step of every
    spotter (spotting.intervals.final_intervals): copies of one interval (IoU >= 0.5, which soft-NMS leaves with
    a lowered score) and micro intervals lying inside a macro interval are dropped."""
    found = {kind: [] for kind in CLASSES}
    spans = frame_spans(boxes, fps, num_frames)
    for (on, off), (_, _, score, k) in zip(spans, boxes):
        kind = CLASSES[int(k)]
        if score >= threshold[kind]:
            found[kind].append(iv.Interval(int(on), int(on + off) // 2, int(off), kind, float(score)))
    return iv.final_intervals(found["macro"], found["micro"], micro_inside_macro)

"""Per-frame score curve -> typed intervals: smoothing, threshold, peaks, interval formation, NMS, type conflicts.

Shared by every spotter: the flow baseline feeds region-motion curves, model-based spotters feed predicted
per-frame scores; both end in `spot_curve` (one type), and every spotter's output goes last through
`final_intervals` (no two intervals of one type overlapping by IoU >= 0.5; micro inside macro dropped).
Frames are 0-based and intervals inclusive, as in the interval table (DESIGN.md §3).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from data.common.tables import PREDICTION_COLUMNS, validate_intervals


@dataclasses.dataclass(frozen=True)
class Interval:
    onset: int
    apex: int
    offset: int
    type: str
    score: float

    def __len__(self) -> int:
        return self.offset - self.onset + 1


def smooth(curve: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over `window` frames (made odd); edges average over the frames that exist."""
    curve = np.asarray(curve, dtype=np.float64)
    window = max(1, int(window)) | 1
    if window == 1 or len(curve) == 0:
        return curve.copy()
    kernel = np.ones(window)
    total = np.convolve(curve, kernel, mode="same")
    count = np.convolve(np.ones_like(curve), kernel, mode="same")
    return total / count


def softnet_threshold(curve: np.ndarray, p: float) -> float:
    """SOFTNet's per-video threshold mean + p * (max - mean): p=0 keeps every above-average peak, p=1 only the max."""
    curve = np.asarray(curve, dtype=np.float64)
    if len(curve) == 0:
        return float("inf")
    mean = float(curve.mean())
    return mean + p * (float(curve.max()) - mean)


def detect_peaks(curve: np.ndarray, threshold: float, distance: int) -> np.ndarray:
    """Indices of local maxima >= threshold, at least `distance` frames apart (the higher one wins)."""
    from scipy.signal import find_peaks

    curve = np.asarray(curve, dtype=np.float64)
    if len(curve) < 3:
        return np.zeros(0, dtype=np.int64)
    peaks, _ = find_peaks(curve, height=threshold, distance=max(1, int(distance)))
    return peaks.astype(np.int64)


def half_max_extent(curve: np.ndarray, peak: int, floor: float, fraction: float = 0.5,
                    max_half: int | None = None) -> tuple[int, int]:
    """The frames around `peak` where the curve stays above floor + fraction * (curve[peak] - floor)."""
    level = floor + fraction * (curve[peak] - floor)
    lo_limit = 0 if max_half is None else max(0, peak - max_half)
    hi_limit = len(curve) - 1 if max_half is None else min(len(curve) - 1, peak + max_half)
    lo = peak
    while lo > lo_limit and curve[lo - 1] >= level:
        lo -= 1
    hi = peak
    while hi < hi_limit and curve[hi + 1] >= level:
        hi += 1
    return lo, hi


def peak_intervals(curve: np.ndarray, peaks, half_width: int, kind: str, extent: str = "fixed",
                   max_half: int | None = None) -> list[Interval]:
    """One interval per peak: [peak - half_width, peak + half_width] ("fixed", SOFTNet) or the curve's
    half-maximum extent, never narrower than the fixed one ("half_max"); clipped to the curve."""
    curve = np.asarray(curve, dtype=np.float64)
    last = len(curve) - 1
    floor = float(np.median(curve)) if len(curve) else 0.0
    out = []
    for p in peaks:
        p = int(p)
        lo, hi = p - half_width, p + half_width
        if extent == "half_max":
            a, b = half_max_extent(curve, p, floor, max_half=max_half)
            lo, hi = min(lo, a), max(hi, b)
        elif extent != "fixed":
            raise ValueError(f"extent must be 'fixed' or 'half_max', got {extent!r}")
        out.append(Interval(max(0, lo), p, min(last, hi), kind, float(curve[p])))
    return out


def iou(a: Interval, b: Interval) -> float:
    """Intersection over union of two inclusive frame intervals."""
    inter = min(a.offset, b.offset) - max(a.onset, b.onset) + 1
    if inter <= 0:
        return 0.0
    return inter / (len(a) + len(b) - inter)


def nms(intervals: list[Interval], iou_threshold: float) -> list[Interval]:
    """Greedy non-maximum suppression: keep the best-scoring, drop any later one overlapping a kept one."""
    kept: list[Interval] = []
    for cand in sorted(intervals, key=lambda x: -x.score):
        if all(iou(cand, k) < iou_threshold for k in kept):
            kept.append(cand)
    return sorted(kept, key=lambda x: x.onset)


# Two intervals of one type at this IoU or more are copies of one event: the metric (spotting.evaluation.metric)
# matches a prediction to a ground truth at IoU >= 0.5 one to one, so every copy after the first is a false positive.
COPY_IOU = 0.5


def first_copies(spans: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """bool [M]: which of the inclusive frame spans [M, 2] (onset, offset) survive greedy suppression of copies,
    best score first (ties: the earlier row), where a copy overlaps an already kept span by IoU >= COPY_IOU,
    compared in integers as the metric does. A span's fate depends only on the better-scored ones, so the
    spans kept above any score threshold are those this mask keeps above it."""
    spans = np.asarray(spans, np.int64).reshape(-1, 2)
    keep = np.zeros(len(spans), bool)
    alive = np.ones(len(spans), bool)
    for i in np.argsort(-np.asarray(scores, np.float64), kind="stable"):
        if not alive[i]:
            continue
        keep[i] = True
        inter = np.clip(np.minimum(spans[i, 1], spans[:, 1]) - np.maximum(spans[i, 0], spans[:, 0]) + 1, 0, None)
        union = (spans[i, 1] - spans[i, 0] + 1) + (spans[:, 1] - spans[:, 0] + 1) - inter
        alive &= ~(inter >= COPY_IOU * union)
    return keep


def drop_copies(intervals: list[Interval]) -> list[Interval]:
    """One type's intervals without copies (first_copies): of two intervals with IoU >= 0.5, the higher-scored
    one stays as it was decoded.

    Keep, not merge: the kept copy's boundaries are the ones the spotter scored best (the detector regressed
    them, the curve's extent drew them); a merged union is longer than either copy, can fall below IoU 0.5 with
    the event the better copy matched, and has no score of its own. Intervals overlapping by less (IoU < 0.5) are
    all kept: they may be two events close together (two micro-expressions 0.3 s apart), and each reader's own
    suppression, chosen on training subjects, already decided about them."""
    if len(intervals) < 2:
        return list(intervals)
    spans = np.array([(i.onset, i.offset) for i in intervals])
    keep = first_copies(spans, np.array([i.score for i in intervals]))
    return [i for i, k in zip(intervals, keep) if k]


def count_copies(pred: pd.DataFrame) -> int:
    """Rows of a predictions table that are a copy (IoU >= 0.5) of a better-scored row of the same video and
    type: what final_intervals drops, and a false positive each under the metric."""
    dropped = 0
    for _, rows in pred.groupby(["video", "type"], sort=False):
        dropped += len(rows) - int(first_copies(rows[["onset", "offset"]].to_numpy(), rows["score"].to_numpy()).sum())
    return dropped


def covered_fraction(inner: Interval, outer: Interval) -> float:
    """How much of `inner` lies inside `outer`."""
    inter = min(inner.offset, outer.offset) - max(inner.onset, outer.onset) + 1
    return max(0, inter) / len(inner)


def resolve_types(macro: list[Interval], micro: list[Interval], max_inside: float) -> list[Interval]:
    """Drop micro intervals that lie (by more than `max_inside` of their length) inside a macro interval:
    a macro expression's onset/offset also excites the micro stream, and ground truth never nests them."""
    kept_micro = [m for m in micro if all(covered_fraction(m, big) <= max_inside for big in macro)]
    return sorted(macro + kept_micro, key=lambda x: (x.onset, x.type))


def final_intervals(macro: list[Interval], micro: list[Interval], max_inside: float) -> list[Interval]:
    """The last step of every spotter (the detector and logistic readers, the flow baseline, the published
    methods, live spotting): copies of one interval dropped per type (drop_copies), then micro intervals lying
    inside a final macro interval dropped (resolve_types). Nothing of one type then overlaps by IoU >= 0.5;
    below that, both intervals stay (drop_copies says why). Sorted by onset, then type."""
    return resolve_types(drop_copies(macro), drop_copies(micro), max_inside)


def spot_curve(curve: np.ndarray, half_width: int, p: float, kind: str, smooth_window: int = 1,
               distance: int | None = None, extent: str = "fixed", nms_iou: float = 0.5,
               max_half: int | None = None) -> list[Interval]:
    """The whole chain for one type: smooth -> threshold -> peaks (>= `distance`, default half_width apart)
    -> intervals -> NMS."""
    smoothed = smooth(curve, smooth_window)
    peaks = detect_peaks(smoothed, softnet_threshold(smoothed, p), half_width if distance is None else distance)
    return nms(peak_intervals(smoothed, peaks, half_width, kind, extent, max_half), nms_iou)


def to_frame(intervals: list[Interval], subject: str, video: str) -> pd.DataFrame:
    """Intervals of one video as a predictions table (data.common.tables.PREDICTION_COLUMNS)."""
    rows = [{"subject": subject, "video": video, "onset": i.onset, "apex": i.apex, "offset": i.offset,
             "type": i.type, "emotion": "", "score": i.score} for i in intervals]
    df = pd.DataFrame(rows, columns=PREDICTION_COLUMNS)
    return validate_intervals(df, f"<predictions {video}>", with_score=True)

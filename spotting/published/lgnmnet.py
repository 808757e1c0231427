"""LGNMNet-style labels and post-processing, on the SOFTNet network (spotting.published.softnet).

LGNMNet's own backbone (a lite network with MagFace features) is not available here; what this option takes from
it is the part that differs in the spotting protocol:

- Labels by intersection rate: a window [i, i+k] is positive (1) when, for some ground truth, the frames they
  share divided by the shorter of the two lengths exceed 0.5; otherwise 0. Unlike the IoU, a short micro
  expression fully inside a longer window (or a window fully inside a long macro) counts as positive.
- Savitzky-Golay smoothing of the score curve (scipy.signal.savgol_filter, window 2k+1 frames, order 2) instead of
  a moving average: it keeps the height and position of narrow peaks that a box filter flattens.
- Adjacent-peak pairing: peaks of the smoothed curve above the SOFTNet threshold are scanned in time order; two
  adjacent peaks no further apart than the type's longest duration are one expression (its rise and its fall
  each excite the score), giving [first peak - k//2, second peak + k//2]; a peak without a partner gives
  [peak - k, peak + k] as in SOFTNet. We could not retrieve the paper's text with the search tool, so this is our
  reading of the rule, stated here so it can be checked and changed in one place.
"""
from __future__ import annotations

import numpy as np

from spotting import intervals as iv
from spotting.published.softnet import _overlaps, centre

SAVGOL_ORDER = 2


def intersection_rate_labels(start: np.ndarray, end: np.ndarray, gt: np.ndarray, rate: float = 0.5) -> np.ndarray:
    """1 where |window & gt| / min(|window|, |gt|) > rate for some ground truth, else 0."""
    inter = _overlaps(start, end, gt)
    if inter.shape[1] == 0:
        return np.zeros(len(start), np.float32)
    shorter = np.minimum((end - start + 1)[:, None], (gt[:, 1] - gt[:, 0] + 1)[None, :])
    return ((inter / shorter) > rate).any(1).astype(np.float32)


def savgol(curve: np.ndarray, window: int, order: int = SAVGOL_ORDER) -> np.ndarray:
    """Savitzky-Golay smoothing; the window is made odd and shrunk to fit short curves."""
    from scipy.signal import savgol_filter

    curve = np.asarray(curve, dtype=np.float64)
    window = min(int(window) | 1, len(curve) - (1 - len(curve) % 2))
    if window <= order:
        return curve.copy()
    return savgol_filter(curve, window, order, mode="interp")


def pair_peaks(peaks, max_gap: int) -> list[tuple[int, int]]:
    """Adjacent peaks at most `max_gap` apart as (first, second); a lone peak as (p, p). Each peak used once."""
    peaks = [int(p) for p in sorted(peaks)]
    out, i = [], 0
    while i < len(peaks):
        if i + 1 < len(peaks) and peaks[i + 1] - peaks[i] <= max_gap:
            out.append((peaks[i], peaks[i + 1]))
            i += 2
        else:
            out.append((peaks[i], peaks[i]))
            i += 1
    return out


def paired_intervals(curve: np.ndarray, pairs: list[tuple[int, int]], k: int, kind: str) -> list[iv.Interval]:
    last = len(curve) - 1
    out = []
    for a, b in pairs:
        lo, hi = (a - k, b + k) if a == b else (a - k // 2, b + k // 2)
        lo, hi = max(0, lo), min(last, hi)
        apex = lo + int(np.argmax(curve[lo:hi + 1]))
        out.append(iv.Interval(lo, apex, hi, kind, float(curve[apex])))
    return out


def spot(score: np.ndarray, k: int, p: float, kind: str, max_duration: int, nms_iou: float = 0.5) -> list[iv.Interval]:
    """Savitzky-Golay smoothing -> SOFTNet threshold -> peaks -> adjacent-peak pairing -> NMS."""
    smoothed = savgol(centre(score, k), 2 * k + 1)
    # Peaks only need to be a few frames apart: a pair's two peaks are often closer than k.
    peaks = iv.detect_peaks(smoothed, iv.softnet_threshold(smoothed, p), distance=max(1, k // 3))
    return iv.nms(paired_intervals(smoothed, pair_peaks(peaks, max_duration), k, kind), nms_iou)

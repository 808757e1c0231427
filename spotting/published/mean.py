"""MEAN spot-then-recognize (Liong et al. 2022) and its STRS score.

Model: the SOFTNet streams and dense layer are shared by two task heads, the spotting regressor and a new
emotion-classification head (spotting.published.softnet.SoftNet with extra_heads={"emotion": C}); both are trained
together, the classifier only on windows that overlap an expression (labelled with that expression's emotion).
Each spotted interval gets the emotion whose mean softmax probability over the interval's frames is highest.

STRS (spot-then-recognize score, as MEAN proposed and MEGC 2023's STR task uses it): spotting F1 x recognition F1.
Recognition F1 is computed only over the correctly spotted intervals (the true-positive prediction/ground-truth
pairs of the spotting match): per emotion class, F1 of the predicted against the true emotion, macro-averaged over
the classes that occur among those pairs (true or predicted, as sklearn's macro F1 counts them). Here spotting F1
is the overall F1 of our "megc" metric variant, and the pairs come from its one-to-one matching.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from data.common.tables import TYPES
from spotting.evaluation.metric import evaluate, match_max
from spotting.published.softnet import best_match


def emotion_targets(start: np.ndarray, end: np.ndarray, gt: np.ndarray, gt_emotions: list[str],
                    classes: list[str]) -> np.ndarray:
    """Class index of the emotion of the ground truth each window overlaps most; -1 for none or unknown."""

    idx = best_match(start, end, gt)
    lookup = {e: i for i, e in enumerate(classes)}
    return np.array([lookup.get(gt_emotions[j], -1) if j >= 0 else -1 for j in idx], dtype=np.int64)


def interval_emotion(probs: np.ndarray, onset: int, offset: int, classes: list[str]) -> str:
    """The class with the highest mean probability over frames onset..offset ([T, C] softmax per frame)."""
    if not classes:
        return ""
    segment = probs[max(0, onset):offset + 1]
    if len(segment) == 0:
        return ""
    return classes[int(np.argmax(segment.mean(0)))]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def matched_emotions(gt: pd.DataFrame, pred: pd.DataFrame) -> list[tuple[str, str]]:
    """(true emotion, predicted emotion) for every true-positive pair of the "megc" one-to-one matching."""
    pairs = []
    for kind in TYPES:
        g_all, p_all = gt[gt["type"] == kind], pred[pred["type"] == kind]
        for video, g in g_all.groupby("video", sort=False):
            p = p_all[p_all["video"] == video]
            if p.empty:
                continue
            for gi, pi in match_max(g[["onset", "offset"]].to_numpy(np.int64), p[["onset", "offset"]].to_numpy(np.int64)):
                pairs.append((str(g["emotion"].iloc[gi]), str(p["emotion"].iloc[pi])))
    return pairs


def macro_f1(pairs: list[tuple[str, str]]) -> float:
    """Macro F1 over the classes present among true or predicted labels (0 with no pairs)."""
    if not pairs:
        return 0.0
    true = np.array([t for t, _ in pairs])
    pred = np.array([p for _, p in pairs])
    f1s = []
    for c in sorted(set(true) | set(pred)):
        tp = int(np.sum((true == c) & (pred == c)))
        fp = int(np.sum((true != c) & (pred == c)))
        fn = int(np.sum((true == c) & (pred != c)))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(f1s))


def strs(gt: pd.DataFrame, pred: pd.DataFrame) -> dict:
    """{"spot_f1", "recog_f1", "strs", "n_tp"}: STRS = spotting F1 x recognition F1 over the true positives."""
    spot_f1 = evaluate(gt, pred, "megc")["overall"]["f1"]
    pairs = matched_emotions(gt, pred)
    recog = macro_f1(pairs)
    return {"spot_f1": spot_f1, "recog_f1": recog, "strs": spot_f1 * recog, "n_tp": len(pairs)}

"""Timeline plot: one row per video, ground truth above predictions, macro and micro in their own colours,
predictions that count as true positives (same type, IoU >= 0.5, one-to-one as in spotting.evaluation.metric) filled,
false positives faded and hatched red. With labelled=False (videos without ground truth, e.g. `spotting spot` on
new footage) there is nothing to match against: every prediction is drawn solid in its type's colour."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from data.common.atomic import atomic_path
from spotting.evaluation.metric import match_max

COLOURS = {"macro": "#1f77b4", "micro": "#ff7f0e"}
FP_EDGE = "#d62728"


def save_figure(fig, path) -> Path:
    """Lay out, write atomically as PNG, and close one figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def true_positive_rows(gt: pd.DataFrame, pred: pd.DataFrame) -> set[int]:
    """Row labels of `pred` matched one-to-one to ground truth (the MEGC matching of spotting.evaluation.metric)."""

    hits: set[int] = set()
    for (video, kind), p in pred.groupby(["video", "type"], sort=False):
        g = gt[(gt["video"] == video) & (gt["type"] == kind)]
        pairs = match_max(g[["onset", "offset"]].to_numpy(np.int64), p[["onset", "offset"]].to_numpy(np.int64))
        hits.update(int(p.index[q]) for _, q in pairs)
    return hits


def _draw_row(ax, y: float, rows: pd.DataFrame, fps: float, tp: set[int] | None) -> None:
    from matplotlib.colors import to_rgba

    for label, r in rows.iterrows():
        start, width = r["onset"] / fps, (r["offset"] - r["onset"] + 1) / fps
        colour = COLOURS[r["type"]]
        hit = tp is None or label in tp
        # A false positive keeps its type's colour (faded) under a red hatch, so its type stays readable.
        ax.broken_barh([(start, width)], (y, 0.38), facecolors=colour if hit else to_rgba(colour, 0.35),
                       edgecolors=colour if hit else FP_EDGE, hatch=None if hit else "///", linewidth=1.0)


def plot_timeline(gt: pd.DataFrame | None, pred: pd.DataFrame, videos: pd.DataFrame, path, max_videos: int = 40,
                  title: str | None = None, labelled: bool = True) -> Path:
    """Write a PNG: per video (up to `max_videos`), ground truth on the upper half-row, predictions below.

    labelled=False: no ground truth exists (gt is ignored, may be None); one row of predictions per video, drawn
    by type only - an unlabelled interval is not a false positive."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    videos = videos.head(max_videos).reset_index(drop=True)
    pred = pred.reset_index(drop=True)
    tp = true_positive_rows(gt, pred) if labelled else None  # None: _draw_row draws every interval as a hit
    n = max(1, len(videos))
    fig, ax = plt.subplots(figsize=(12, 0.55 * n + 1.6))
    longest = 1.0
    for i, v in videos.iterrows():
        y = n - 1 - i
        fps = float(v["fps"])
        longest = max(longest, v["num_frames"] / fps)
        ax.axhspan(y - 0.02, y + 0.98, color="0.96" if i % 2 else "white", zorder=0)
        if labelled:
            _draw_row(ax, y + 0.5, gt[gt["video"] == v["video"]], fps, None)
        _draw_row(ax, y + 0.05 if labelled else y + 0.3, pred[pred["video"] == v["video"]], fps, tp)
    ax.set_yticks([n - 1 - i + 0.5 for i in range(len(videos))])
    ax.set_yticklabels([f"{v} (gt / pred)" if labelled else f"{v} (pred)" for v in videos["video"]], fontsize=8)
    ax.set_ylim(-0.1, n)
    ax.set_xlim(0, longest)
    ax.set_xlabel("time (s)")
    ax.set_title(title or ("ground truth (upper) vs predictions (lower)" if labelled else "predictions (no labels)"))
    legend = [Patch(facecolor=COLOURS["macro"], label="macro"), Patch(facecolor=COLOURS["micro"], label="micro")]
    if labelled:
        legend.append(Patch(facecolor="0.85", edgecolor=FP_EDGE, hatch="///", label="false positive"))
    ax.legend(handles=legend, loc="upper right", bbox_to_anchor=(1.0, 1.0 + 1.2 / (0.55 * n + 1.6)), ncol=3,
              fontsize=8, frameon=False)
    return save_figure(fig, path)


def plot_tuning(records: dict[str, dict], path) -> Path:
    """Write a PNG: per fold, the validation AUC of encoder tuning by epoch (epoch 0: the head alone on the encoder
    as given), the kept epoch marked. records: {fold name: finetune.encoder.tuning's record}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, record in records.items():
        epochs = [h["epoch"] for h in record["history"]]
        aucs = [np.nan if h["val_auc"] is None else h["val_auc"] for h in record["history"]]
        line, = ax.plot(epochs, aucs, marker="o", ms=3, label=name)
        ax.plot([record["best_epoch"]], [aucs[record["best_epoch"]]], marker="*", ms=12, color=line.get_color())
    ax.set_xlabel("epoch (0: head only, encoder as given)")
    ax.set_ylabel("validation AUC (tubelets, mean of types)")
    ax.set_title("encoder tuning per fold (star: the epoch kept)")
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)

"""`python -m spotting evaluate --gt GT --pred PRED.csv [--videos VIDEOS.csv] [--variant NAME] [--json]`.

GT is an interval table CSV or any annotation file data.annotations.adapters reads (format guessed from
the name, or --gt-format). PRED is a prediction table (data.common.tables); its `score` column may
be left out: the metric never uses scores (threshold before evaluating), so a missing
score column is read as score 1.0 rather than rejected.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd

from data.annotations.adapters import FORMATS, load_annotations
from data.common.outputs import output_file
from data.common.tables import (
    INTERVAL_COLUMNS,
    PREDICTION_COLUMNS,
    read_csv_cells,
    read_predictions,
    read_videos,
    validate_intervals,
    write_table,
)
from spotting.evaluation.metric import VARIANTS, evaluate, format_table, per_video

log = logging.getLogger(__name__)


def read_prediction_file(path) -> pd.DataFrame:
    """Read predictions: the prediction table, or any CSV data.annotations.adapters.load_csv accepts (then a
    missing `score` column means score 1.0 for every row)."""
    path = Path(path)
    header = _header(path) if path.is_file() else PREDICTION_COLUMNS
    if all(c in header for c in PREDICTION_COLUMNS):
        return read_predictions(path)
    df = load_annotations(path, format="csv")
    df["score"] = 1.0
    if "score" in header:
        raw = read_csv_cells(path, fix="write a prediction table (data.common.tables)")
        kept = raw.apply(lambda r: any(v.strip() for v in r), axis=1)  # load_csv skips all-blank rows
        df["score"] = raw.loc[kept, "score"].to_numpy()
    return validate_intervals(df, str(path), with_score=True)


def _header(path: Path) -> list[str]:
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return []  # let the full reader raise its own error naming the file


def warn_unmatched(gt: pd.DataFrame, pred: pd.DataFrame, gt_path, pred_path, shown: int = 3) -> None:
    """Warn when no prediction names a ground-truth video: every prediction is then a false positive and
    every event a miss (F1 = 0), which is almost always mismatched ids, not a spotter that found nothing."""
    gt_ids, pred_ids = set(gt["video"]), set(pred["video"])
    if not gt_ids or not pred_ids or gt_ids & pred_ids:
        return
    hint = " (the prediction ids end in a file suffix)" if any(Path(v).suffix for v in pred_ids) else ""
    log.warning("no prediction video is a ground-truth video, so every prediction is a false positive: "
                "predictions in %s name %s, ground truth in %s names %s%s; use the same video ids in both",
                pred_path, sorted(pred_ids)[:shown], gt_path, sorted(gt_ids)[:shown], hint)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m spotting evaluate",
                                description="Score predicted intervals against ground truth (DESIGN.md §5).")
    p.add_argument("--gt", required=True, help="ground truth: interval table CSV or an annotation file")
    p.add_argument("--gt-format", choices=FORMATS, default=None, help="annotation format (default: from the name)")
    p.add_argument("--pred", required=True, help="prediction table CSV (score column optional)")
    p.add_argument("--variant", choices=VARIANTS, default="megc", help="matching protocol (default megc)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object instead of a table")
    p.add_argument("--videos", metavar="CSV", default=None,
                   help="video table (subject,video,path,fps,num_frames): reject intervals past a video's last frame")
    p.add_argument("--per-video", metavar="CSV", default=None, help="also write per-video counts to CSV")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.per_video:
        output_file(args.per_video, "--per-video")
    gt = load_annotations(args.gt, format=args.gt_format)
    pred = read_prediction_file(args.pred)
    warn_unmatched(gt, pred, args.gt, args.pred)
    if args.videos:
        lengths = dict(zip(*read_videos(args.videos)[["video", "num_frames"]].T.to_numpy()))
        gt = validate_intervals(gt[INTERVAL_COLUMNS], args.gt, num_frames=lengths)
        pred = validate_intervals(pred, args.pred, with_score=True, num_frames=lengths)
    result = evaluate(gt[INTERVAL_COLUMNS], pred, variant=args.variant)
    if args.per_video:
        table = per_video(gt, pred, variant=args.variant)
        write_table(table, args.per_video, list(table.columns))
        log.info("wrote per-video counts to %s", args.per_video)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(format_table(result, title=f"variant: {args.variant}  gt: {args.gt}  pred: {args.pred}"))
    return 0

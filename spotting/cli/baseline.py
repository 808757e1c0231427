"""`python -m spotting baseline --config configs/spotting/baseline.yaml --data DIR --out DIR [key=value ...]`.

Writes OUT/predictions.csv (curves cached in OUT/curves, so a rerun only re-spots); when DIR holds intervals.csv,
also OUT/metrics.json (every metric variant) and prints the MEGC table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from data.common.atomic import write_json
from data.common.config import load_config, to_dict
from data.common.storage import shared_location
from data.common.tables import read_intervals, read_predictions
from spotting.baseline import BaselineConfig, run_baseline
from spotting.evaluation.metric import evaluate_variants, format_table


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m spotting baseline", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/spotting/baseline.yaml")
    ap.add_argument("--data", required=True, help="dataset folder with videos.csv (and intervals.csv to score)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. micro.p=0.5")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, BaselineConfig, args.overrides)
    out = Path(shared_location(args.out, "--out"))
    write_json(out / "baseline_config.json", to_dict(cfg))
    predictions = run_baseline(cfg, args.data, out)
    print(f"predictions: {predictions}")
    gt = Path(args.data) / "intervals.csv"
    if gt.is_file():
        results = evaluate_variants(read_intervals(gt), read_predictions(predictions))
        write_json(out / "metrics.json", results)
        print(format_table(results["megc"], title="baseline, metric variant megc"))
        print(f"metrics (all variants): {out / 'metrics.json'}")
    return 0

"""`python -m spotting published --method softnet|lgnmnet|mean|lgsnet|all --config configs/spotting/published.yaml
[key=value ...]`: the published methods on the LOSO folds, compared with the flow baseline and SpotMAE
(spotting.published.compare)."""
from __future__ import annotations

import argparse
import json

from data.common.config import load_config, replace
from data.common.storage import shared_locations
from spotting.published.compare import run
from spotting.published.config import PublishedConfig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m spotting published", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (configs/spotting/published.yaml)")
    parser.add_argument("--method", help="softnet | lgnmnet | mean | lgsnet | all (overrides the config's method)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3")
    args = parser.parse_args(argv)
    cfg = shared_locations(load_config(args.config, PublishedConfig, args.overrides), ("out",), args.config)
    if args.method:
        cfg = replace(cfg, {"method": args.method})
    rows = run(cfg).values()
    print(json.dumps({r.label: r.metrics["megc"]["overall"]["f1"] if "megc" in r.metrics else r.metrics
                      for r in rows}))
    return 1 if any("error" in r.metrics for r in rows) else 0

"""`python -m spotting loso --config configs/spotting/loso.yaml [key=value ...]`: leave-one-subject-out fine-tuning
and fusion, scored next to the flow baseline (spotting.evaluation.loso)."""
from __future__ import annotations

import argparse
import json

from data.common.config import load_config
from spotting.evaluation.loso import LosoConfig, located, run_loso


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m spotting loso", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (configs/spotting/loso.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. parallel=false")
    args = parser.parse_args(argv)
    cfg = located(load_config(args.config, LosoConfig, args.overrides), args.config)
    result = run_loso(cfg)
    print(json.dumps({k: v["megc"]["overall"] for k, v in result.items()}))
    return 0

"""`python -m pretrain train --config configs/pretrain/lgi_tiny.yaml [key=value ...]`: run or resume pretraining.

`python -m pretrain --config ...` is the same command (train is the stage's default). On a cluster:
`ray job submit --address http://HEAD:8265 --working-dir . -- python -m pretrain train --config ...`.
"""
from __future__ import annotations

import argparse
import json
import os

from data.common.config import to_dict
from data.common.ray_session import ray_session
from pretrain.config import load_pretrain_config
from pretrain.trainer import check_inputs, fit


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="pretraining YAML (configs/pretrain/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. schedule.total_steps=20")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = parser.parse_args(argv)
    cfg = load_pretrain_config(args.config, args.overrides)
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    check_inputs(cfg)
    # a new local Ray unless a cluster is named (`ray job submit` sets RAY_ADDRESS): a `ray start` cluster
    # someone left on this machine must not capture a local run
    with ray_session(os.environ.get("RAY_ADDRESS") or None):
        result = fit(cfg)
    checkpoint = result.checkpoint.path if result.checkpoint else None
    print(json.dumps({"run": f"{cfg.checkpoint.storage_path}/{cfg.checkpoint.name}",
                      "checkpoint": checkpoint, "metrics": result.metrics}, default=str))
    return 0

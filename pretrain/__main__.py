"""`python -m pretrain --config configs/pretrain/lgi_tiny.yaml [key=value ...]`: run or resume pretraining.

Other tools of this stage are subcommands (`python -m pretrain flops ...`) when their module exists.
On a cluster: `ray job submit --address http://HEAD:8265 --working-dir . -- python -m pretrain --config ...`.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys

from data.cli import dispatch, run_main

COMMANDS = {
    "flops": ("pretrain.flops", "parameters and FLOPs of a model config"),
}

log = logging.getLogger("pretrain")


def main(argv: list[str]) -> int:
    tools = "\n".join(f"  python -m pretrain {name} ...  {text}" for name, (_, text) in COMMANDS.items())
    parser = argparse.ArgumentParser(prog="python -m pretrain", description=__doc__.splitlines()[0],
                                     epilog=f"other tools:\n{tools}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="pretraining YAML (configs/pretrain/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. schedule.total_steps=20")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = parser.parse_args(argv)

    from data.config import to_dict
    from pretrain.config import check_runnable, load_pretrain_config

    cfg = load_pretrain_config(args.config, args.overrides)
    check_runnable(cfg, args.config)
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    from pretrain.trainer import check_inputs, fit

    check_inputs(cfg)
    result = fit(cfg)
    checkpoint = result.checkpoint.path if result.checkpoint else None
    print(json.dumps({"run": f"{cfg.checkpoint.storage_path}/{cfg.checkpoint.name}",
                      "checkpoint": checkpoint, "metrics": result.metrics}, default=str))
    return 0


def entry(argv: list[str]) -> int:
    if argv and argv[0] in COMMANDS and importlib.util.find_spec(COMMANDS[argv[0]][0]) is not None:
        return dispatch("pretrain", COMMANDS, argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_main(main, argv, debug)


if __name__ == "__main__":
    sys.exit(entry(sys.argv[1:]))

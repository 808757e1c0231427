"""`python -m data synth --config configs/data/synthetic_small.yaml [--out DIR] [--force] [--plot VIDEO] [k=v ...]`"""
from __future__ import annotations

import argparse
import logging

from data.synthetic.generate import generate, load_synthetic_config, video_ids
from data.synthetic.plot import plot_appearance, plot_regions

log = logging.getLogger(__name__)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m data synth",
                                     description="Generate the synthetic expressive-face benchmark.")
    parser.add_argument("--config", help="YAML config (defaults when omitted), e.g. configs/data/synthetic_demo.yaml")
    parser.add_argument("--out", help="output folder (default: the config's out_dir)")
    parser.add_argument("--force", action="store_true", help="regenerate videos that are already written")
    parser.add_argument("--plot", action="append", default=[], metavar="VIDEO",
                        help="after generating, write plots/<VIDEO>_regions.png (region motion vs ground truth) and "
                             "plots/<VIDEO>_appearance.png (each event with and without the appearance layers) "
                             "(repeatable; 'all' for every video)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. fps=200")
    args = parser.parse_args(argv)

    cfg = load_synthetic_config(args.config, args.overrides)
    out = generate(cfg, args.out, force=args.force, progress=not args.no_progress)
    if args.plot:

        wanted = [vid for _, _, vid in video_ids(cfg)] if "all" in args.plot else args.plot
        for vid in wanted:
            log.info("wrote %s and %s", plot_regions(out, vid), plot_appearance(out, vid))
    print(out)
    return 0

"""`python -m data pack --config configs/data/pack_synthetic.yaml [key=value ...]`"""
from __future__ import annotations

import argparse

from data.common.config import load_config
from data.common.storage import shared_locations
from data.shards.format import read_manifest
from data.shards.pack import PackConfig, pack


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m data pack",
                                     description="Pack face clips into WebDataset shards (resumable).")
    parser.add_argument("--config", required=True, help="YAML file with PackConfig fields")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. workers=2")
    args = parser.parse_args(argv)
    cfg = shared_locations(load_config(args.config, PackConfig, args.overrides), ("out_dir",), args.config)
    out = pack(cfg, progress=not args.no_progress)
    manifest = read_manifest(out)
    print(f"{out}: {manifest['num_clips']} clips in {manifest['num_shards']} shards, "
          f"{manifest['num_bytes'] / 1e6:.1f} MB")
    return 0

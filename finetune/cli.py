"""`python -m finetune train --config configs/finetune/synthetic.yaml [key=value ...] [--force]`: train a spotter.

Trains spotting heads (on a frozen or partly fine-tuned pretrained encoder) on every video of the dataset and
writes a model folder (finetune.store) to <out>/model. A finished model folder is kept unless --force.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from data.common.config import load_config
from data.common.dataset import read_dataset
from data.common.storage import shared_locations
from finetune import store
from finetune.heads.config import FinetuneConfig
from finetune.heads.train import train_heads

log = logging.getLogger("finetune")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (defaults when omitted)")
    parser.add_argument("--force", action="store_true", help="retrain even if <out>/model is complete")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=10")
    args = parser.parse_args(argv)
    cfg = shared_locations(load_config(args.config, FinetuneConfig, args.overrides),
                           ("out", "feature_cache", "model.encoder"), args.config)
    out = Path(cfg.out) / "model"
    if store.is_complete(out) and not args.force:
        log.info("model already trained in %s (use --force to retrain)", out)
        print(out)
        return 0
    t0 = time.perf_counter()
    videos, gt = read_dataset(cfg.data.root)
    spotter = train_heads(cfg, videos, gt)
    store.save_spotter(spotter, cfg, out, {"subjects": sorted(map(str, videos["subject"].unique())),
                                           "encoder_source": cfg.model.encoder,
                                           "training_fps": store.fps_range(videos)})
    log.info("trained on %d videos in %.1f s -> %s", len(videos), time.perf_counter() - t0, out)
    print(out)
    return 0



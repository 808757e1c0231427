"""A trained spotter on disk: one folder that `python -m spotting spot VIDEO --model DIR` can run.

DIR/encoder/model.safetensors + DIR/encoder/config.json   the encoder (finetune.encoder.save_encoder)
DIR/heads.safetensors                                     one head per granularity
DIR/spotter.json                                          granularities, head sizes, provenance (written last)
DIR/fusion.json                                           optional: fusion weights + thresholds (spotting.fusion)
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from data.common.atomic import write_json
from data.common.errors import DataError
from finetune.config import FinetuneConfig, FinetuneModelConfig, GranularityConfig
from finetune.encoder import load_encoder, save_encoder, save_safetensors
from finetune.heads import Spotter
from finetune.train import build_spotter

MANIFEST = "spotter.json"


def is_complete(folder) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def save_spotter(spotter: Spotter, cfg: FinetuneConfig, folder, extra: dict | None = None) -> Path:
    folder = Path(folder)
    save_encoder(spotter.encoder, folder / "encoder")
    save_safetensors(spotter.heads, folder / "heads.safetensors")
    write_json(folder / MANIFEST, {
        "granularities": [dataclasses.asdict(g) for g in cfg.granularities],
        "model": dataclasses.asdict(cfg.model),
        "train": dataclasses.asdict(cfg.train),
        **(extra or {}),
    })
    return folder


def load_spotter(folder) -> tuple[Spotter, list[GranularityConfig]]:
    """The spotter and its granularities from a folder written by save_spotter."""
    from safetensors.torch import load_file


    folder = Path(folder)
    if not is_complete(folder):
        raise DataError(f"no {MANIFEST} in the model folder", path=folder,
                        fix="train one with `python -m finetune --config ...` or `python -m spotting loso`")
    try:
        meta = json.loads((folder / MANIFEST).read_text())
        grans = [GranularityConfig(**g) for g in meta["granularities"]]
        model = FinetuneModelConfig(**meta["model"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"unreadable manifest ({type(e).__name__}: {e})", path=folder / MANIFEST,
                        fix="retrain the spotter") from None
    encoder = load_encoder(folder / "encoder", model.name)
    cfg = FinetuneConfig(model=model, granularities=grans)
    spotter = build_spotter(encoder, cfg)
    spotter.heads.load_state_dict(load_file(str(folder / "heads.safetensors")))
    return spotter.eval(), grans

"""A trained spotter on disk: one folder that `python -m spotting spot VIDEO --model DIR` can run.

DIR/encoder/model.safetensors + DIR/encoder/config.json   the encoder (finetune.encoder.save_encoder)
DIR/heads.safetensors                                     one head per granularity
DIR/fusion.json or DIR/detector.json (+ detector_<i>.safetensors), DIR/cues.json
                                                          optional: the fitted logistic fusion (spotting.fusion)
                                                          or temporal detector (spotting.detector_spotter), and
                                                          the flow-cue config, written before spotter.json
DIR/spotter.json                                          granularities, head sizes, provenance, and the size
                                                          and sha256 of every file above (written last)

Loading checks every recorded file first: a missing, cut-off or altered file is an error naming it, never a
spotter that silently scores differently.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from data.common.atomic import write_json
from data.common.checksums import check_folder, folder_record
from data.common.errors import DataError
from finetune.config import FinetuneConfig, FinetuneModelConfig, GranularityConfig
from finetune.encoder import load_encoder, load_safetensors, save_encoder, save_safetensors
from finetune.heads import Spotter
from finetune.train import build_spotter

log = logging.getLogger(__name__)

MANIFEST = "spotter.json"
HEADS = "heads.safetensors"
FILES = ("encoder/model.safetensors", "encoder/config.json", HEADS)  # what save_spotter writes
# recorded when present at save time
OPTIONAL_FILES = ("fusion.json", "detector.json", "cues.json", "encoder_input.json")
RESTORE = "retrain the spotter, or copy the whole model folder again"


def is_complete(folder) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def save_spotter(spotter: Spotter, cfg: FinetuneConfig, folder, extra: dict | None = None) -> Path:
    folder = Path(folder)
    save_encoder(spotter.encoder, folder / "encoder")
    save_safetensors(spotter.heads, folder / HEADS)
    names = list(FILES) + [name for name in OPTIONAL_FILES if (folder / name).is_file()]
    write_json(folder / MANIFEST, {
        "granularities": [dataclasses.asdict(g) for g in cfg.granularities],
        "model": dataclasses.asdict(cfg.model),
        "train": dataclasses.asdict(cfg.train),
        **(extra or {}),
        "files": folder_record(folder, names),
    })
    return folder


def load_spotter(folder) -> tuple[Spotter, list[GranularityConfig]]:
    """The spotter and its granularities from a folder written by save_spotter, its files checked first."""
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
    if "files" in meta:
        check_folder(folder, meta["files"], fix=RESTORE)
    else:
        log.warning("%s: written without file checksums (an older spotter); its files are not verified", folder)
    encoder = load_encoder(folder / "encoder", field=None)  # its config.json is the architecture
    cfg = FinetuneConfig(model=model, granularities=grans)
    spotter = build_spotter(encoder, cfg)
    heads = load_safetensors(folder / HEADS)
    try:
        spotter.heads.load_state_dict(heads)
    except RuntimeError as e:  # missing, unexpected or misshapen tensors
        raise DataError(f"heads do not fit the spotter in {MANIFEST}: {str(e).splitlines()[0][:200]}",
                        path=folder / HEADS, fix=RESTORE) from None
    return spotter.eval(), grans

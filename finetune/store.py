"""A trained spotter on disk: one folder that `python -m spotting spot VIDEO --model DIR` can run.

DIR/encoder/model.safetensors + DIR/encoder/config.json   the encoder (finetune.encoder.load.save_encoder)
DIR/heads.safetensors                                     one head per granularity
DIR/...                                                   whatever the caller wrote first: `spotting loso` adds
                                                          the fitted reader and the channel configs
                                                          (spotting.spotter)
DIR/spotter.json                                          format, granularities, head sizes, provenance (the
                                                          training videos' frame rates: `training_fps`), and the
                                                          size and sha256 of every file above (written last)

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
from finetune.encoder.load import load_encoder, load_safetensors, save_encoder, save_safetensors
from finetune.heads.config import FinetuneConfig, FinetuneModelConfig
from finetune.heads.model import EncoderHeads
from finetune.heads.train import build_heads
from finetune.windows import Granularity

log = logging.getLogger(__name__)

MANIFEST = "spotter.json"
HEADS = "heads.safetensors"
# 2: channel sets cues/flow/encoder/heads, readers detector/logistic (spotting.spotter), every file recorded;
# 1 (or none): fusion.json / encoder_input.json and the sets "model" / "cue"
FORMAT = 2
RESTORE = "retrain the spotter, or copy the whole model folder again"
RETRAIN = "retrain it with this version: `python -m spotting loso` (or `python -m finetune` for heads alone)"


def is_complete(folder) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def fps_range(videos) -> list[float]:
    """[lowest, highest] frame rate of a video table's rows: what a spotter trained on them has seen."""
    fps = [float(f) for f in videos["fps"]]
    return [min(fps), max(fps)]


def save_spotter(heads: EncoderHeads, cfg: FinetuneConfig, folder, extra: dict | None = None) -> Path:
    """The encoder and heads, then the manifest recording every file in the folder (written last)."""
    folder = Path(folder)
    save_encoder(heads.encoder, folder / "encoder")
    save_safetensors(heads.heads, folder / HEADS)
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    write_json(folder / MANIFEST, {
        "format": FORMAT,
        "granularities": [dataclasses.asdict(g) for g in cfg.granularities],
        "model": dataclasses.asdict(cfg.model),
        "train": dataclasses.asdict(cfg.train),
        **(extra or {}),
        "files": folder_record(folder, names),
    })
    return folder


def read_manifest(folder) -> dict:
    """spotter.json of a spotter folder, refused (naming the fix) when absent, unreadable or of another format."""
    folder = Path(folder)
    if not is_complete(folder):
        raise DataError(f"no {MANIFEST} in the model folder", path=folder,
                        fix="train one with `python -m finetune --config ...` or `python -m spotting loso`")
    try:
        meta = json.loads((folder / MANIFEST).read_text())
    except ValueError as e:
        raise DataError(f"unreadable manifest ({e})", path=folder / MANIFEST, fix=RESTORE) from None
    if meta.get("format", 1) != FORMAT:
        raise DataError(f"a spotter folder of format {meta.get('format', 1)} (an older version of SpotMAE); this "
                        f"version reads format {FORMAT}", path=folder / MANIFEST, field="format", fix=RETRAIN)
    return meta


def load_spotter(folder) -> tuple[EncoderHeads, list[Granularity]]:
    """The encoder with its heads and their granularities from a folder written by save_spotter, its files
    checked first."""
    folder = Path(folder)
    meta = read_manifest(folder)
    try:
        grans = [Granularity(**g) for g in meta["granularities"]]
        model = FinetuneModelConfig(**meta["model"])
    except (KeyError, TypeError) as e:
        raise DataError(f"unreadable manifest ({type(e).__name__}: {e})", path=folder / MANIFEST,
                        fix="retrain the spotter") from None
    check_folder(folder, meta["files"], fix=RESTORE)
    encoder = load_encoder(folder / "encoder", field=None)  # its config.json is the architecture
    cfg = FinetuneConfig(model=model, granularities=grans)
    heads = build_heads(encoder, cfg)
    try:
        heads.heads.load_state_dict(load_safetensors(folder / HEADS))
    except RuntimeError as e:  # missing, unexpected or misshapen tensors
        raise DataError(f"heads do not fit the spotter in {MANIFEST}: {str(e).splitlines()[0][:200]}",
                        path=folder / HEADS, fix=RESTORE) from None
    return heads.eval(), grans

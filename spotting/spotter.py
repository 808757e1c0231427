"""The spotter: one folder holding everything `python -m spotting spot` needs to spot a new video.

finetune.store writes and checks the folder (the encoder, the heads, and spotter.json last, recording every
file's size and sha256); spotting adds, before that, the fitted reader (spotting.readers: detector.json +
detector_<i>.safetensors, or logistic.json) and channels.json (the channel sets the reader reads, how the cues and
the encoder channels are made). A folder without a reader (`python -m finetune`) is read by its heads' presence
scores alone (`default_reader`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from data.common.atomic import read_json, write_json
from data.common.config import build, to_dict
from data.common.errors import DataError
from data.common.tables import TYPES
from finetune import store
from finetune.heads.model import EncoderHeads
from finetune.windows import Granularity
from spotting.baseline import BaselineConfig
from spotting.channels.causal import CausalConfig
from spotting.channels.encoder import EncoderChannelsConfig
from spotting.channels.vocabulary import CHANNEL_SETS, HEADS, Channel
from spotting.logistic import LogisticConfig, LogisticReader, TypeFit
from spotting.readers import fitted_reader

CHANNELS_FILE = "channels.json"


@dataclasses.dataclass
class Spotter:
    heads: EncoderHeads  # the encoder (whose channels the encoder set reads) and the spotting heads
    granularities: list[Granularity]  # the heads'
    reader: object  # spotting.readers
    reader_name: str
    sets: tuple[str, ...]  # the channel sets the reader reads
    baseline: BaselineConfig
    encoder_channels: EncoderChannelsConfig
    live: CausalConfig | None = None  # trained on causal channels (LOSO causal=true): how they are made and decided

    @property
    def encoder(self):
        return self.heads.encoder


def save_channels(folder, sets, baseline: BaselineConfig, encoder_channels: EncoderChannelsConfig,
                  live: CausalConfig | None = None) -> Path:
    """FOLDER/channels.json: what the reader reads and how those channels are made (`live`: causally)."""
    path = Path(folder) / CHANNELS_FILE
    write_json(path, {"sets": list(sets), "baseline": to_dict(baseline),
                      "encoder_channels": to_dict(encoder_channels), "live": live and to_dict(live)})
    return path


def default_reader(granularities: list[str]) -> LogisticReader:
    """A reader without fitted weights: sigmoid(8 * (mean presence probability - 0.5)) per type, threshold 0.5."""
    types = {}
    for kind in TYPES:
        channels = [Channel(HEADS, kind, g, "present") for g in granularities]
        n = len(channels)
        types[kind] = TypeFit(channels, [0.0] * n, [1.0] * n, [8.0 / n] * n, -4.0)
    return LogisticReader(LogisticConfig(), types)


def load(folder) -> Spotter:
    """The spotter in FOLDER, every file checked (finetune.store), its reader and channel configs read."""
    folder = Path(folder)
    heads, grans = store.load_spotter(folder)
    found = fitted_reader(folder)
    if found is None:
        return Spotter(heads, grans, default_reader([g.name for g in grans]), "default (heads only)", (HEADS,),
                       BaselineConfig(), EncoderChannelsConfig())
    reader, name = found
    path = folder / CHANNELS_FILE
    if not path.is_file():
        raise DataError("the spotter has a fitted reader but no channel configs", path=path, fix=store.RESTORE)
    raw = read_json(path, fix=store.RESTORE)
    sets = tuple(s for s in raw.get("sets", []) if s in CHANNEL_SETS)
    if not sets or not reader.channel_sets <= set(sets):
        raise DataError(f"channel sets {raw.get('sets')} do not cover the reader's {sorted(reader.channel_sets)}",
                        path=path, field="sets", fix=store.RESTORE)
    live = raw.get("live")
    return Spotter(heads, grans, reader, name, sets, build(BaselineConfig, raw["baseline"], str(path), "baseline."),
                   build(EncoderChannelsConfig, raw["encoder_channels"], str(path), "encoder_channels."),
                   live and build(CausalConfig, live, str(path), "live."))

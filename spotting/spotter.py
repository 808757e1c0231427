"""The spotter: one folder holding everything `python -m spotting spot` needs to spot a new video.

finetune.store writes and checks the folder (the encoder, the heads, and spotter.json last, recording every
file's size and sha256); spotting adds, before that, the fitted reader (spotting.readers: detector.json +
detector_<i>.safetensors, or logistic.json) and channels.json (the channel sets the reader reads, how the cues and
the encoder channels are made). A folder without a reader (`python -m finetune`) is read by its heads' presence
scores alone (`default_reader`).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from data.common.atomic import read_json, write_json
from data.common.config import build, to_dict
from data.common.errors import DataError
from data.common.tables import TYPES
from finetune import store
from finetune.heads.model import EncoderHeads
from finetune.windows import Granularity
from spotting.baseline import BaselineConfig
from spotting.channels.encoder import EncoderChannelsConfig
from spotting.channels.vocabulary import CHANNEL_SETS, HEADS, Channel
from spotting.logistic import LogisticConfig, LogisticReader, TypeFit
from spotting.readers import fitted_reader

CHANNELS_FILE = "channels.json"
log = logging.getLogger(__name__)


@dataclasses.dataclass
class Spotter:
    heads: EncoderHeads  # the encoder (whose channels the encoder set reads) and the spotting heads
    granularities: list[Granularity]  # the heads'
    reader: object  # spotting.readers
    reader_name: str
    sets: tuple[str, ...]  # the channel sets the reader reads
    baseline: BaselineConfig
    encoder_channels: EncoderChannelsConfig
    training_fps: list[float] | None = None  # [lowest, highest] rate of its training videos; None: not recorded

    @property
    def encoder(self):
        return self.heads.encoder


# A video this many times faster or slower than every training video gets a warning. The detector works in seconds
# and the flow's frame gaps follow the rate, but the channels' statistics were learnt at the training rates (a 200
# fps video given to a 30 fps spotter: the macro expression found, the micro missed; issue 29). 1.5 lets 25 and
# 30 fps mix without a word.
RATE_TOLERANCE = 1.5


def rate_warning(training_fps: list[float] | None, fps: float) -> str | None:
    """Why `fps` is far from the rates [lowest, highest] a spotter was trained at (RATE_TOLERANCE), or None."""
    if not training_fps or not fps:
        return None
    low, high = training_fps
    if low / RATE_TOLERANCE <= fps <= high * RATE_TOLERANCE:
        return None
    trained = f"{low:g} fps" if low == high else f"{low:g}-{high:g} fps"
    return (f"the video runs at {fps:g} fps, the spotter was trained on {trained} videos: expect missed or extra "
            f"intervals (micro-expressions first); train on videos at this rate to spot it reliably")


def warn_rate(spotter: Spotter, fps: float, video) -> None:
    """Log rate_warning, naming the video."""
    problem = rate_warning(spotter.training_fps, fps)
    if problem:
        log.warning("%s: %s", video, problem)


def save_channels(folder, sets, baseline: BaselineConfig, encoder_channels: EncoderChannelsConfig) -> Path:
    """FOLDER/channels.json: what the reader reads and how those channels are made."""
    path = Path(folder) / CHANNELS_FILE
    write_json(path, {"sets": list(sets), "baseline": to_dict(baseline),
                      "encoder_channels": to_dict(encoder_channels)})
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
    rates = store.read_manifest(folder).get("training_fps")
    found = fitted_reader(folder)
    if found is None:
        return Spotter(heads, grans, default_reader([g.name for g in grans]), "default (heads only)", (HEADS,),
                       BaselineConfig(), EncoderChannelsConfig(), rates)
    reader, name = found
    path = folder / CHANNELS_FILE
    if not path.is_file():
        raise DataError("the spotter has a fitted reader but no channel configs", path=path, fix=store.RESTORE)
    raw = read_json(path, fix=store.RESTORE)
    sets = tuple(s for s in raw.get("sets", []) if s in CHANNEL_SETS)
    if not sets or not reader.channel_sets <= set(sets):
        raise DataError(f"channel sets {raw.get('sets')} do not cover the reader's {sorted(reader.channel_sets)}",
                        path=path, field="sets", fix=store.RESTORE)
    return Spotter(heads, grans, reader, name, sets, build(BaselineConfig, raw["baseline"], str(path), "baseline."),
                   build(EncoderChannelsConfig, raw["encoder_channels"], str(path), "encoder_channels."), rates)

"""The spotter: one folder holding everything `python -m spotting spot` needs to spot a new video, and the
Python object that spots with it (`Spotter.from_pretrained(folder or Hub id).spot(video)`, docs/api.md).

finetune.store writes and checks the folder (the encoder, the heads, and spotter.json last, recording every
file's size and sha256); spotting adds, before that, the fitted reader (spotting.readers: detector.json +
detector_<i>.safetensors, or logistic.json) and channels.json (the channel sets the reader reads, how the cues and
the encoder channels are made). A folder without a reader (`python -m finetune`) is read by its heads' presence
scores alone (`default_reader`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from data.common.atomic import read_json, write_json
from data.common.config import build, to_dict
from data.common.errors import DataError
from data.common.hub import resolve_model
from data.common.tables import TYPES
from data.common.video_io import video_info
from finetune import store
from finetune.heads.model import EncoderHeads
from finetune.windows import Granularity
from spotting.baseline import BaselineConfig
from spotting.channels.builder import ChannelBuilder
from spotting.channels.causal import CausalConfig
from spotting.channels.encoder import EncoderChannelsConfig
from spotting.channels.vocabulary import CHANNEL_SETS, HEADS, Channel
from spotting.logistic import LogisticConfig, LogisticReader, TypeFit
from spotting.pipeline import SpotResult, StageClock, spot_source
from spotting.readers import fitted_reader

CHANNELS_FILE = "channels.json"


@dataclasses.dataclass
class Spotter:
    """A trained spotter: `Spotter.from_pretrained(folder or Hub id)`, then `spot(video or frames)`."""
    heads: EncoderHeads  # the encoder (whose channels the encoder set reads) and the spotting heads
    granularities: list[Granularity]  # the heads'
    reader: object  # spotting.readers
    reader_name: str
    sets: tuple[str, ...]  # the channel sets the reader reads
    baseline: BaselineConfig
    encoder_channels: EncoderChannelsConfig
    live: CausalConfig | None = None  # trained on causal channels (LOSO causal=true): how they are made and decided
    training_fps: list[float] | None = None  # [lowest, highest] rate of its training videos; None: not recorded

    @property
    def encoder(self):
        return self.heads.encoder

    @classmethod
    def from_pretrained(cls, name_or_path) -> Spotter:
        """The spotter in a folder (`spotting loso`'s <out>/model, `python -m finetune`'s, a `launch release
        --spotter` folder), or in the local Hub cache by Hub id ("org/name", "org/name@revision";
        data.common.hub: nothing is downloaded). Every file is checked against the folder's manifest."""
        return load(resolve_model(name_or_path, field=None))

    def builder(self) -> ChannelBuilder:
        """The channel builder of the sets this spotter reads (the one LOSO used to fit it)."""
        return ChannelBuilder(self.sets, self.baseline, self.encoder_channels, self.encoder, live=self.live)

    def spot(self, video, fps: float | None = None, aligned: bool = False, name: str | None = None,
             progress: bool = False) -> SpotResult:
        """Spot one video: a video file, or RGB frames uint8 [T, H, W, 3] (then `fps` is required).

        Returns a spotting.pipeline.SpotResult: `.intervals` (DataFrame: onset, apex, offset, type, score, ...;
        frames 0-based and inclusive), `.curves` (DataFrame, one row per frame: the reader's score of each type
        and every channel it read), `.scores`, `.crops`, `.face_track`. aligned: the frames are face-aligned crops
        already. name: the video's name in the intervals (default: the file's stem, or "frames")."""
        if isinstance(video, (str, Path)):
            path = Path(video)
            info = video_info(path)  # a file that does not open as a video is refused before any work
            source = self.builder().source(path, name or path.stem, fps or info["fps"], progress)
        else:
            frames = np.asarray(video)
            if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
                raise DataError(f"frames {frames.dtype} {list(frames.shape)}: expected RGB uint8 [T, H, W, 3]",
                                field="video", fix="pass a video file, or its frames as a uint8 array")
            if not fps or fps <= 0:
                raise DataError("frames need their frame rate", field="fps", fix="pass fps=<frames per second>")
            source = self.builder().source(None, name or "frames", float(fps), progress, frames=frames)
        return spot_source(self, source, aligned, StageClock(f"spot {source.name}", progress))


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
    rates = store.read_manifest(folder).get("training_fps")
    found = fitted_reader(folder)
    if found is None:
        return Spotter(heads, grans, default_reader([g.name for g in grans]), "default (heads only)", (HEADS,),
                       BaselineConfig(), EncoderChannelsConfig(), training_fps=rates)
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
                   live and build(CausalConfig, live, str(path), "live."), rates)

"""SpotMAE as a library: the Python entry points the command lines wrap (docs/api.md shows each at work).

    from spotting.api import Spotter, load_encoder, encoder_features, loso_config, run_loso

- `Spotter.from_pretrained(folder or Hub id)` loads a trained spotter (spotting.spotter), `.spot(video file or
  RGB frames, fps=...)` returns a SpotResult (spotting.pipeline): `.intervals` and `.curves` as DataFrames.
  `python -m spotting spot` is this plus writing the files (spotting.spot).
- `load_encoder(source)`: a pretrained LGI-Former (a pretraining run, an encoder or release folder, or a Hub id;
  finetune.encoder.load) as a torch module; `encoder_features(encoder, video)`: its pooled features of every frame
  of a video, as the spotter's encoder channels make them (spotting.channels.encoder), as a DataFrame.
- `loso_config(yaml, changes)` and `run_loso(config)`: leave-one-subject-out evaluation from a config object
  (`python -m spotting loso`), returning a LosoResult with the metrics as a DataFrame and the trained spotter.
Hub ids are looked up in the local Hub cache only (data.common.hub): nothing is downloaded.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from data.common.config import load_config, replace
from data.common.errors import DataError
from data.common.tables import read_predictions
from data.faces.face_video import FaceVideo
from finetune import store
from finetune.encoder.load import load_encoder
from spotting.channels.encoder import EncoderChannelsConfig, encoder_channels
from spotting.evaluation import loso
from spotting.evaluation.loso import LosoConfig
from spotting.pipeline import SpotResult
from spotting.spotter import Spotter

__all__ = ["EncoderChannelsConfig", "LosoConfig", "LosoResult", "SpotResult", "Spotter", "encoder_features",
           "load_encoder", "loso_config", "run_loso"]

METRIC_COLUMNS = ("tp", "fp", "fn", "precision", "recall", "f1")


def encoder_features(encoder, video, fps: float | None = None,
                     config: EncoderChannelsConfig | None = None) -> pd.DataFrame:
    """The encoder's pooled features of every frame of a video file (or RGB frames uint8 [T, H, W, 3] with their
    `fps`): the face stabilised, shown as the motion view, encoded window by window per granularity, pooled by
    landmark region, standardised over the video (`config`, default EncoderChannelsConfig()). One row per frame,
    one column per channel ("encoder.<granularity>.<region>.<mean|std><i>")."""
    if isinstance(video, (str, Path)):
        source = FaceVideo(Path(video), fps=fps)
    else:
        if not fps:
            raise DataError("frames need their frame rate", field="fps", fix="pass fps=<frames per second>")
        source = FaceVideo(frames=np.asarray(video), fps=fps)
    curves = encoder_channels(source, encoder, config or EncoderChannelsConfig())
    columns = {c.name: v for c, v in sorted(curves.items(), key=lambda kv: kv[0].name)}
    return pd.DataFrame(columns, index=pd.RangeIndex(source.num_frames, name="frame"))


def loso_config(path=None, changes: dict | None = None) -> LosoConfig:
    """A LOSO config: YAML `path` (None: the defaults) with dotted-key `changes` in Python values, e.g.
    loso_config("configs/spotting/loso.yaml", {"finetune.data.root": "runs/synthetic_ft", "parallel": False}).
    Checked as the command line checks it (unknown keys and bad values are ConfigErrors naming the key)."""
    cfg = load_config(path, LosoConfig)
    return replace(cfg, changes) if changes else cfg


@dataclasses.dataclass
class LosoResult:
    """What a LOSO run leaves: its folder, its metrics and pooled predictions, and the spotter it trained."""
    folder: Path
    metrics: pd.DataFrame  # one row per (system: spotter | baseline, variant, type): tp fp fn precision recall f1
    predictions: pd.DataFrame  # the spotter's held-out predictions of every fold, pooled

    @property
    def model(self) -> Path | None:
        """The spotter trained on every subject (`Spotter.from_pretrained(result.model)`), when made."""
        folder = self.folder / "model"
        return folder if store.is_complete(folder) else None


def metrics_table(result: dict) -> pd.DataFrame:
    """{system: {variant: {type: {tp, ...}}}} (run_loso's return) as a long DataFrame."""
    rows = [{"system": system, "variant": variant, "type": kind, **{k: scores[k] for k in METRIC_COLUMNS}}
            for system, variants in result.items() for variant, types in variants.items()
            for kind, scores in types.items()]
    return pd.DataFrame(rows, columns=["system", "variant", "type", *METRIC_COLUMNS])


def run_loso(config: LosoConfig) -> LosoResult:
    """Leave-one-subject-out evaluation (spotting.evaluation.loso) of `config`: folds, pooled metrics in every
    variant next to the flow baseline, and (config.final_model) a spotter trained on every subject. Writes
    config.out as `python -m spotting loso` does; finished folds are reused on a rerun."""
    cfg = loso.located(config)
    result = loso.run_loso(cfg)
    folder = Path(cfg.out)
    return LosoResult(folder, metrics_table(result), read_predictions(folder / "predictions.csv"))

"""Config of `python -m spotting published` (configs/spotting/published.yaml): data, the published methods'
settings, and the rows compared with them."""
from __future__ import annotations

import dataclasses

from data.common.config import Config, setting
from data.common.dataset import DatasetConfig
from data.common.errors import ConfigError
from data.flow import regions as fl
from spotting.baseline import BaselineConfig
from spotting.published.lgsnet import LgsnetConfig

CNN_METHODS = ("softnet", "lgnmnet", "mean")
METHODS = CNN_METHODS + ("lgsnet",)


@dataclasses.dataclass
class PublishedTrainConfig(Config):
    epochs: int = setting(6, ge=1)
    batch_size: int = setting(48, ge=1)
    lr: float = setting(0.0001, gt=0)  # the paper: 5e-4 (Keras); with PyTorch init Adam overshoots there on our inputs
    neg_ratio: float = setting(2.0, gt=0)  # keep at most this many negative windows per positive one (random)
    emotion_weight: float = setting(1.0, ge=0)  # MEAN: weight of the classification loss
    seed: int = setting(0, ge=0)  # RNG seed of initialisation, negative sampling and batch order
    threads: int = setting(1, ge=1)


@dataclasses.dataclass
class SpotMAERowConfig(Config):
    """The SpotMAE LOSO spotter as one more row (spotting.evaluation.loso on the same data folder)."""
    enabled: bool = False
    config: str = "configs/spotting/loso.yaml"
    overrides: list[str] = dataclasses.field(default_factory=list)  # key=value for that LOSO config


@dataclasses.dataclass
class PublishedConfig(Config):
    data: DatasetConfig = dataclasses.field(default_factory=lambda: DatasetConfig("runs/published/data"))
    out: str = "runs/published"
    method: str = "all"  # one of METHODS, or "all": every method, the flow baseline and (if enabled) SpotMAE
    image_size: int = setting(42, ge=12)  # ROI image side (SOFTNet: 42)
    flow_method: str = "dis"  # data.flow.regions.METHODS
    # mean durations -> k = int((duration * fps + 1) / 2) per type: 6 (micro) and 18 (macro) at 30 fps
    micro_duration_s: float = setting(0.37, gt=0)
    macro_duration_s: float = setting(1.2, gt=0)
    p: float = setting(0.55, ge=0, le=1)  # SOFTNet threshold mean + p * (max - mean)
    macro_max_s: float = setting(4.0, gt=0)  # LGNMNet pairing: the longest expression of each type
    micro_max_s: float = setting(0.5, gt=0)
    micro_inside_macro: float = setting(0.5, ge=0, le=1)  # spotting.intervals.final_intervals
    train: PublishedTrainConfig = dataclasses.field(default_factory=PublishedTrainConfig)
    lgsnet: LgsnetConfig = dataclasses.field(default_factory=LgsnetConfig)
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)  # the flow-only baseline row
    spotmae: SpotMAERowConfig = dataclasses.field(default_factory=SpotMAERowConfig)

    def check(self) -> None:
        for field, allowed in (("method", METHODS + ("all",)), ("flow_method", fl.METHODS)):
            if getattr(self, field) not in allowed:
                raise ConfigError(f"unknown {field} {getattr(self, field)!r}", field=field,
                                  fix=f"use one of {list(allowed)}")

    def type_k(self, kind: str, fps: float) -> int:
        """The frame gap k of an expression type at `fps`, from its mean duration (data.flow.regions)."""
        return fl.k_from_duration(fps, self.micro_duration_s if kind == "micro" else self.macro_duration_s)

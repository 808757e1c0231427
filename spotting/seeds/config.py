"""Config of `python -m spotting seeds` (configs/seeds/*.yaml): data, folds, the seed methods' settings."""
from __future__ import annotations

import dataclasses

from data.common.errors import ConfigError
from data.flow import regions as fl
from spotting.baseline import BaselineConfig
from spotting.seeds.lgsnet import LgsnetSection

CNN_METHODS = ("softnet", "lgnmnet", "mean")
METHODS = CNN_METHODS + ("lgsnet",)


@dataclasses.dataclass
class DataSection:
    root: str = "runs/seeds_synthetic/data"
    synthetic_config: str | None = "configs/seeds/synthetic_tiny.yaml"  # generate the set there when missing


@dataclasses.dataclass
class TrainSection:
    epochs: int = 6
    batch_size: int = 48
    lr: float = 0.0001  # the paper: 5e-4 (Keras); with PyTorch init Adam overshoots there on our inputs
    neg_ratio: float = 2.0  # keep at most this many negative windows per positive one (random, seeded)
    emotion_weight: float = 1.0  # MEAN: weight of the classification loss
    seed: int = 0
    threads: int = 1


@dataclasses.dataclass
class SpotMAESection:
    """The SpotMAE LOSO spotter as one more column (spotting.loso on the same data folder)."""
    enabled: bool = False
    config: str = "configs/spotting/loso.yaml"
    overrides: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SeedsConfig:
    data: DataSection = dataclasses.field(default_factory=DataSection)
    out: str = "runs/seeds"
    method: str = "all"  # one of METHODS, or "all" (every method + baseline + SpotMAE if enabled)
    image_size: int = 42  # ROI image side (SOFTNet: 42)
    flow_method: str = "dis"  # data.flow.regions.METHODS
    micro_duration_s: float = 0.37  # mean durations -> k = int((duration * fps + 1) / 2) per type
    macro_duration_s: float = 1.2
    p: float = 0.55  # SOFTNet threshold mean + p * (max - mean)
    macro_max_s: float = 4.0  # LGNMNet pairing: the longest expression of each type
    micro_max_s: float = 0.5
    micro_inside_macro: float = 0.5  # spotting.intervals.resolve_types
    train: TrainSection = dataclasses.field(default_factory=TrainSection)
    lgsnet: LgsnetSection = dataclasses.field(default_factory=LgsnetSection)
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)
    spotmae: SpotMAESection = dataclasses.field(default_factory=SpotMAESection)

    def type_k(self, kind: str, fps: float) -> int:
        """The frame gap k of an expression type at `fps`, from its mean duration (data.flow.regions)."""
        return fl.k_from_duration(fps, self.micro_duration_s if kind == "micro" else self.macro_duration_s)

    def __post_init__(self):
        if self.method not in METHODS + ("all",):
            raise ConfigError(f"unknown method {self.method!r}", field="method",
                              fix=f"use one of {list(METHODS) + ['all']}")
        if not 0 <= self.p <= 1:
            raise ConfigError(f"must be within [0, 1], got {self.p}", field="p")
        if self.image_size < 12:
            raise ConfigError(f"must be >= 12, got {self.image_size}", field="image_size")
        if self.train.epochs < 1 or self.train.batch_size < 1:
            raise ConfigError("epochs and batch_size must be >= 1", field="train.epochs")
        if self.train.neg_ratio <= 0:
            raise ConfigError("must be > 0", field="train.neg_ratio")

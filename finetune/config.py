"""The fine-tuning config: which data, which encoder, which granularities, how to train the heads.

Loaded with data.common.config.load_config(path, FinetuneConfig, overrides); every section is a dataclass so unknown keys
are errors. See configs/finetune/*.yaml.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from data.common.errors import ConfigError


@dataclasses.dataclass
class Granularity:
    """One way of cutting a long video into 16-frame windows.

    The window's frames are spread over `span_seconds` whatever the frame rate, so a 200 fps video is resampled
    to show the model the same stretch of time as a 30 fps one (DESIGN §5).
    """
    name: str = "micro"
    span_seconds: float = 0.5
    hop_seconds: float = 0.25  # start-to-start distance of sliding windows; overlaps are averaged


@dataclasses.dataclass
class DataSection:
    root: str = "runs/synthetic_ft"  # dataset folder: intervals.csv, videos.csv, videos/*.mp4
    synthetic_config: str | None = None  # when set and root has no videos.csv, generate the set with data.synthetic.generate


@dataclasses.dataclass
class ModelSection:
    name: str = "lgi_tiny"  # pretrain.model_config.named_config
    encoder: str | None = None  # pretraining checkpoint folder, safetensors file/folder, or null = from scratch
    pool_rows: int = 2  # feature rows kept after pooling: 2 = upper / lower face, 1 = pool everything
    head_hidden: int = 64
    head_kernel: int = 3  # temporal receptive field of the head, in tubelets (odd)


@dataclasses.dataclass
class TrainSection:
    # frozen: encoder features are computed once and cached, only the heads learn (minutes on CPU);
    # partial: the last `trainable_blocks` encoder blocks learn too; full: everything learns.
    mode: Literal["frozen", "partial", "full"] = "frozen"
    trainable_blocks: int = 1
    epochs: int = 40
    batch_size: int = 32
    lr: float = 2e-3
    layer_decay: float = 0.75  # encoder block i of n gets lr * layer_decay ** (n - i)
    weight_decay: float = 0.05
    loss: Literal["bce", "focal"] = "bce"
    pos_weight: float | None = None  # None: negatives / positives of the training labels, capped at 20
    focal_gamma: float = 2.0
    apex_weight: float = 0.5  # weight of the apex-proximity loss against the presence loss
    seed: int = 0
    threads: int = 2


@dataclasses.dataclass
class FinetuneConfig:
    data: DataSection = dataclasses.field(default_factory=DataSection)
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    granularities: list[Granularity] = dataclasses.field(default_factory=lambda: [
        Granularity("micro", 0.5, 0.25), Granularity("macro", 3.0, 1.0)])
    train: TrainSection = dataclasses.field(default_factory=TrainSection)
    out: str = "runs/finetune"
    feature_cache: str | None = None  # folder for cached frozen-encoder features (default: <out>/features)

    def __post_init__(self):
        names = [g.name for g in self.granularities]
        if not names:
            raise ConfigError("at least one granularity is needed", field="granularities")
        if len(set(names)) != len(names):
            raise ConfigError(f"granularity names must be unique, got {names}", field="granularities")
        for i, g in enumerate(self.granularities):
            if g.span_seconds <= 0 or g.hop_seconds <= 0:
                raise ConfigError("span_seconds and hop_seconds must be > 0",
                                  field=f"granularities[{i}]", fix="use e.g. span 0.5, hop 0.25")
        if self.model.head_kernel < 1 or self.model.head_kernel % 2 == 0:
            raise ConfigError(f"head_kernel must be odd and >= 1, got {self.model.head_kernel}",
                              field="model.head_kernel")
        if self.model.pool_rows < 1:
            raise ConfigError("pool_rows must be >= 1", field="model.pool_rows")
        if self.train.mode == "partial" and self.train.trainable_blocks < 1:
            raise ConfigError("partial mode needs trainable_blocks >= 1", field="train.trainable_blocks")

"""The fine-tuning config: which data, which encoder, which granularities, how to train the heads.

Loaded with data.common.config.load_config(path, FinetuneConfig, overrides); every section is a Config dataclass, so
unknown keys, wrong types and out-of-range values are errors when the config is built. See configs/finetune/*.yaml.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from data.common.config import Config, setting
from data.common.dataset import DatasetConfig
from data.common.errors import ConfigError
from finetune.windows import Granularity, check_granularities, default_granularities


@dataclasses.dataclass
class FinetuneModelConfig(Config):
    encoder: str | None = None  # pretraining checkpoint folder, safetensors file/folder, or null = from scratch
    # the architecture comes with the encoder (checkpoints carry their model config); a name given here must
    # match it. From scratch: this named config (pretrain.model_config.named_config), null =
    # finetune.encoder.load.SCRATCH_MODEL.
    name: str | None = None
    pool_rows: int = setting(2, ge=1)  # feature rows kept after pooling: 2 = upper / lower face, 1 = pool everything
    head_hidden: int = setting(64, ge=1)
    head_kernel: int = setting(3, ge=1)  # temporal receptive field of the head, in tubelets (odd)

    def check(self) -> None:
        if self.head_kernel % 2 == 0:
            raise ConfigError(f"head_kernel must be odd, got {self.head_kernel}", field="head_kernel")


@dataclasses.dataclass
class FinetuneTrainConfig(Config):
    # frozen: encoder features are computed once and cached, only the heads learn (minutes on CPU);
    # partial: the last `trainable_blocks` encoder blocks learn too; full: everything learns.
    mode: Literal["frozen", "partial", "full"] = "frozen"
    trainable_blocks: int = setting(1, ge=1)
    epochs: int = setting(40, ge=1)
    batch_size: int = setting(32, ge=1)
    lr: float = setting(2e-3, gt=0)
    layer_decay: float = setting(0.75, gt=0, le=1)  # encoder block i of n gets lr * layer_decay ** (n - i)
    # stochastic depth of the encoder while it learns (partial/full): the MAE-DFER / VideoMAE fine-tuning recipe
    # (0.1 with layer decay 0.75); the encoder's last block drops its residual branches at this rate
    drop_path: float = setting(0.1, ge=0, lt=1)
    grad_checkpointing: bool = False  # partial/full: recompute encoder blocks in backward (less memory, slower)
    weight_decay: float = setting(0.05, ge=0)
    loss: Literal["bce", "focal"] = "bce"
    pos_weight: float | None = setting(None, gt=0)  # None: negatives / positives of the training labels, capped at 20
    focal_gamma: float = setting(2.0, ge=0)
    apex_weight: float = setting(0.5, ge=0)  # weight of the apex-proximity loss against the presence loss
    seed: int = setting(0, ge=0)  # RNG seed of head initialisation and batch order
    threads: int = setting(2, ge=1)


@dataclasses.dataclass
class FinetuneConfig(Config):
    data: DatasetConfig = dataclasses.field(default_factory=DatasetConfig)
    model: FinetuneModelConfig = dataclasses.field(default_factory=FinetuneModelConfig)
    granularities: list[Granularity] = dataclasses.field(default_factory=default_granularities)
    train: FinetuneTrainConfig = dataclasses.field(default_factory=FinetuneTrainConfig)
    out: str = "runs/finetune"
    feature_cache: str | None = None  # folder for cached frozen-encoder features (default: <out>/features)

    def check(self) -> None:
        check_granularities(self.granularities)

"""The pretraining job's config: model, data loader, optimizer, schedule, DeepSpeed, scaling, checkpoints.

One YAML file per job (configs/pretrain/*.yaml), loaded with data.common.config.load_config and `key=value` overrides.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from data.common.config import build, load_config, to_dict
from data.common.errors import ConfigError
from data.common.storage import shared_locations
from data.shards.loader import LoaderConfig
from pretrain.model_config import ModelConfig


@dataclasses.dataclass
class OptimConfig:
    """AdamW; the peak learning rate is base_lr * global_batch / 256 (the VideoMAE scaling rule)."""
    base_lr: float = 3e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    # a step whose loss is NaN/inf on any rank is skipped on every rank (no update) and counted; this many in a
    # row stop the run with an error (the last checkpoint stays as it was). 0 turns the check off (it costs
    # one all_reduce and one host sync per micro-batch).
    max_bad_steps: int = 5

    def __post_init__(self):
        if self.max_bad_steps < 0:
            raise ValueError(f"optim.max_bad_steps must be >= 0, got {self.max_bad_steps}")
        if self.base_lr <= 0 or self.min_lr < 0 or self.min_lr > self.base_lr:
            raise ValueError("need 0 <= optim.min_lr <= optim.base_lr and optim.base_lr > 0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas must lie in [0, 1), got {self.betas}")


@dataclasses.dataclass
class ScheduleConfig:
    """Linear warmup then cosine decay to optim.min_lr, counted in optimizer steps."""
    total_steps: int = 100
    warmup_steps: int = 10

    def __post_init__(self):
        if self.total_steps < 1 or not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError("need schedule.total_steps >= 1 and 0 <= schedule.warmup_steps < total_steps")


@dataclasses.dataclass
class DeepSpeedSection:
    zero_stage: int = 2
    # bf16: bf16 weights + fp32 master copy in the optimizer (input cast to bf16); autocast_bf16: fp32 weights,
    # torch.autocast(bf16) compute; fp32. No fp16: DeepSpeed refuses it on CPU and the peer recipe overflows.
    precision: Literal["bf16", "autocast_bf16", "fp32"] = "bf16"
    grad_accum: int = 1
    grad_clip: float = 1.0         # 0 turns clipping off

    def __post_init__(self):
        if self.zero_stage not in (0, 1, 2):
            raise ValueError(f"deepspeed.zero_stage must be 0, 1 or 2, got {self.zero_stage}")
        if self.grad_accum < 1 or self.grad_clip < 0:
            raise ValueError("need deepspeed.grad_accum >= 1 and deepspeed.grad_clip >= 0")


@dataclasses.dataclass
class ScalingSection:
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: int = 1

    def __post_init__(self):
        if self.num_workers < 1 or self.cpus_per_worker < 1:
            raise ValueError("need scaling.num_workers >= 1 and scaling.cpus_per_worker >= 1")


@dataclasses.dataclass
class CheckpointSection:
    """Where the run lives and how it survives: same storage_path + name resumes from the latest checkpoint."""
    storage_path: str = "runs/pretrain"     # local folder (made absolute) or a URI such as s3://bucket/dir
    name: str = "lgi_tiny"
    every_steps: int = 50
    num_to_keep: int = 2
    max_failures: int = 3                   # worker restarts (preemptions) before the job gives up
    stop_after_steps: int | None = None     # end this invocation early, e.g. to fit a time-limited allocation
    log_every: int = 10                     # report metrics / TensorBoard every N optimizer steps

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise ValueError(f"checkpoint.name must be a non-empty folder name, got {self.name!r}")
        if min(self.every_steps, self.num_to_keep, self.log_every) < 1 or self.max_failures < 0:
            raise ValueError("need checkpoint.every_steps, num_to_keep, log_every >= 1 and max_failures >= 0")
        if self.stop_after_steps is not None and self.stop_after_steps < 1:
            raise ValueError("checkpoint.stop_after_steps must be >= 1 or null")


@dataclasses.dataclass
class DebugSection:
    """Fault injection for the reliability tests (RELIABILITY.md). Everything is off by default."""
    nan_at_steps: list[int] = dataclasses.field(default_factory=list)  # rank 0's loss is NaN at these steps
    status_dir: str | None = None   # each rank writes rank_<r>.json {pid, step, start_step} after every step


@dataclasses.dataclass
class PretrainConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: LoaderConfig = dataclasses.field(default_factory=LoaderConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    deepspeed: DeepSpeedSection = dataclasses.field(default_factory=DeepSpeedSection)
    scaling: ScalingSection = dataclasses.field(default_factory=ScalingSection)
    checkpoint: CheckpointSection = dataclasses.field(default_factory=CheckpointSection)
    debug: DebugSection = dataclasses.field(default_factory=DebugSection)
    seed: int = 0

    def global_batch(self) -> int:
        return self.data.batch_size * self.scaling.num_workers * self.deepspeed.grad_accum

    def peak_lr(self) -> float:
        return self.optim.base_lr * self.global_batch() / 256


# paths the Ray workers read or write: made absolute (workers run in another working directory), refused
# when relative under `ray job submit` (data.common.storage.shared_location)
SHARED_PATHS = ("data.shards", "checkpoint.storage_path", "debug.status_dir")


def load_pretrain_config(path, overrides=()) -> PretrainConfig:
    """Load a pretraining YAML; local paths the workers use become absolute (see SHARED_PATHS)."""
    return shared_locations(load_config(path, PretrainConfig, list(overrides)), SHARED_PATHS, path)


def config_to_raw(cfg: PretrainConfig) -> dict:
    """Plain data to ship to Ray workers (dataclasses travel as dicts and are rebuilt and re-checked there)."""
    return to_dict(cfg)


def config_from_raw(raw: dict, source: str = "<train_loop_config>") -> PretrainConfig:
    return build(PretrainConfig, raw, source)


# model field -> loader field that must agree: the loader cuts clips and masks for the model's token grid
SHARED_GEOMETRY = (("frames", "num_frames"), ("img_size", "size"), ("patch", "patch"), ("tubelet", "tubelet"),
                   ("region", "mask_region"), ("visible_per_region", "mask_visible_per_region"),
                   ("mask_mode", "mask_mode"))


def _plain(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def check_runnable(cfg: PretrainConfig, path=None) -> None:
    """Cross-section checks that no single section can make."""
    for model_key, data_key in SHARED_GEOMETRY:
        got, want = getattr(cfg.data, data_key), getattr(cfg.model, model_key)
        if _plain(got) != _plain(want):
            raise ConfigError(f"data.{data_key}={got!r} does not match model.{model_key}={want!r}", path=path,
                              field=f"data.{data_key}", fix=f"set data.{data_key} to {want!r}")
    stop = cfg.checkpoint.stop_after_steps
    if stop is not None and stop > cfg.schedule.total_steps:
        raise ConfigError(f"stop_after_steps {stop} is past schedule.total_steps {cfg.schedule.total_steps}",
                          path=path, field="checkpoint.stop_after_steps", fix="lower it or leave it null")

"""The pretraining job's config: model, data loader, optimizer, schedule, DeepSpeed, scaling, checkpoints.

One YAML file per job (configs/pretrain/*.yaml), loaded with data.common.config.load_config and `key=value` overrides.
The model section starts from the named config it names (pretrain.model_config); the loader's clip geometry is
the model's. Every checkpoint carries the run's config (RUN_CONFIG).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from data.common.atomic import read_json, write_json
from data.common.config import Config, build, load_config, setting, to_dict
from data.common.errors import ConfigError
from data.common.storage import shared_locations
from data.faces.motion_view import MotionViewConfig, check_clip_view
from data.shards.loader import LoaderConfig
from pretrain.model_config import ModelConfig

RUN_CONFIG = "pretrain_config.json"  # in every pretraining checkpoint folder, beside DeepSpeed's `latest`


@dataclasses.dataclass
class OptimConfig(Config):
    """AdamW; the peak learning rate is base_lr * global_batch / 256 (the VideoMAE scaling rule)."""
    base_lr: float = setting(3e-4, gt=0)
    min_lr: float = setting(1e-6, ge=0)
    weight_decay: float = setting(0.05, ge=0)
    betas: tuple[float, float] = setting((0.9, 0.95), ge=0, lt=1)
    eps: float = setting(1e-8, gt=0)
    # a step whose loss is NaN/inf on any rank is skipped on every rank (no update) and counted; this many in a
    # row stop the run with an error (the last checkpoint stays as it was). 0 turns the check off (it costs
    # one all_reduce and one host sync per micro-batch).
    max_bad_steps: int = setting(5, ge=0)

    def check(self) -> None:
        if self.min_lr > self.base_lr:
            raise ConfigError(f"min_lr {self.min_lr} is above base_lr {self.base_lr}", field="min_lr",
                              fix="the cosine decays from the peak to min_lr: keep min_lr <= base_lr")


@dataclasses.dataclass
class ScheduleConfig(Config):
    """Linear warmup then cosine decay to optim.min_lr, counted in optimizer steps."""
    total_steps: int = setting(100, ge=1)
    warmup_steps: int = setting(10, ge=0)

    def check(self) -> None:
        if self.warmup_steps >= self.total_steps:
            raise ConfigError(f"warmup_steps {self.warmup_steps} must be below total_steps {self.total_steps}",
                              field="warmup_steps")


@dataclasses.dataclass
class DeepSpeedConfig(Config):
    zero_stage: int = setting(2, ge=0, le=2)  # ZeRO 3 shards the parameters: the encoder loader reads stage <= 2
    # bf16: bf16 weights + fp32 master copy in the optimizer (input cast to bf16); autocast_bf16: fp32 weights,
    # torch.autocast(bf16) compute; fp32. No fp16: DeepSpeed refuses it on CPU and the peer recipe overflows.
    precision: Literal["bf16", "autocast_bf16", "fp32"] = "bf16"
    grad_accum: int = setting(1, ge=1)
    grad_clip: float = setting(1.0, ge=0)         # 0 turns clipping off


@dataclasses.dataclass
class ScalingConfig(Config):
    num_workers: int = setting(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: int = setting(1, ge=1)


@dataclasses.dataclass
class CheckpointConfig(Config):
    """Where the run lives and how it survives: same storage_path + name resumes from the latest checkpoint."""
    storage_path: str = "runs/pretrain"     # local folder (made absolute) or a URI such as s3://bucket/dir
    name: str = "lgi_tiny"
    every_steps: int = setting(50, ge=1)
    num_to_keep: int = setting(2, ge=1)
    max_failures: int = setting(3, ge=0)    # worker restarts (preemptions) before the job gives up
    stop_after_steps: int | None = setting(None, ge=1)  # end this invocation early, e.g. for a time-limited allocation
    log_every: int = setting(10, ge=1)      # report metrics / TensorBoard every N optimizer steps

    def check(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"must be a non-empty folder name, got {self.name!r}", field="name")


@dataclasses.dataclass
class DebugConfig(Config):
    """Fault injection for the reliability tests (RELIABILITY.md). Everything is off by default."""
    nan_at_steps: list[int] = setting(factory=list, ge=1)  # rank 0's loss is NaN at these steps
    status_dir: str | None = None   # each rank writes rank_<r>.json {pid, node, step, start_step} after every step


@dataclasses.dataclass
class PretrainConfig(Config):
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: LoaderConfig = dataclasses.field(default_factory=LoaderConfig)  # clip geometry: model.geometry
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    deepspeed: DeepSpeedConfig = dataclasses.field(default_factory=DeepSpeedConfig)
    scaling: ScalingConfig = dataclasses.field(default_factory=ScalingConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    debug: DebugConfig = dataclasses.field(default_factory=DebugConfig)
    # the motion view (model.input: motion): the spotter's encoder-channel input (data.faces.motion_view)
    motion: MotionViewConfig = dataclasses.field(default_factory=MotionViewConfig)
    seed: int = 0

    def check(self) -> None:
        if self.model.input == "motion":
            check_clip_view(self.motion)
        stop = self.checkpoint.stop_after_steps
        if stop is not None and stop > self.schedule.total_steps:
            raise ConfigError(f"{stop} is past schedule.total_steps {self.schedule.total_steps}",
                              field="checkpoint.stop_after_steps", fix="lower it or leave it null")

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


def write_run_config(folder, cfg: PretrainConfig) -> Path:
    """The run's whole config beside a checkpoint's weights (as nanoGPT keeps model_args in its checkpoint), so
    fine-tuning, release and resume read the architecture from the checkpoint instead of asking for it."""
    path = Path(folder) / RUN_CONFIG
    write_json(path, config_to_raw(cfg))
    return path


def read_run_config(folder) -> PretrainConfig | None:
    """The config a checkpoint folder was written with; None when it holds none."""
    path = Path(folder) / RUN_CONFIG
    return config_from_raw(read_json(path), str(path)) if path.is_file() else None

"""Build the Ray Train TorchTrainer that runs pretrain.train_loop on every worker.

The run lives at checkpoint.storage_path / checkpoint.name: running the same config again (same storage path and
name) makes Ray hand the latest checkpoint to the workers, so an interrupted or preempted job continues.
"""
from __future__ import annotations

import logging

from data.common.errors import ConfigError, SpotMAEError
from data.shards.format import read_manifest, shard_urls
from data.shards.loader import sampled_span
from pretrain.config import PretrainConfig, config_to_raw
from pretrain.motion_input import check_motion_shards
from pretrain.train_loop import train_loop_per_worker

log = logging.getLogger(__name__)


def build_trainer(cfg: PretrainConfig):
    """A TorchTrainer for `cfg`: ScalingConfig (workers, GPUs), RunConfig (storage, name, checkpoints, retries)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    scaling = cfg.scaling
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = 1
    run = RunConfig(
        name=cfg.checkpoint.name,
        storage_path=cfg.checkpoint.storage_path,
        checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.num_to_keep),
        failure_config=FailureConfig(max_failures=cfg.checkpoint.max_failures),
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config_to_raw(cfg)},
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                     resources_per_worker=resources),
        run_config=run,
    )


def check_inputs(cfg: PretrainConfig) -> None:
    """Fail on the driver, with the folder or URL named, before any worker starts: the shard set must be
    complete, every shard in place."""
    shard_urls(cfg.data.shards)
    manifest = read_manifest(cfg.data.shards) or {}
    packed = manifest.get("config", {})
    if cfg.model.input == "motion":
        check_motion_shards(cfg.data.shards, cfg.motion, packed)
    elif packed.get("crop") == "stabilised":
        raise ConfigError("these shards hold stabilised grey clips, made for model.input=motion",
                          path=cfg.data.shards, field="model.input",
                          fix="set model.input=motion (configs/pretrain/lgi_tiny_motion.yaml), or pack rgb clips")
    strides = cfg.data.frame_strides or [cfg.data.frame_stride]
    need, stored = sampled_span(cfg.model.frames, max(strides)), packed.get("clip_frames")
    if stored is not None and stored < need:
        field = "data.frame_strides" if cfg.data.frame_strides else "data.frame_stride"
        raise ConfigError(f"{cfg.model.frames} frames at stride {max(strides)} span {need} stored frames, the "
                          f"shards' clips hold {stored}", path=cfg.data.shards, field=field,
                          fix="lower the stride or pack longer clips (clip_frames)")


def fit(cfg: PretrainConfig):
    """Run (or resume) the pretraining job; return Ray's Result (metrics of the last report, checkpoint)."""
    log.info("pretraining %s: %d workers x batch %d x accum %d = %d clips/step, peak lr %.3g, run %s/%s",
             cfg.model.name, cfg.scaling.num_workers, cfg.data.batch_size, cfg.deepspeed.grad_accum,
             cfg.global_batch(), cfg.peak_lr(), cfg.checkpoint.storage_path, cfg.checkpoint.name)
    try:
        return build_trainer(cfg).fit()
    except Exception as e:
        user_error = find_user_error(e)
        if user_error is None:
            raise
        # a worker stopped on bad input or an unstable run (after checkpoint.max_failures retries): the CLI
        # prints this one line instead of Ray's nested traceback
        raise user_error from e


def find_user_error(error: BaseException) -> SpotMAEError | None:
    """The SpotMAEError a worker raised, found inside Ray's TrainingFailedError (worker_failures, causes)."""
    todo, seen = [error], set()
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, SpotMAEError) and getattr(e, "cause", None) is None:
            return e  # (Ray's RayTaskError may subclass the user's class too; its .cause is the clean one)
        todo += list(getattr(e, "worker_failures", {}).values())
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None

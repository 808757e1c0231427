"""The body every Ray Train worker runs: VideoMAE inside a DeepSpeed engine, fed by the shard loader.

`train_loop_per_worker({"config": raw_config_dict})` builds the model and engine (ZeRO 1/2, bf16, clipping,
AdamW + warmup/cosine), resumes from the run's newest complete checkpoint when there is one (written by any number
of workers: pretrain.world_change), and trains until
schedule.total_steps (or checkpoint.stop_after_steps). Rank 0 writes TensorBoard events; every rank reports
metrics and its checkpoint shard to Ray Train, which merges the shards into one checkpoint folder.

Resume is exact: model, optimizer and schedule come back through DeepSpeed, the data stream restarts at the
saved sample position, and the torch RNG is re-seeded from (seed, step, rank) before every micro-step so that
random ops inside the model draw the same numbers in a resumed run as in an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data.clips.augment import normalise
from data.common.atomic import write_json
from data.common.config import to_dict
from data.common.errors import ConfigError, DataError
from data.common.storage import is_url, join, upload_folder
from data.shards.loader import CorruptTally, make_loader
from pretrain.checkpoint_commit import candidates, problems, run_location, saved_world_size, write_marker
from pretrain.config import PretrainConfig, config_from_raw, read_run_config, write_run_config
from pretrain.mae import VideoMAE
from pretrain.stability import BadStepGuard, finite_on_all_ranks, poison, zero_loss
from pretrain.world_change import carried_state, universal_copy, warn_batch_change

log = logging.getLogger(__name__)

STATE_KEY = "spotmae"   # our entry in DeepSpeed's client_state
FRESH_STATE = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "corrupt": 0, "bad_steps": 0}


class WarmupCosine:
    """LambdaLR factor: linear warmup over `warmup` steps, then cosine from 1 to `min_ratio` at `total`.

    A class rather than a lambda so the scheduler's state_dict pickles into DeepSpeed checkpoints.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float):
        self.warmup, self.total, self.min_ratio = int(warmup), int(total), float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms and what the model's no_weight_decay() hook names (its learned tokens),
    the usual MAE/VideoMAE rule."""
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def deepspeed_config(cfg: PretrainConfig, world_size: int, universal: bool = False) -> dict:
    """`universal`: the engine will load a universal checkpoint (pretrain.world_change)."""
    ds = cfg.deepspeed
    return {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": ds.grad_accum,
        "train_batch_size": cfg.data.batch_size * ds.grad_accum * world_size,
        "gradient_clipping": ds.grad_clip,
        "bf16": {"enabled": ds.precision == "bf16"},
        "torch_autocast": {"enabled": ds.precision == "autocast_bf16", "dtype": "bfloat16"},
        # DeepSpeed casts only parameters unless told; fixed tables (position buffers) must follow them to bf16
        "data_types": {"buffer_dtype": "bf16" if ds.precision == "bf16" else "fp32"},
        "zero_optimization": {"stage": ds.zero_stage},
        # we hand DeepSpeed a torch AdamW: its fused Adam JIT-compiles for ~40 s and does not exist on CPU
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        **({"checkpoint": {"load_universal": True}} if universal else {}),
    }


def build_engine(cfg: PretrainConfig, world_size: int, universal: bool = False):
    """Model + AdamW + warmup/cosine schedule wrapped in a DeepSpeed engine (uses Ray's process group);
    `universal`: made to load a DeepSpeed universal checkpoint."""
    import deepspeed

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = VideoMAE(cfg.model)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.peak_lr(),
                                  betas=cfg.optim.betas, eps=cfg.optim.eps, fused=torch.cuda.is_available())
    min_ratio = min(1.0, cfg.optim.min_lr / cfg.peak_lr())
    factor = WarmupCosine(cfg.schedule.warmup_steps, cfg.schedule.total_steps, min_ratio)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(cfg, world_size, universal),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor))
    return engine


def model_input(video: torch.Tensor, device, dtype) -> torch.Tensor:
    """Loader video (float: normalised or the motion view; uint8 with data.output=uint8) -> `dtype` on `device`,
    uint8 normalised there."""
    video = video.to(device, non_blocking=True)
    if video.dtype == torch.uint8:  # 4x less to copy to the device; normalise there
        video = normalise(video)
    return video.to(dtype)


def reseed(seed: int, step: int, micro: int, rank: int) -> None:
    state = np.random.SeedSequence([seed, step, micro, rank]).generate_state(2, dtype=np.uint32)
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))


def _default_extensions_dir() -> None:
    # DeepSpeed JIT-builds its shared-memory comm op on first init (~60 s); cache it inside the venv, as the
    # Makefile does, when the worker's environment does not say where.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))


def restore(cfg: PretrainConfig, world_size: int):
    """(engine, our saved state) for the run: the engine loaded from the newest complete checkpoint, or fresh
    ({} state) when there is none.

    Every checkpoint_* folder of the run is a candidate, newest first, and must pass the commit-marker check
    (pretrain.checkpoint_commit): a partial upload is passed over, and a complete checkpoint that Ray had not
    yet registered when a worker died is used rather than lost. A checkpoint written by another number of
    workers is loaded through DeepSpeed's universal format (pretrain.world_change).
    """
    import ray.train

    latest = ray.train.get_checkpoint()
    filesystem, run_dir = run_location(cfg.checkpoint.storage_path, cfg.checkpoint.name)
    for path in candidates(run_dir, filesystem):
        with ray.train.Checkpoint(path, filesystem=filesystem).as_directory() as folder:
            wrong = problems(folder)
            if wrong:
                log.warning("checkpoint %s is incomplete (%s); trying an older one", path, "; ".join(wrong[:3]))
                continue
            saved = read_run_config(folder)
            check_same_model(cfg, saved, path)
            saved_world = saved_world_size(folder)
            if saved_world == world_size:
                engine = build_engine(cfg, world_size)
                loaded, client_state = engine.load_checkpoint(folder)
            else:
                warn_batch_change(cfg, saved, saved_world)
                with tempfile.TemporaryDirectory(prefix="spotmae_universal_") as tmp:
                    engine = build_engine(cfg, world_size, universal=True)
                    loaded, client_state = engine.load_checkpoint(str(universal_copy(folder, tmp)))
        if loaded is None or STATE_KEY not in (client_state or {}):
            raise DataError(f"no DeepSpeed checkpoint with {STATE_KEY!r} state in it", path=path,
                            field="checkpoint", fix="use a new checkpoint.name or a run written by python -m pretrain")
        state = dict(FRESH_STATE, **client_state[STATE_KEY])
        if saved_world != world_size:
            state = carried_state(state, saved_world, world_size)
        log.info("resumed from %s at step %d (Ray's latest registered checkpoint: %s)", path, state["step"],
                 latest.path if latest is not None else "none")
        return engine, state
    if latest is not None:
        raise DataError("no complete checkpoint to resume from", path=run_dir, field="checkpoint",
                        fix="use a new checkpoint.name to start over, or restore the checkpoint folders")
    return build_engine(cfg, world_size), {}


def check_same_model(cfg: PretrainConfig, saved: PretrainConfig | None, path) -> None:
    """A run resumes only with the model it was started with (weights of another shape, or another mask or
    target, would fail to load or silently train something else)."""
    if saved is None:
        return
    ours, theirs = to_dict(cfg.model), to_dict(saved.model)
    if cfg.model.input == "motion":  # the motion view is part of what the model learns from
        ours.update({f"motion.{k}": v for k, v in to_dict(cfg.motion).items()})
        theirs.update({f"motion.{k}": v for k, v in to_dict(saved.motion).items()})
    changed = {k: (theirs.get(k), ours[k]) for k in ours if ours[k] != theirs.get(k)}
    if changed:
        detail = ", ".join(f"{k}: checkpoint {a!r}, config {b!r}" for k, (a, b) in changed.items())
        raise ConfigError(f"the run was started with another model ({detail})", path=path, field="model",
                          fix="use the run's model settings, or a new checkpoint.name for a new run")


def report(cfg: PretrainConfig, engine, metrics: dict, state: dict | None) -> None:
    """ray.train.report from every rank; with `state`, each rank also ships its DeepSpeed checkpoint shard.

    DeepSpeed writes into a fresh temp folder per rank (rank 0 adds the run's config, pretrain.config.RUN_CONFIG: the
    checkpoint describes its own model), then the rank's commit marker lists its files; Ray
    uploads and merges the folders and registers the checkpoint only once all of it is stored. restore()
    checks the markers, so a partial upload on storage is never loaded (see pretrain.checkpoint_commit).
    """
    import ray.train

    if state is None:
        ray.train.report(metrics)
        return

    tag = f"step_{state['step']:08d}"
    ctx = ray.train.get_context()
    with tempfile.TemporaryDirectory(prefix="spotmae_ckpt_") as tmp:
        engine.save_checkpoint(tmp, tag=tag, client_state={STATE_KEY: state})
        if ctx.get_world_rank() == 0:
            write_run_config(tmp, cfg)
        write_marker(tmp, ctx.get_world_rank(), ctx.get_world_size(), state["step"])  # last: the commit
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=f"checkpoint_{tag}")


def batch_stream(cfg: PretrainConfig, rank: int, world_size: int, epoch: int, skip: int):
    """Yield (batch, epoch, resume position) forever, starting `skip` batches into `epoch`.

    The resume position (epoch, batches to skip) is where a run restarted after this batch picks up; one batch
    of look-ahead lets the last batch of an epoch point at the next epoch's start. The loader's order depends
    only on (seed, epoch, rank, worker), so re-reading and discarding `skip` batches reproduces the stream
    exactly (use data.resampled with a short epoch_samples to bound that re-reading on large corpora).
    """

    motion = cfg.model.input == "motion"  # the loader's workers make the view and the targets
    loader = make_loader(cfg.data, cfg.model.geometry, rank=rank, world_size=world_size, epoch=epoch,
                         view=cfg.motion if motion else None, target=cfg.model.target if motion else None)
    while True:
        done, pending = 0, None
        for batch in loader:
            done += 1
            if done <= skip:
                continue
            if pending is not None:
                yield pending, epoch, (epoch, done - 1)
            pending = batch
        if pending is None:
            raise DataError(f"rank {rank} of {world_size} got no batch of {cfg.data.batch_size} clips in epoch "
                            f"{epoch} (after skipping {skip})", path=cfg.data.shards, field="data.batch_size",
                            fix="pack more clips/shards, lower data.batch_size or scaling.num_workers")
        yield pending, epoch, (epoch + 1, 0)
        epoch, skip = epoch + 1, 0


def tensorboard_writer(cfg: PretrainConfig, start_step: int):
    """Rank 0's TensorBoard writer under <storage>/<name>/tensorboard; a resumed run drops events past its step."""
    from torch.utils.tensorboard import SummaryWriter

    folder = join(cfg.checkpoint.storage_path, cfg.checkpoint.name, "tensorboard")
    purge_step = start_step + 1 if start_step else None
    if is_url(folder):
        return UploadingWriter(SummaryWriter(_local_events_folder(folder), purge_step=purge_step), folder)
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)


def _local_events_folder(url: str) -> str:
    """An empty local folder for this attempt's events of the run at `url`: one per run, emptied at start
    (what a killed attempt left there was uploaded up to its last report; the rest is purged on resume)."""
    folder = Path(tempfile.gettempdir()) / f"spotmae_tb_{hashlib.sha256(url.encode()).hexdigest()[:16]}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return str(folder)


class UploadingWriter:
    """A SummaryWriter for remote storage: object stores cannot append, so the events go to a local folder
    of this attempt only, and every flush uploads its files whole to `url` (TensorBoard merges the files of
    all attempts, honouring each resumed run's purge step)."""

    def __init__(self, writer, url: str):
        self.writer, self.url = writer, url

    def add_scalar(self, *args, **kwargs) -> None:
        self.writer.add_scalar(*args, **kwargs)

    def flush(self) -> None:
        self.writer.flush()
        upload_folder(self.writer.log_dir, self.url)

    def close(self) -> None:
        self.writer.close()
        upload_folder(self.writer.log_dir, self.url)
        shutil.rmtree(self.writer.log_dir, ignore_errors=True)


class Meter:
    """Loss, clips and time of the good steps since the last report; summed on the device (no per-step sync)."""

    def __init__(self, device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.floor_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.losses, self.clips, self.start = 0, 0, time.perf_counter()

    def add(self, loss: torch.Tensor, floor: torch.Tensor, clips: int) -> None:
        self.loss_sum += loss.detach().double()
        self.floor_sum += floor.detach().double()
        self.losses += 1
        self.clips += clips

    def global_metrics(self, corrupt: int) -> dict:
        """Mean loss over all ranks, clips/s summed over ranks, corrupt samples summed over ranks."""
        import torch.distributed as dist

        elapsed = time.perf_counter() - self.start
        counts = torch.tensor([self.losses, self.clips, corrupt], dtype=torch.float64, device=self.device)
        totals = torch.cat([self.loss_sum.view(1), self.floor_sum.view(1), counts])
        if dist.is_initialized():
            dist.all_reduce(totals)
        loss_sum, floor_sum, losses, clips, corrupt_all = totals.tolist()
        nan = float("nan")  # every step since the last report was skipped
        return {"loss": loss_sum / losses if losses else nan, "floor": floor_sum / losses if losses else nan,
                "clips_per_s": clips / max(elapsed, 1e-9), "corrupt": int(corrupt_all)}


def write_status(cfg: PretrainConfig, rank: int, step: int, start_step: int) -> None:
    """debug.status_dir: this rank's pid, Ray node and progress, for tests that kill a worker or a node mid-run."""
    import ray

    if cfg.debug.status_dir:
        write_json(Path(cfg.debug.status_dir) / f"rank_{rank}.json",
                   {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "rank": rank, "step": step,
                    "start_step": start_step})


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry: loop_config = {"config": config_to_raw(PretrainConfig)}."""
    import ray.train

    _default_extensions_dir()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    cfg = config_from_raw(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    engine, state = restore(cfg, world)
    state = state or dict(FRESH_STATE)
    write_status(cfg, rank, state["step"], state["step"])
    stream = batch_stream(cfg, rank, world, state["epoch"], state["batches_in_epoch"])
    writer = tensorboard_writer(cfg, state["step"]) if rank == 0 else None
    try:
        run_steps(cfg, engine, stream, state, rank, writer)
    finally:
        if writer is not None:
            writer.close()


def optimizer_step(cfg: PretrainConfig, engine, stream, step: int, rank: int, meter: Meter, tally):
    """grad_accum micro-batches and one optimizer step; returns (epoch, resume position, lr used, good).

    With optim.max_bad_steps > 0 every rank checks, before backward, that the loss is finite on all ranks.
    A bad step is skipped on all ranks together: with grad_accum 1 no backward and no optimizer update (the
    lr schedule does not move either, as DeepSpeed does on fp16 overflow); with grad_accum > 1 the bad
    micro-batches contribute a zero gradient (see stability.zero_loss) and the good ones still step.
    """

    dtype = torch.bfloat16 if cfg.deepspeed.precision == "bf16" else torch.float32
    check = cfg.optim.max_bad_steps > 0
    good = True
    lr = engine.get_lr()[0]  # the rate this step uses; engine.step() moves the schedule on
    for micro in range(cfg.deepspeed.grad_accum):
        batch, epoch, resume_at = next(stream)
        tally.update(batch)
        reseed(cfg.seed, step, micro, rank)
        video = model_input(batch["video"], engine.device, dtype)
        target = batch.get("target")  # made by the loader's workers for the motion input
        out = engine(video, batch["mask"].to(engine.device, non_blocking=True),
                     None if target is None else target.to(engine.device, non_blocking=True))
        loss = poison(out["loss"], step + 1, rank, cfg.debug.nan_at_steps)
        if check and not finite_on_all_ranks(loss):
            good = False
            if cfg.deepspeed.grad_accum == 1:
                break
            loss = zero_loss(engine.module)
        else:
            meter.add(loss, out["floor"], len(batch["key"]))
        engine.backward(loss)
        engine.step()
    return epoch, resume_at, float(lr), good


def run_steps(cfg: PretrainConfig, engine, stream, state: dict, rank: int, writer) -> None:
    """Train from state["step"] to the stop step; report every log_every steps, checkpoint every every_steps."""
    from tqdm import tqdm


    ck = cfg.checkpoint
    stop = min(cfg.schedule.total_steps, ck.stop_after_steps or cfg.schedule.total_steps)
    step, corrupt_before, start_step = state["step"], state["corrupt"], state["step"]
    tally, meter = CorruptTally(), Meter(engine.device)
    guard = BadStepGuard(cfg.optim.max_bad_steps, state["bad_steps"])
    with tqdm(total=stop, initial=step, desc="pretrain", unit="step", disable=rank != 0) as bar:
        while step < stop:
            epoch, resume_at, lr, good = optimizer_step(cfg, engine, stream, step, rank, meter, tally)
            step += 1
            bar.update(1)
            write_status(cfg, rank, step, start_step)
            guard.record(step, good)  # raises after optim.max_bad_steps bad steps in a row
            save = step % ck.every_steps == 0 or step == stop
            if not (save or step % ck.log_every == 0):
                continue
            metrics = meter.global_metrics(tally.total)
            metrics.update(step=step, epoch=epoch, lr=lr, corrupt=metrics["corrupt"] + corrupt_before,
                           bad_steps=guard.total, start_step=start_step)
            if writer is not None:
                for name in ("loss", "floor", "lr", "clips_per_s", "corrupt", "bad_steps"):
                    writer.add_scalar(f"pretrain/{name}", metrics[name], step)
                writer.flush()
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", floor=f"{metrics['floor']:.4f}",
                            clips_s=f"{metrics['clips_per_s']:.1f}")
            state = {"step": step, "epoch": resume_at[0], "batches_in_epoch": resume_at[1],
                     "corrupt": metrics["corrupt"], "bad_steps": guard.total}
            report(cfg, engine, metrics, state if save else None)
            meter.reset()

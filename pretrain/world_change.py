"""Resuming a run with a different number of workers (a node that does not come back, or a bigger allocation).

A DeepSpeed ZeRO-1/2 checkpoint holds the fp32 master weights and the Adam moments split into one partition per
rank, so it loads only into the world size that wrote it. DeepSpeed's universal checkpoint format holds them per
parameter instead: `deepspeed.checkpoint.ds_to_universal` converts a ZeRO checkpoint into it, and an engine
built with `checkpoint.load_universal` loads that into any world size, optimizer state included. This module
converts the checkpoint a restore picked (into a local temp folder; the checkpoint on storage is not touched)
and carries the data position over to the new world.

The data stream does not replay exactly across a world-size change: each rank reads its own slice of the shard
list, and the slices depend on the world size. The epoch resumes at the same fraction of its clips; the loss
curve continues, it is not bit-identical to an uninterrupted run (that holds for an unchanged world size).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
from pathlib import Path

from data.common.errors import DataError
from pretrain.config import PretrainConfig

log = logging.getLogger(__name__)


def universal_copy(folder, out) -> Path:
    """The DeepSpeed checkpoint in `folder` (its `latest` tag) converted to the universal format under `out`
    (`out/latest_universal` names the tag). Raises DataError naming the folder and the fix when DeepSpeed cannot."""
    from deepspeed.checkpoint import ds_to_universal

    folder, out = Path(folder), Path(out)
    latest = folder / "latest"
    if not latest.is_file():
        raise DataError("no DeepSpeed 'latest' tag in the checkpoint", path=folder, field="checkpoint",
                        fix="resume with the scaling.num_workers the run was saved with")
    tag = latest.read_text().strip()
    args = argparse.Namespace(input_folder=str(folder / tag), output_folder=str(out / tag), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True,
                              inject_missing_state=True)  # our checkpoints carry no TP/PP layout to describe
    chatter = io.StringIO()  # the converter prints every step and a progress bar per parameter
    try:
        with contextlib.redirect_stdout(chatter):
            ds_to_universal.main(args)
    except Exception as e:
        raise DataError(f"DeepSpeed could not convert the checkpoint to its universal format "
                        f"({type(e).__name__}: {str(e)[:300]})", path=folder, field="scaling.num_workers",
                        fix="resume with the scaling.num_workers the run was saved with, or convert it by hand: "
                            f"python -m deepspeed.checkpoint.ds_to_universal --input_folder {folder / tag} "
                            "--output_folder OUT --inject_missing_state") from e
    if not (out / "latest_universal").is_file():  # older DeepSpeed versions leave it to the caller
        (out / "latest_universal").write_text(tag)
    return out


def carried_state(state: dict, saved_world: int, world: int) -> dict:
    """Our saved state for a run resumed with `world` workers instead of `saved_world`: the same epoch, resumed at
    the same fraction of it (each of `world` ranks skips as many batches as together make the clips done)."""
    done = state["batches_in_epoch"] * saved_world
    return dict(state, batches_in_epoch=done // world)


def warn_batch_change(cfg: PretrainConfig, saved: PretrainConfig | None, saved_world: int) -> None:
    """A different world size changes the global batch unless batch size or accumulation make up for it."""
    world = cfg.scaling.num_workers
    log.warning("resuming a run saved by %d workers with %d: DeepSpeed universal checkpoint (weights and optimizer "
                "state re-partitioned); the data order differs from an uninterrupted run", saved_world, world)
    if saved is None:
        return
    before = saved.data.batch_size * saved.deepspeed.grad_accum * saved_world
    now = cfg.global_batch()
    if before != now:
        log.warning("the global batch changes from %d to %d clips per step (the lr schedule stays the saved one): "
                    "set deepspeed.grad_accum or data.batch_size so that batch_size x grad_accum x workers = %d to "
                    "keep the recipe", before, now, before)

"""Unstable steps: agree across ranks whether a loss is finite, skip bad steps together, stop on a streak.

Every rank must take the same decision before backward: under ZeRO the backward and the optimizer step run
collectives, so a rank that skipped alone would leave the others waiting forever (or mix a NaN gradient into
theirs). One all_reduce(MIN) of a finite flag per micro-batch gives every rank the same answer.
"""
from __future__ import annotations

import logging

import torch

from data.common.errors import SpotMAEError

log = logging.getLogger(__name__)


class TrainingError(SpotMAEError):
    """Training cannot go on (e.g. the loss stays NaN/inf); the last saved checkpoint is untouched."""


def finite_on_all_ranks(loss: torch.Tensor) -> bool:
    """True when `loss` is finite on every rank (one all_reduce and one host sync)."""
    import torch.distributed as dist

    flag = torch.isfinite(loss.detach()).all().to(torch.int32).reshape(1)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def poison(loss: torch.Tensor, step: int, rank: int, nan_at_steps) -> torch.Tensor:
    """debug.nan_at_steps: rank 0's loss becomes NaN at those (1-based) steps, to test that all ranks skip."""
    if rank == 0 and step in nan_at_steps:
        log.warning("debug.nan_at_steps: poisoning the loss of step %d on rank 0", step)
        return loss * float("nan")
    return loss


def zero_loss(module: torch.nn.Module) -> torch.Tensor:
    """A loss whose gradient is exactly zero for every parameter.

    With grad_accum > 1 a bad micro-batch still goes through backward with this loss, so DeepSpeed's
    micro-step counter and ZeRO's gradient buckets stay in step on every rank; it adds nothing to the sum.
    """
    return sum((p.sum() * 0.0 for p in module.parameters() if p.requires_grad), torch.zeros(()))


class BadStepGuard:
    """Counts skipped steps; raises TrainingError after `limit` bad steps in a row (limit 0: check off)."""

    def __init__(self, limit: int, total: int = 0):
        self.limit, self.total, self.streak = limit, total, 0

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def record(self, step: int, good: bool) -> None:
        if good:
            self.streak = 0
            return
        self.total += 1
        self.streak += 1
        log.warning("step %d: loss is NaN/inf on some rank; skipped on all ranks (%d in a row, %d in all)",
                    step, self.streak, self.total)
        if self.streak >= self.limit:
            raise TrainingError(f"{self.streak} steps in a row with a NaN/inf loss, the last at step {step}; "
                                "stopped, the last checkpoint is intact", field="optim.max_bad_steps",
                                fix="lower optim.base_lr, check the data, or resume from the last checkpoint")

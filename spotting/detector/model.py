"""A temporal expression detector over a whole video's time axis (the ActionFormer / TriDet family, small).

Input: a feature sequence [C, N] on a time grid of `rate_hz` steps per second (spotting.detector.inputs puts a
video's channels there, whatever its frame rate). Output: scored candidate intervals in seconds
(spotting.detector.decode turns them into typed intervals).

Model: a 1-D conv embedding, then a feature pyramid of `levels` levels (level l has stride 2^l grid steps: a
stride-2 conv, then a residual conv block), and two heads shared by all levels:
- classification: per position and level, one logit per class ("an event of this class is centred here");
- regression: per position and level, the distances to onset and offset, in units of the level's stride.
An event is taught at the level whose range holds its half-length (ActionFormer's assignment), at positions
within `center_radius` strides of its centre. So a long macro expression is one box with learned boundaries, not
a run of fixed-width peaks.
Loss: sigmoid focal loss on the class logits of every position, 1-D DIoU on the boxes of the positive positions,
both divided by the number of positives.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from data.common.config import Config, setting

CLASSES = ("macro", "micro")


@dataclasses.dataclass
class DetectorConfig(Config):
    rate_hz: float = setting(30.0, gt=0)  # the time grid; everything below in steps is in steps of it
    hidden: int = setting(32, ge=4)
    levels: int = setting(5, ge=1)  # strides 1, 2, 4, 8, 16 grid steps
    kernel: int = setting(3, ge=1)
    dropout: float = setting(0.1, ge=0, lt=1)
    input_dropout: float = setting(0.1, ge=0, lt=1)  # whole channels dropped in training: no one cue carries all
    center_radius: float = setting(1.5, gt=0)
    base_range: float = setting(4.0, gt=0)  # level l>0 regresses half-lengths in [base*2^(l-1), base*2^l) steps
    focal_gamma: float = setting(2.0, ge=0)
    reg_weight: float = setting(1.0, ge=0)
    batch: int = setting(8, ge=1)
    crop_s: float = setting(20.0, gt=0)  # training crops; a shorter video is zero-padded
    lr: float = setting(2e-3, gt=0)
    weight_decay: float = setting(0.05, ge=0)
    noise: float = setting(0.1, ge=0)  # Gaussian noise on the standardised channels during training
    seed: int = 0

    @property
    def strides(self) -> list[int]:
        return [2 ** i for i in range(self.levels)]

    def ranges(self) -> list[tuple[float, float]]:
        """Per level, the half-lengths (grid steps) of the events it is taught."""
        return [(0.0 if i == 0 else self.base_range * 2 ** (i - 1),
                 math.inf if i == self.levels - 1 else self.base_range * 2 ** i) for i in range(self.levels)]

    def padded(self, n: int) -> int:
        """n rounded up to a multiple of the coarsest stride (every level then tiles the sequence exactly)."""
        top = 2 ** (self.levels - 1)
        return int(math.ceil(n / top) * top)


class ResBlock(nn.Module):
    """Pre-norm residual conv block: GroupNorm -> conv -> GELU -> dropout -> conv."""

    def __init__(self, dim: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.GroupNorm(1, dim)
        self.conv1 = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return x + self.conv2(self.drop(F.gelu(self.conv1(self.norm(x)))))


class Head(nn.Module):
    def __init__(self, dim: int, out: int, kernel: int, prior: float | None = None):
        super().__init__()
        self.conv1 = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)
        self.norm = nn.GroupNorm(1, dim)
        self.conv2 = nn.Conv1d(dim, out, kernel, padding=kernel // 2)
        if prior is not None:  # focal-loss init: every position starts as background with probability 1 - prior
            nn.init.constant_(self.conv2.bias, -math.log((1 - prior) / prior))

    def forward(self, x):
        return self.conv2(F.gelu(self.norm(self.conv1(x))))


class TemporalDetector(nn.Module):
    def __init__(self, in_channels: int, cfg: DetectorConfig):
        super().__init__()
        self.cfg, self.in_channels = cfg, in_channels
        h, k = cfg.hidden, cfg.kernel
        self.embed = nn.Sequential(nn.Conv1d(in_channels, h, k, padding=k // 2), nn.GELU(),
                                   nn.Conv1d(h, h, k, padding=k // 2))
        self.stem = ResBlock(h, k, cfg.dropout)
        self.down = nn.ModuleList(nn.Conv1d(h, h, 3, stride=2, padding=1) for _ in range(cfg.levels - 1))
        self.blocks = nn.ModuleList(ResBlock(h, k, cfg.dropout) for _ in range(cfg.levels))
        self.out_norm = nn.ModuleList(nn.GroupNorm(1, h) for _ in range(cfg.levels))
        self.cls = Head(h, len(CLASSES), k, prior=0.01)
        self.reg = Head(h, 2, k)
        self.scales = nn.Parameter(torch.ones(cfg.levels))

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """x [B, C, N] -> per level (class logits [B, K, N_l], distances [B, 2, N_l] in level-stride units)."""
        if self.training and self.cfg.input_dropout > 0:
            keep = (torch.rand(x.shape[0], x.shape[1], 1) > self.cfg.input_dropout).to(x.dtype)
            x = x * keep / (1 - self.cfg.input_dropout)
        f = self.stem(self.embed(x))
        out = []
        for level in range(self.cfg.levels):
            if level > 0:
                f = self.down[level - 1](f)
            f = self.blocks[level](f)
            g = self.out_norm[level](f)
            out.append((self.cls(g), F.relu(self.reg(g) * self.scales[level]) + 1e-3))
        return out


# ---- targets and loss ------------------------------------------------------------------------------------------

def positions(n_steps: int, stride: int) -> np.ndarray:
    """The centre (grid steps, continuous) of each position of a level with `stride`."""
    return np.arange(math.ceil(n_steps / stride)) * stride + (stride - 1) / 2.0


def level_targets(events: np.ndarray, n_steps: int, cfg: DetectorConfig) -> list[tuple]:
    """Per level: (class targets [N_l, K] in {0, 1}, distances [N_l, 2] in stride units, positives [N_l]).

    events: [E, 3] (onset step, end step exclusive, class index). A position inside several events takes the
    shortest (ActionFormer)."""
    out = []
    for stride, (lo, hi) in zip(cfg.strides, cfg.ranges()):
        p = positions(n_steps, stride)
        cls = np.zeros((len(p), len(CLASSES)), np.float32)
        dist = np.zeros((len(p), 2), np.float32)
        best = np.full(len(p), np.inf)
        for on, end, k in events:
            d_on, d_off = p - on, end - p
            near = np.abs(p - (on + end) / 2) <= max(cfg.center_radius * stride, 0.5)
            reach = np.maximum(d_on, d_off)
            take = (d_on > 0) & (d_off > 0) & near & (reach >= lo) & (reach < hi) & (end - on < best)
            best[take] = end - on
            cls[take] = 0
            cls[take, int(k)] = 1
            dist[take, 0], dist[take, 1] = d_on[take] / stride, d_off[take] / stride
        out.append((cls, dist, np.isfinite(best)))
    return out


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    return (ce * (1 - p_t) ** gamma).sum()


def diou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1-D distance-IoU loss of (d_onset, d_offset) pairs [P, 2] measured from the same positions."""
    inter = torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 1], target[:, 1])
    union = pred.sum(1) + target.sum(1) - inter
    enclose = torch.maximum(pred[:, 0], target[:, 0]) + torch.maximum(pred[:, 1], target[:, 1])
    centre = ((pred[:, 1] - pred[:, 0]) - (target[:, 1] - target[:, 0])) / 2
    return (1 - inter / union.clamp_min(1e-6) + (centre / enclose.clamp_min(1e-6)) ** 2).sum()


def detector_loss(outputs, targets: list[list[tuple]], cfg: DetectorConfig) -> torch.Tensor:
    """outputs: model(x) of a batch; targets: level_targets of each sample."""
    cls_loss = reg_loss = torch.zeros(())
    n_pos = 0
    for level, (logits, dist) in enumerate(outputs):
        t_cls = torch.from_numpy(np.stack([t[level][0] for t in targets])).transpose(1, 2)  # [B, K, N_l]
        t_dist = torch.from_numpy(np.stack([t[level][1] for t in targets]))  # [B, N_l, 2]
        pos = torch.from_numpy(np.stack([t[level][2] for t in targets]))  # [B, N_l]
        cls_loss = cls_loss + focal_loss(logits, t_cls, cfg.focal_gamma)
        if pos.any():
            reg_loss = reg_loss + diou_loss(dist.transpose(1, 2)[pos], t_dist[pos])
            n_pos += int(pos.sum())
    return (cls_loss + cfg.reg_weight * reg_loss) / max(n_pos, 1)


# ---- training --------------------------------------------------------------------------------------------------

def crop(x: np.ndarray, events: np.ndarray, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random crop [C, length] (zero-padded when the sequence is shorter) and the events inside it; an event cut
    to less than half its length is dropped rather than taught truncated."""
    start = int(rng.integers(0, max(1, x.shape[1] - length + 1)))
    piece = x[:, start:start + length]
    out = np.zeros((x.shape[0], length), np.float32)
    out[:, :piece.shape[1]] = piece
    keep = []
    for on, end, k in events:
        a, b = max(on - start, 0.0), min(end - start, float(piece.shape[1]))
        if b - a >= 0.5 * (end - on):
            keep.append((a, b, k))
    return out, np.asarray(keep, np.float32).reshape(-1, 3)


def _schedule(opt, iterations: int):
    """Linear warm-up over the first 5 %, then cosine decay to 0."""
    warm = max(1, iterations // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, iterations) / iterations)))


def train_detector(seqs: list[np.ndarray], events: list[np.ndarray], cfg: DetectorConfig, iterations: int,
                   callback=None, at: tuple[int, ...] = ()) -> TemporalDetector:
    """A detector trained on sequences [C, N_i] with events [E_i, 3] for `iterations` steps of random crops;
    `callback(step, model)` runs after each step in `at` (to score several training lengths in one run)."""
    rng = np.random.default_rng(cfg.seed)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = TemporalDetector(seqs[0].shape[0], cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = _schedule(opt, iterations)
        length = cfg.padded(int(round(cfg.crop_s * cfg.rate_hz)))
        for step in range(1, iterations + 1):
            model.train()
            xs, ts = [], []
            for _ in range(cfg.batch):
                i = int(rng.integers(len(seqs)))
                x, ev = crop(seqs[i], events[i], length, rng)
                xs.append(x + rng.normal(0, cfg.noise, x.shape).astype(np.float32) if cfg.noise else x)
                ts.append(level_targets(ev, length, cfg))
            loss = detector_loss(model(torch.from_numpy(np.stack(xs))), ts, cfg)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if callback is not None and step in at:
                callback(step, model)
    return model


@torch.no_grad()
def raw_outputs(model: TemporalDetector, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per level (class probabilities [K, N_l], distances [2, N_l] in grid steps) for one sequence [C, N].
    Several models' outputs of one sequence can be averaged element-wise (an ensemble) before decoding."""
    cfg = model.cfg
    model.eval()
    xt = torch.from_numpy(np.pad(x, ((0, 0), (0, cfg.padded(x.shape[1]) - x.shape[1]))))[None]
    return [(torch.sigmoid(logits[0]).numpy(), dist[0].numpy() * stride)
            for stride, (logits, dist) in zip(cfg.strides, model(xt))]

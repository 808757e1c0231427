"""An LGSNet-style detector (after Yu et al., "LGSNet: a two-stream network for micro- and macro-expression
spotting with background modeling"), kept small.

- Two streams per frame: appearance (the three ROIs of the grey frame minus the video's median frame, pooled to
  8 x 8) and flow (the SOFTNet ROI flow images at the micro and macro k, pooled to 6 x 6 per channel), each
  embedded by a 1D conv, then concatenated; frames are averaged in groups of `stride` first.
- Multi-receptive-field temporal fusion: parallel dilated 1D convs (dilations 1, 2, 4, 8) summed with a residual.
- Anchor-based interval regression: at every time step, one anchor per length in `anchors_s`; each anchor has
  class logits (background, macro, micro) and a regression (dc, dw) = ((gt centre - anchor centre) / anchor
  length, log(gt length / anchor length)). An anchor is positive for the ground truth it overlaps most when their
  IoU >= pos_iou, background below neg_iou, ignored in between.
- Background-clip modelling: training clips that hold no expression get random pseudo intervals; the anchors
  matching them are trained as explicit background with weight `bg_weight`, so expression-free motion (blinks,
  talking, head moves) is learnt as its own negative evidence rather than only as unmatched anchors.
- Inference: decode every anchor, keep class score >= score_threshold, NMS per type, then
  spotting.intervals.final_intervals (copies and micro inside macro dropped).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch
from torch import nn

from data.common.config import Config, setting
from data.common.errors import ConfigError, DataError
from data.common.tables import TYPES, empty_intervals
from spotting import intervals as iv
from spotting.published.inputs import appearance_features
from spotting.published.softnet import centre

CLASSES = ("background",) + TYPES  # class index 1 = macro, 2 = micro


@dataclasses.dataclass
class LgsnetConfig(Config):
    stride: int = setting(2, ge=1)  # frames averaged into one time step
    anchors_s: list[float] = setting(factory=lambda: [0.2, 0.35, 0.6, 1.0, 1.6, 2.5], gt=0)
    hidden: int = setting(64, ge=1)
    dilations: list[int] = setting(factory=lambda: [1, 2, 4, 8], ge=1)
    clip_steps: int = setting(96, ge=1)  # training clip length in time steps
    clips_per_epoch: int = setting(64, ge=1)
    epochs: int = setting(40, ge=1)
    lr: float = setting(0.001, gt=0)
    pos_iou: float = setting(0.5, gt=0, le=1)
    neg_iou: float = setting(0.3, ge=0, le=1)
    pseudo_per_clip: int = setting(3, ge=0)  # background-clip modelling: pseudo intervals per expression-free clip
    bg_weight: float = setting(2.0, gt=0)
    score_threshold: float = setting(0.5, ge=0, le=1)
    nms_iou: float = setting(0.3, ge=0, le=1)

    def check(self) -> None:
        if not self.anchors_s or not self.dilations:
            raise ConfigError("needs at least one value", field="anchors_s" if not self.anchors_s else "dilations")
        if self.neg_iou > self.pos_iou:
            raise ConfigError(f"neg_iou {self.neg_iou} is above pos_iou {self.pos_iou}", field="neg_iou",
                              fix="anchors between the two are ignored: keep neg_iou <= pos_iou")


# --- anchors and regression targets (time steps; intervals as [start, end) in steps) ------------------------------
def make_anchors(num_steps: int, lengths: list[float]) -> np.ndarray:
    """[num_steps * A, 2] (centre, length) in time steps: every length at every step centre."""
    centres = np.arange(num_steps, dtype=np.float64) + 0.5
    c, w = np.meshgrid(centres, np.asarray(lengths, np.float64), indexing="ij")
    return np.stack([c.ravel(), w.ravel()], 1)


def encode(gt: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Regression targets (dc, dw) of ground truths [N, 2] (centre, length) against anchors [N, 2]."""
    return np.stack([(gt[:, 0] - anchors[:, 0]) / anchors[:, 1], np.log(gt[:, 1] / anchors[:, 1])], 1)


def decode(deltas: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Inverse of encode: (centre, length)."""
    return np.stack([anchors[:, 0] + deltas[:, 0] * anchors[:, 1], anchors[:, 1] * np.exp(deltas[:, 1])], 1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (centre, length) segments, continuous: [len(a), len(b)]."""
    a0, a1 = a[:, 0] - a[:, 1] / 2, a[:, 0] + a[:, 1] / 2
    b0, b1 = b[:, 0] - b[:, 1] / 2, b[:, 0] + b[:, 1] / 2
    inter = np.clip(np.minimum(a1[:, None], b1[None]) - np.maximum(a0[:, None], b0[None]), 0, None)
    return inter / (a[:, 1][:, None] + b[:, 1][None] - inter)


def assign(anchors: np.ndarray, gt: np.ndarray, gt_class: np.ndarray, pos_iou: float, neg_iou: float):
    """(class target per anchor: class index, 0 = background, -1 = ignore; regression targets [N, 2])."""
    labels = np.zeros(len(anchors), np.int64)
    deltas = np.zeros((len(anchors), 2))
    if len(gt) == 0:
        return labels, deltas
    iou = iou_matrix(anchors, gt)
    best, best_iou = iou.argmax(1), iou.max(1)
    labels[(best_iou >= neg_iou) & (best_iou < pos_iou)] = -1
    positive = best_iou >= pos_iou
    # Every ground truth keeps at least its best anchor, even below pos_iou (very short or long ones).
    for g in range(len(gt)):
        a = int(iou[:, g].argmax())
        if iou[a, g] > 0:
            positive[a], best[a] = True, g
    labels[positive] = gt_class[best[positive]]
    deltas[positive] = encode(gt[best[positive]], anchors[positive])
    return labels, deltas


def frames_to_steps(onset: int, offset: int, stride: int) -> tuple[float, float]:
    """Inclusive frames -> (centre, length) in time steps."""
    return (onset + offset + 1) / 2 / stride, (offset - onset + 1) / stride


def steps_to_frames(centre: float, length: float, stride: int, num_frames: int) -> tuple[int, int]:
    onset = int(round((centre - length / 2) * stride))
    offset = int(round((centre + length / 2) * stride)) - 1
    return max(0, onset), min(num_frames - 1, max(onset, offset))


# --- network -------------------------------------------------------------------------------------------------------
class MultiReceptiveField(nn.Module):
    """Parallel dilated temporal convs, summed, plus the input (residual)."""

    def __init__(self, dim: int, dilations: list[int]):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv1d(dim, dim, 3, padding=d, dilation=d) for d in dilations)

    def forward(self, x):
        return x + torch.relu(sum(b(x) for b in self.branches))


class Detector(nn.Module):
    def __init__(self, appearance_dim: int, flow_dim: int, hidden: int, dilations: list[int], num_anchors: int):
        super().__init__()
        self.appearance = nn.Conv1d(appearance_dim, hidden, 3, padding=1)
        self.flow = nn.Conv1d(flow_dim, hidden, 3, padding=1)
        self.fuse = MultiReceptiveField(2 * hidden, dilations)
        self.cls = nn.Conv1d(2 * hidden, num_anchors * len(CLASSES), 1)
        self.reg = nn.Conv1d(2 * hidden, num_anchors * 2, 1)
        self.num_anchors = num_anchors

    def forward(self, appearance, flow):
        """[B, Da, T], [B, Df, T] -> class logits [B, T * A, C], deltas [B, T * A, 2] (anchor order of make_anchors)."""
        x = torch.cat([torch.relu(self.appearance(appearance)), torch.relu(self.flow(flow))], 1)
        x = self.fuse(x)
        b, _, t = x.shape
        logits = self.cls(x).view(b, self.num_anchors, len(CLASSES), t).permute(0, 3, 1, 2)
        deltas = self.reg(x).view(b, self.num_anchors, 2, t).permute(0, 3, 1, 2)
        return logits.reshape(b, t * self.num_anchors, len(CLASSES)), deltas.reshape(b, t * self.num_anchors, 2)


# --- features ------------------------------------------------------------------------------------------------------
def pool_steps(x: np.ndarray, stride: int) -> np.ndarray:
    """[T, D] -> [ceil(T / stride), D]: mean over each group of `stride` frames."""
    steps = -(-len(x) // stride)
    padded = np.concatenate([x, np.repeat(x[-1:], steps * stride - len(x), 0)]) if len(x) else x
    return padded.reshape(steps, stride, -1).mean(1)


def flow_stream(v, ks: list[int]) -> np.ndarray:
    """[T, 108 * len(ks)]: each k's ROI flow images, moved to the window centre and pooled to 6 x 6."""

    parts = []
    for k in ks:
        images = torch.from_numpy(np.asarray(v.images[k], np.float32))
        pooled = nn.functional.adaptive_avg_pool2d(images, 6).flatten(1).numpy()
        parts.append(centre(pooled, k))
    return np.concatenate(parts, 1)


def video_streams(v, ks: list[int], stride: int, appearance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return pool_steps(appearance, stride), pool_steps(flow_stream(v, ks), stride)


def _standardise(train: list[np.ndarray]):
    stacked = np.concatenate(train)
    mean, std = stacked.mean(0), stacked.std(0) + 1e-6
    return lambda x: ((x - mean) / std).astype(np.float32)


# --- training ------------------------------------------------------------------------------------------------------
def gt_steps(gt: pd.DataFrame, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth of one video as (centre, length) in steps and class indices."""
    seg = [frames_to_steps(int(r.onset), int(r.offset), stride) for r in gt.itertuples(index=False)]
    cls = [CLASSES.index(str(t)) for t in gt["type"]]
    return np.array(seg, np.float64).reshape(-1, 2), np.array(cls, np.int64)


def clip_targets(seg, cls, start: int, steps: int, anchors: np.ndarray, cfg: LgsnetConfig, rng):
    """(labels, deltas, background-clip weights) for a clip starting at step `start`."""
    inside = (seg[:, 0] > start) & (seg[:, 0] < start + steps)
    local = seg[inside] - np.array([start, 0.0])
    labels, deltas = assign(anchors, local, cls[inside], cfg.pos_iou, cfg.neg_iou)
    weights = np.ones(len(anchors))
    if not inside.any() and cfg.pseudo_per_clip > 0:
        lengths = rng.choice(np.unique(anchors[:, 1]), cfg.pseudo_per_clip)
        pseudo = np.stack([rng.uniform(lengths / 2, steps - lengths / 2), lengths], 1)
        matched = iou_matrix(anchors, pseudo).max(1) >= cfg.pos_iou
        weights[matched] = cfg.bg_weight
    return labels, deltas, weights


def detection_loss(logits, deltas, labels, targets, weights) -> torch.Tensor:
    """Class CE balanced between positives and negatives (negatives weighted by background-clip weights), plus
    smooth-L1 regression on positives."""
    ce = nn.functional.cross_entropy(logits.reshape(-1, len(CLASSES)), labels.clamp(min=0).reshape(-1), reduction="none")
    labels, weights = labels.reshape(-1), weights.reshape(-1)
    pos, neg = labels > 0, labels == 0
    loss = (ce[neg] * weights[neg]).sum() / weights[neg].sum().clamp(min=1)
    if pos.any():
        loss = loss + ce[pos].mean()
        loss = loss + nn.functional.smooth_l1_loss(deltas.reshape(-1, 2)[pos], targets.reshape(-1, 2)[pos])
    return loss


def train_detector(streams: list[tuple], gts: list[tuple], cfg: LgsnetConfig, lengths: list[float], seed: int):
    """Fit a Detector on training videos' step features (appearance, flow) and ground truth (segments, classes)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = Detector(streams[0][0].shape[1], streams[0][1].shape[1], cfg.hidden, cfg.dilations, len(lengths))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = min(cfg.clip_steps, min(len(a) for a, _ in streams))
    anchors = make_anchors(steps, lengths)
    model.train()
    for _ in range(cfg.epochs):
        for _ in range(max(1, cfg.clips_per_epoch // 8)):
            batch = [_clip(streams, gts, steps, anchors, cfg, rng) for _ in range(8)]
            app, flo, lab, tgt, wts = (torch.from_numpy(np.stack(x)) for x in zip(*batch))
            logits, deltas = model(app.transpose(1, 2), flo.transpose(1, 2))
            loss = detection_loss(logits, deltas, lab, tgt.float(), wts.float())
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


def _clip(streams, gts, steps, anchors, cfg, rng):
    i = int(rng.integers(len(streams)))
    app, flo = streams[i]
    start = int(rng.integers(0, len(app) - steps + 1))
    labels, deltas, weights = clip_targets(*gts[i], start, steps, anchors, cfg, rng)
    return app[start:start + steps], flo[start:start + steps], labels, deltas.astype(np.float32), weights


@torch.no_grad()
def detect(model: Detector, app: np.ndarray, flo: np.ndarray, lengths: list[float], cfg: LgsnetConfig,
           num_frames: int) -> list[iv.Interval]:
    logits, deltas = model(torch.from_numpy(app.T[None]), torch.from_numpy(flo.T[None]))
    probs = torch.softmax(logits[0], -1).numpy()
    anchors = make_anchors(len(app), lengths)
    boxes = decode(deltas[0].numpy(), anchors)
    found = {kind: [] for kind in TYPES}
    for c, kind in enumerate(TYPES, start=1):
        keep = np.flatnonzero(probs[:, c] >= cfg.score_threshold)
        for a in keep[np.argsort(-probs[keep, c])][:200]:
            on, off = steps_to_frames(boxes[a, 0], boxes[a, 1], cfg.stride, num_frames)
            found[kind].append(iv.Interval(on, (on + off) // 2, off, kind, float(probs[a, c])))
        found[kind] = iv.nms(found[kind], cfg.nms_iou)
    return iv.final_intervals(found["macro"], found["micro"], 0.5)


def run_fold(method: str, cfg, videos: list, test_subject: str) -> pd.DataFrame:
    """One LOSO fold: train on the other subjects' videos, detect on the test subject's (labels never read)."""

    torch.set_num_threads(max(1, cfg.train.threads))
    lg: LgsnetConfig = cfg.lgsnet
    rates = sorted({v.fps for v in videos})
    if len(rates) > 1:  # anchor lengths are set in steps from one frame rate
        raise DataError(f"videos have several frame rates {rates}", path=cfg.data.root, field="fps",
                        fix="resample the dataset to one frame rate for the lgsnet method")
    raw = []
    for v in videos:
        ks = sorted({cfg.type_k(kind, v.fps) for kind in TYPES})
        raw.append(video_streams(v, ks, lg.stride, appearance_features(v.path, v.appearance_cache)))
    train_idx = [i for i, v in enumerate(videos) if v.subject != test_subject]
    norm_app = _standardise([raw[i][0] for i in train_idx])
    norm_flo = _standardise([raw[i][1] for i in train_idx])
    streams = [(norm_app(a), norm_flo(f)) for a, f in raw]
    lengths = [s * videos[0].fps / lg.stride for s in lg.anchors_s]
    model = train_detector([streams[i] for i in train_idx], [gt_steps(videos[i].gt, lg.stride) for i in train_idx],
                           lg, lengths, cfg.train.seed)
    frames = [empty_intervals(with_score=True)]
    for i, v in enumerate(videos):
        if v.subject == test_subject:
            frames.append(iv.to_frame(detect(model, *streams[i], lengths, lg, v.num_frames), v.subject, v.video))
    return pd.concat(frames, ignore_index=True)

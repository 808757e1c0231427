"""The logistic reader: per-frame logistic regression of typed channels, then peaks and intervals on its curve.

The reader the temporal detector replaced, kept as a comparison row. Per expression type, a logistic regression
maps the per-frame channels of that type (spotting.channels: the flow baseline's per-region scores `cues`, the
heads' presence / apex probabilities `heads`; READS) to the probability that the frame lies inside an expression
of that type; a `TypeFit` holds one type's channels, weights and thresholds. It is fitted on frames of training
subjects only (the caller passes only those); the peak threshold and interval width per type are then chosen on
out-of-sample scores of the training subjects. Spotting the fused curve reuses spotting.intervals (smoothing,
threshold, peaks, extents, NMS, final_intervals).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from data.common.atomic import write_json
from data.common.config import Config, build, setting, to_dict
from data.common.errors import ConfigError, DataError
from data.common.tables import TYPES, empty_intervals
from finetune.windows import frame_labels
from spotting import intervals as iv
from spotting.channels.vocabulary import CUES, HEADS, TYPED_SETS, Channel, VideoFeatures, design
from spotting.evaluation.metric import evaluate


@dataclasses.dataclass
class LogisticTypeConfig(Config):
    """How intervals are formed on one type's fused curve (seconds, converted with the video's fps).

    `half_width_grid_s`: half-widths tried on the training subjects along with the thresholds (empty = always
    `half_width_s`). The width matters as much as the peak: at 30 fps a 13-frame interval (SOFTNet's k = 6) can
    never reach IoU 0.5 with a 5-frame micro-expression.
    """
    half_width_s: float = setting(gt=0)
    smooth_s: float = setting(ge=0)
    max_duration_s: float = setting(gt=0)
    half_width_grid_s: list[float] = setting(factory=list, gt=0)


@dataclasses.dataclass
class LogisticConfig(Config):
    # Reading cues and heads: per type, keep the heads' curves only where they raise that type's F1 on the training
    # subjects' out-of-sample scores over the cues alone (an undertrained encoder adds false positives, not events).
    select_heads: bool = True
    l2: float = setting(1.0, ge=0)  # ridge penalty on the standardised weights
    macro: LogisticTypeConfig = dataclasses.field(
        default_factory=lambda: LogisticTypeConfig(0.6, 0.2, 4.0, [0.4, 0.6, 0.8, 1.0, 1.2]))
    micro: LogisticTypeConfig = dataclasses.field(
        default_factory=lambda: LogisticTypeConfig(0.17, 0.07, 0.5, [0.07, 0.1, 0.13, 0.17]))
    extent: Literal["fixed", "half_max"] = "half_max"  # spotting.intervals.peak_intervals
    p_grid: list[float] = setting(factory=lambda: [0.2, 0.4, 0.6, 0.75, 0.9], ge=0, le=1)
    min_score_grid: list[float] = setting(factory=lambda: [0.5, 0.7, 0.85, 0.93, 0.97, 0.99], ge=0, le=1)
    nms_iou: float = setting(0.5, ge=0, le=1)
    micro_inside_macro: float = setting(0.5, ge=0, le=1)

    def check(self) -> None:
        for name in ("p_grid", "min_score_grid"):
            if not getattr(self, name):
                raise ConfigError("needs at least one value", field=name)


@dataclasses.dataclass
class TypeFit:
    """One expression type's fitted reader: its channels, their standardisation and logistic weights; and how
    intervals are cut on its fused curve (threshold p, score floor, half-width), chosen where it reached inner_f1."""
    channels: list[Channel]
    mean: list[float]
    std: list[float]
    weights: list[float]
    bias: float
    p: float = 0.5
    min_score: float = 0.5
    half_width_s: float | None = None  # None: the type's configured half_width_s
    inner_f1: float | None = None  # F1 on the training subjects' videos the thresholds were chosen on


@dataclasses.dataclass
class LogisticReader:
    """A fitted logistic reader: the config it was fitted with and one TypeFit per expression type."""
    config: LogisticConfig
    types: dict[str, TypeFit]

    READS: ClassVar[tuple[str, ...]] = TYPED_SETS  # channel sets it can read: each channel speaks for one type
    FILE: ClassVar[str] = "logistic.json"
    # logistic.json layout; fusion.json was 2 (channel sets named "model" and "cue"), 1 kept per-field dicts
    FORMAT: ClassVar[int] = 3

    def rule(self, kind: str) -> LogisticTypeConfig:
        return getattr(self.config, kind)

    def width(self, kind: str) -> float:
        chosen = self.types[kind].half_width_s
        return self.rule(kind).half_width_s if chosen is None else chosen

    @staticmethod
    def fit(items: list[VideoFeatures], gt: pd.DataFrame, sets: tuple[str, ...], cfg) -> LogisticReader:
        """Fitted on `items` (training subjects only) reading the channel sets `sets` (fit_reader)."""
        return fit_reader(items, gt, sets, cfg)

    @property
    def channel_sets(self) -> set[str]:
        return {c.set for fit in self.types.values() for c in fit.channels}

    def curves(self, item: VideoFeatures) -> dict[str, np.ndarray]:
        """Per-frame probability of each type (the fused curve)."""
        return {kind: fused_curve(self, item, kind) for kind in TYPES}

    def spot_item(self, item: VideoFeatures) -> list[iv.Interval]:
        """Typed intervals of one video."""
        found = {}
        for kind in TYPES:
            rule, fit = self.rule(kind), self.types[kind]
            found[kind] = spot_smoothed(smoothed_curve(fused_curve(self, item, kind), rule, item.fps), rule,
                                        item.fps, kind, fit.p, fit.min_score, self.config, self.width(kind))
        return iv.final_intervals(found["macro"], found["micro"], self.config.micro_inside_macro)

    def predict(self, items: list[VideoFeatures]) -> pd.DataFrame:
        """Predictions table for `items`."""
        frames = [empty_intervals(with_score=True)]
        frames += [iv.to_frame(self.spot_item(it), it.subject, it.video) for it in items]
        return pd.concat(frames, ignore_index=True)

    def to_dict(self) -> dict:
        return {"format": self.FORMAT, "config": to_dict(self.config),
                "types": {kind: dataclasses.asdict(fit) for kind, fit in self.types.items()}}

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<logistic>") -> LogisticReader:
        found = raw.get("format", 1 if "names" in raw else None)
        if found != cls.FORMAT:
            problem = ("not a logistic reader file" if found is None
                       else f"logistic reader format {found}; this version reads format {cls.FORMAT}")
            raise DataError(problem, path=source, field="format",
                            fix=f"refit it: rerun `python -m spotting loso`, which writes a new {cls.FILE}")
        types = {kind: TypeFit(**{**fit, "channels": [Channel(**c) for c in fit["channels"]]})
                 for kind, fit in raw["types"].items()}
        return cls(build(LogisticConfig, raw["config"], source, "config."), types)

    def save(self, folder) -> Path:
        """FOLDER/logistic.json."""
        path = Path(folder) / self.FILE
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, folder) -> LogisticReader:
        path = Path(folder) / cls.FILE
        try:
            return cls.from_dict(json.loads(Path(path).read_text()), str(path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataError(f"not a logistic reader file ({type(e).__name__}: {e})", path=path,
                            fix=f"use the {cls.FILE} that `python -m spotting loso` writes") from None


LOGIT_CLIP = 30.0  # |logit| beyond which a probability is 0 or 1 in float64 (exp(-30) ~ 1e-13)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Class-balanced ridge logistic regression; returns (weights, bias).

    Minimises sum_i s_i logloss_i + l2 / 2 |weights|^2, the bias unpenalised, where s_i = n / (2 n_class(i)):
    positives and negatives carry equal total weight, so rare micro frames are not ignored. That is
    scikit-learn's class_weight="balanced" with C = 1 / l2, solved by Newton steps (newton-cholesky). With one
    class only, the optimum lies at infinity: zero weights and the clipped logit of that class.
    """
    positive = np.asarray(y) > 0.5
    if positive.all() or not positive.any():
        return np.zeros(x.shape[1]), LOGIT_CLIP if positive.any() else -LOGIT_CLIP
    model = LogisticRegression(C=1.0 / l2 if l2 > 0 else np.inf, class_weight="balanced", solver="newton-cholesky",
                               tol=1e-8, max_iter=100)
    model.fit(x, positive)
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def fit_type(train: list[VideoFeatures], labels: list[np.ndarray], kind: str, cfg: LogisticConfig,
             sets: tuple[str, ...]) -> TypeFit:
    """The logistic regression of one type on the frames of `train`, labelled by `labels` (per video, per frame)."""
    channels = train[0].channels(sets, kind)
    if not channels:
        raise DataError(f"no channels to fuse for {kind} (have {sorted(c.name for c in train[0].curves)})",
                        field="channels", fix=f"read {' or '.join(LogisticReader.READS)} channels")
    x = np.concatenate([design(it, channels) for it in train])
    y = np.concatenate(labels)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    w, b = fit_logistic((x - mu) / sd, (y > 0.5).astype(np.float64), cfg.l2)
    return TypeFit(channels, mu.tolist(), sd.tolist(), w.tolist(), b)


def fit_weights(train: list[VideoFeatures], gt: pd.DataFrame, cfg: LogisticConfig,
                sets: tuple[str, ...]) -> LogisticReader:
    """Fit the per-type regressions on the frames of `train` videos, labelled from their rows in `gt`.

    Only the rows of `gt` whose video is in `train` are read: nothing about other subjects can leak in.
    """
    if not train:
        raise DataError("no training videos to fit the logistic reader on", field="logistic",
                        fix="each fold needs at least one training subject")
    labels = [frame_labels(gt[gt["video"] == it.video], it.num_frames) for it in train]
    return LogisticReader(cfg, {kind: fit_type(train, [y[:, t] for y in labels], kind, cfg, sets)
                                for t, kind in enumerate(TYPES)})


def fused_curve(reader: LogisticReader, item: VideoFeatures, kind: str) -> np.ndarray:
    """Per-frame probability of `kind` for one video."""
    fit = reader.types[kind]
    x = (design(item, fit.channels) - np.array(fit.mean)) / np.array(fit.std)
    z = x @ np.array(fit.weights) + fit.bias
    return 1.0 / (1.0 + np.exp(-np.clip(z, -LOGIT_CLIP, LOGIT_CLIP)))


def smoothed_curve(curve: np.ndarray, rule: LogisticTypeConfig, fps: float) -> np.ndarray:
    return iv.smooth(curve, max(1, round(rule.smooth_s * fps)))


def spot_smoothed(smoothed: np.ndarray, rule: LogisticTypeConfig, fps: float, kind: str, p: float, min_score: float,
                  cfg: LogisticConfig, half_width_s: float) -> list[iv.Interval]:
    """Threshold -> peaks -> intervals -> NMS on an already smoothed fused curve."""
    half = max(1, round(half_width_s * fps))
    threshold = max(iv.softnet_threshold(smoothed, p), min_score)
    peaks = iv.detect_peaks(smoothed, threshold, half)
    max_half = max(half, round(rule.max_duration_s * fps / 2))
    found = iv.peak_intervals(smoothed, peaks, half, kind, cfg.extent, max_half)
    return iv.nms(found, cfg.nms_iou)


def _choice_score(smoothed: dict, val: list[VideoFeatures], gt_val: pd.DataFrame, kind: str, choice: tuple,
                  cfg: LogisticConfig, macro_found: dict | None) -> tuple[dict, dict]:
    """(metric of `kind`, intervals by video) for one (half-width, p, min_score) setting on the `val` videos,
    through spotting.intervals.final_intervals as at prediction time: with `macro_found` (the chosen macro
    intervals), micro intervals inside them are dropped."""
    w, p, m = choice
    rule = getattr(cfg, kind)
    found = {it.video: spot_smoothed(smoothed[it.video], rule, it.fps, kind, p, m, cfg, w) for it in val}
    if macro_found is None:
        found = {v: iv.final_intervals(f, [], cfg.micro_inside_macro) for v, f in found.items()}
    else:
        found = {v: iv.final_intervals(macro_found[v], f, cfg.micro_inside_macro) for v, f in found.items()}
    rows = [iv.to_frame(found[it.video], it.subject, it.video) for it in val]
    pred = pd.concat([empty_intervals(with_score=True)] + rows, ignore_index=True)
    return evaluate(gt_val, pred)[kind], found


def choose_thresholds(reader: LogisticReader, val: list[VideoFeatures], gt: pd.DataFrame) -> LogisticReader:
    """Pick (half-width, p, min_score) per type maximising that type's F1 on `val` videos (fewest FPs, then
    the higher thresholds, break ties). Macro first: micro candidates are scored after the micro-inside-macro
    rule has removed those within the chosen macro intervals, as they will be at prediction time."""
    cfg = reader.config
    gt_val = gt[gt["video"].isin({it.video for it in val})]
    types = dict(reader.types)
    macro_found = None
    for kind in ("macro", "micro"):
        rule, best = reader.rule(kind), None
        # the curves do not depend on the setting: fuse and smooth once per video
        smoothed = {it.video: smoothed_curve(fused_curve(reader, it, kind), rule, it.fps) for it in val}
        for choice in itertools.product(rule.half_width_grid_s or [rule.half_width_s], cfg.p_grid,
                                        cfg.min_score_grid):
            score, found = _choice_score(smoothed, val, gt_val, kind, choice, cfg, macro_found)
            key = (score["f1"], -score["fp"], choice[2], choice[1], choice[0])
            if best is None or key > best[0]:
                best = (key, choice, found)
        key, (w, p, m), found = best
        types[kind] = dataclasses.replace(types[kind], half_width_s=w, p=p, min_score=m, inner_f1=key[0])
        macro_found = found
    return dataclasses.replace(reader, types=types)


def fit_reader(items: list[VideoFeatures], gt: pd.DataFrame, sets: tuple[str, ...],
               cfg: LogisticConfig) -> LogisticReader:
    """Weights and thresholds on `items` (training subjects only) reading the channel sets `sets`; with
    `select_heads`, per type the better of with and without the heads' channels (ties go to the cues alone, the
    simpler model)."""
    reader = choose_thresholds(fit_weights(items, gt, cfg, sets), items, gt)
    if not (cfg.select_heads and HEADS in sets and CUES in sets):
        return reader
    cues = choose_thresholds(fit_weights(items, gt, cfg, tuple(s for s in sets if s != HEADS)), items, gt)
    return dataclasses.replace(reader, types={
        kind: reader.types[kind] if reader.types[kind].inner_f1 > cues.types[kind].inner_f1 else cues.types[kind]
        for kind in TYPES})

"""Fusing model score curves with optical-flow region cues, then spotting intervals on the fused curve.

Per expression type, a logistic regression maps per-frame features (the heads' presence / apex probabilities at
every granularity, and the flow baseline's per-region scores) to the probability that the frame lies inside an
expression of that type. It is fitted on frames of training subjects only (the caller passes only those); the
peak threshold per type is then chosen on held-out training subjects (an inner validation split). Spotting the
fused curve reuses spotting.intervals (smoothing, threshold, peaks, extents, NMS, micro-inside-macro).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from data.common.atomic import write_json
from data.common.errors import DataError
from data.common.tables import TYPES, empty_intervals
from data.flow import regions as fl
from finetune.windows import CHANNELS, frame_labels
from spotting import baseline as bl
from spotting import intervals as iv
from spotting.metric import evaluate


@dataclasses.dataclass
class TypeRule:
    """How intervals are formed on one type's fused curve (seconds, converted with the video's fps).

    `half_width_grid_s`: half-widths tried on the training subjects along with the thresholds (empty = always
    `half_width_s`). The width matters as much as the peak: at 30 fps a 13-frame interval (SOFTNet's k = 6) can
    never reach IoU 0.5 with a 5-frame micro-expression.
    """
    half_width_s: float
    smooth_s: float
    max_duration_s: float
    half_width_grid_s: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class FusionConfig:
    use_model: bool = True
    use_cues: bool = True
    # With both: per type, keep the model curves only where they raise that type's F1 on the training subjects'
    # out-of-sample scores over the cues alone (an undertrained encoder adds false positives, not events).
    select_model: bool = True
    l2: float = 1.0  # ridge penalty on the standardised weights
    macro: TypeRule = dataclasses.field(default_factory=lambda: TypeRule(0.6, 0.2, 4.0, [0.4, 0.6, 0.8, 1.0, 1.2]))
    micro: TypeRule = dataclasses.field(default_factory=lambda: TypeRule(0.17, 0.07, 0.5, [0.07, 0.1, 0.13, 0.17]))
    extent: str = "half_max"
    p_grid: list[float] = dataclasses.field(default_factory=lambda: [0.2, 0.4, 0.6, 0.75, 0.9])
    min_score_grid: list[float] = dataclasses.field(default_factory=lambda: [0.5, 0.7, 0.85, 0.93, 0.97, 0.99])
    nms_iou: float = 0.5
    micro_inside_macro: float = 0.5


@dataclasses.dataclass
class VideoItem:
    """Everything fusion needs about one video: its per-frame curves by feature name."""
    subject: str
    video: str
    fps: float
    num_frames: int
    curves: dict[str, np.ndarray]


@dataclasses.dataclass
class Fusion:
    """A fitted fusion: per type, feature names, standardisation, weights; and the chosen thresholds."""
    config: FusionConfig
    names: dict[str, list[str]]
    mean: dict[str, list[float]]
    std: dict[str, list[float]]
    weights: dict[str, list[float]]
    bias: dict[str, float]
    p: dict[str, float] = dataclasses.field(default_factory=lambda: {t: 0.5 for t in TYPES})
    min_score: dict[str, float] = dataclasses.field(default_factory=lambda: {t: 0.5 for t in TYPES})
    half_width_s: dict[str, float] = dataclasses.field(default_factory=dict)  # chosen; missing = the rule's
    inner_f1: dict[str, float] = dataclasses.field(default_factory=dict)  # F1 where the thresholds were chosen

    def width(self, kind: str) -> float:
        return self.half_width_s.get(kind, getattr(self.config, kind).half_width_s)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> Fusion:
        cfg = raw["config"]
        config = FusionConfig(**{**cfg, "macro": TypeRule(**cfg["macro"]), "micro": TypeRule(**cfg["micro"])})
        return cls(**{**raw, "config": config})

    def save(self, path) -> Path:
        write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path) -> Fusion:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"not a fusion file ({type(e).__name__}: {e})", path=path,
                            fix="use the fusion.json that `python -m spotting loso` writes") from None


def feature_names(curves: dict[str, np.ndarray], kind: str, cfg: FusionConfig) -> list[str]:
    """The curves one type's regression uses: model channels of that type, cues of that type."""
    names = []
    for name in sorted(curves):
        if name.startswith("cue."):
            if cfg.use_cues and name.split(".")[1] == kind:
                names.append(name)
        elif cfg.use_model and name.split(".")[-1] in CHANNELS and name.split(".")[-1].startswith(kind):
            names.append(name)
    if not names:
        raise DataError(f"no curves to fuse for {kind} (have {sorted(curves)})", field="fusion",
                        fix="enable use_model or use_cues, and pass model or cue curves")
    return names


def design(item: VideoItem, names: list[str]) -> np.ndarray:
    """[num_frames, features]; cues are compressed with log1p (flow magnitudes have long tails)."""
    cols = []
    for name in names:
        if name not in item.curves:
            raise DataError(f"curve {name!r} missing for video {item.video}", field="curves",
                            fix="compute the same model and cue curves as at fitting time")
        x = np.asarray(item.curves[name], dtype=np.float64)
        cols.append(np.log1p(np.clip(x, 0, None)) if name.startswith("cue.") else x)
    return np.stack(cols, axis=1)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 50) -> tuple[np.ndarray, float]:
    """Class-balanced ridge logistic regression by Newton steps (IRLS); returns (weights, bias)."""
    n, f = x.shape
    pos = float(y.sum())
    # Balance: positives and negatives carry equal total weight, so rare micro frames are not ignored.
    sample_w = np.where(y > 0.5, n / (2 * max(pos, 1.0)), n / (2 * max(n - pos, 1.0)))
    xb = np.concatenate([x, np.ones((n, 1))], axis=1)
    beta = np.zeros(f + 1)
    penalty = np.full(f + 1, l2)
    penalty[-1] = 0.0  # never shrink the bias
    for _ in range(iterations):
        prob = 1.0 / (1.0 + np.exp(-np.clip(xb @ beta, -30, 30)))
        grad = xb.T @ (sample_w * (prob - y)) / n + penalty * beta / n
        hess = (xb * (sample_w * prob * (1 - prob))[:, None]).T @ xb / n + np.diag(penalty / n + 1e-9)
        delta = np.linalg.solve(hess, grad)
        beta -= delta
        if np.abs(delta).max() < 1e-8:
            break
    return beta[:-1], float(beta[-1])


def fit_fusion(train: list[VideoItem], gt: pd.DataFrame, cfg: FusionConfig) -> Fusion:
    """Fit the per-type regressions on the frames of `train` videos, labelled from their rows in `gt`.

    Only the rows of `gt` whose video is in `train` are read: nothing about other subjects can leak in.
    """
    if not train:
        raise DataError("no training videos to fit fusion weights on", field="fusion",
                        fix="each fold needs at least one training subject")
    names, mean, std, weights, bias = {}, {}, {}, {}, {}
    labels = {it.video: frame_labels(gt[gt["video"] == it.video], it.num_frames) for it in train}
    for t, kind in enumerate(TYPES):
        names[kind] = feature_names(train[0].curves, kind, cfg)
        x = np.concatenate([design(it, names[kind]) for it in train])
        y = np.concatenate([labels[it.video][:, t] for it in train])
        mu, sd = x.mean(0), x.std(0) + 1e-6
        w, b = fit_logistic((x - mu) / sd, (y > 0.5).astype(np.float64), cfg.l2)
        mean[kind], std[kind], weights[kind], bias[kind] = mu.tolist(), sd.tolist(), w.tolist(), b
    return Fusion(cfg, names, mean, std, weights, bias)


def fused_curve(fusion: Fusion, item: VideoItem, kind: str) -> np.ndarray:
    """Per-frame probability of `kind` for one video."""
    x = (design(item, fusion.names[kind]) - np.array(fusion.mean[kind])) / np.array(fusion.std[kind])
    z = x @ np.array(fusion.weights[kind]) + fusion.bias[kind]
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def smoothed_curve(curve: np.ndarray, rule: TypeRule, fps: float) -> np.ndarray:
    return iv.smooth(curve, max(1, round(rule.smooth_s * fps)))


def spot_smoothed(smoothed: np.ndarray, rule: TypeRule, fps: float, kind: str, p: float, min_score: float,
                  cfg: FusionConfig, half_width_s: float) -> list[iv.Interval]:
    """Threshold -> peaks -> intervals -> NMS on an already smoothed fused curve."""
    half = max(1, round(half_width_s * fps))
    threshold = max(iv.softnet_threshold(smoothed, p), min_score)
    peaks = iv.detect_peaks(smoothed, threshold, half)
    max_half = max(half, round(rule.max_duration_s * fps / 2))
    found = iv.peak_intervals(smoothed, peaks, half, kind, cfg.extent, max_half)
    return iv.nms(found, cfg.nms_iou)


def spot_item(fusion: Fusion, item: VideoItem, curves: dict[str, np.ndarray] | None = None) -> list[iv.Interval]:
    """Typed intervals of one video; `curves` may carry precomputed fused curves by type."""
    cfg = fusion.config
    found = {}
    for kind in TYPES:
        curve = curves[kind] if curves else fused_curve(fusion, item, kind)
        rule = getattr(cfg, kind)
        found[kind] = spot_smoothed(smoothed_curve(curve, rule, item.fps), rule, item.fps, kind, fusion.p[kind],
                                    fusion.min_score[kind], cfg, fusion.width(kind))
    return iv.resolve_types(found["macro"], found["micro"], cfg.micro_inside_macro)


def predict(fusion: Fusion, items: list[VideoItem]) -> pd.DataFrame:
    """Predictions table for `items`."""
    frames = [empty_intervals(with_score=True)]
    frames += [iv.to_frame(spot_item(fusion, it), it.subject, it.video) for it in items]
    return pd.concat(frames, ignore_index=True)


def _setting_score(smoothed: dict, val: list[VideoItem], gt_val: pd.DataFrame, kind: str, setting: tuple,
                   cfg: FusionConfig, macro_found: dict | None) -> tuple[dict, dict]:
    """(metric of `kind`, intervals by video) for one (half-width, p, min_score) setting on the `val` videos;
    with `macro_found`, micro intervals inside those macro intervals are dropped first, as at prediction time."""
    w, p, m = setting
    rule = getattr(cfg, kind)
    found = {it.video: spot_smoothed(smoothed[it.video], rule, it.fps, kind, p, m, cfg, w) for it in val}
    if macro_found is not None:
        found = {v: iv.resolve_types(macro_found[v], f, cfg.micro_inside_macro) for v, f in found.items()}
    rows = [iv.to_frame(found[it.video], it.subject, it.video) for it in val]
    pred = pd.concat([empty_intervals(with_score=True)] + rows, ignore_index=True)
    return evaluate(gt_val, pred)[kind], found


def choose_thresholds(fusion: Fusion, val: list[VideoItem], gt: pd.DataFrame) -> Fusion:
    """Pick (half-width, p, min_score) per type maximising that type's F1 on `val` videos (fewest FPs, then
    the higher thresholds, break ties). Macro first: micro candidates are scored after the micro-inside-macro
    rule has removed those within the chosen macro intervals, as they will be at prediction time."""
    cfg = fusion.config
    gt_val = gt[gt["video"].isin({it.video for it in val})]
    chosen = {"p": dict(fusion.p), "min_score": dict(fusion.min_score), "half_width_s": dict(fusion.half_width_s),
              "inner_f1": dict(fusion.inner_f1)}
    macro_found = None
    for kind in ("macro", "micro"):
        rule, best = getattr(cfg, kind), None
        # the curves do not depend on the setting: fuse and smooth once per video
        smoothed = {it.video: smoothed_curve(fused_curve(fusion, it, kind), rule, it.fps) for it in val}
        for setting in itertools.product(rule.half_width_grid_s or [rule.half_width_s], cfg.p_grid,
                                         cfg.min_score_grid):
            score, found = _setting_score(smoothed, val, gt_val, kind, setting, cfg, macro_found)
            key = (score["f1"], -score["fp"], setting[2], setting[1], setting[0])
            if best is None or key > best[0]:
                best = (key, setting, found)
        key, (w, p, m), found = best
        chosen["half_width_s"][kind], chosen["p"][kind], chosen["min_score"][kind] = w, p, m
        chosen["inner_f1"][kind] = key[0]
        macro_found = found
    return dataclasses.replace(fusion, **chosen)


def fit_and_choose(items: list[VideoItem], gt: pd.DataFrame, cfg: FusionConfig) -> Fusion:
    """Fusion weights and thresholds on `items`; with `select_model`, per type the better of with and without
    the model curves (ties go to the cues alone, the simpler model)."""
    fusion = choose_thresholds(fit_fusion(items, gt, cfg), items, gt)
    if not (cfg.select_model and cfg.use_model and cfg.use_cues):
        return fusion
    cues = choose_thresholds(fit_fusion(items, gt, dataclasses.replace(cfg, use_model=False)), items, gt)
    pick = {kind: fusion if fusion.inner_f1[kind] > cues.inner_f1[kind] else cues for kind in TYPES}
    per_type = {f: {kind: getattr(pick[kind], f)[kind] for kind in TYPES}
                for f in ("names", "mean", "std", "weights", "bias", "p", "min_score", "half_width_s", "inner_f1")}
    return dataclasses.replace(fusion, **per_type)


def cue_curves(path, bcfg, cache_path, landmarks=None) -> tuple[dict[str, np.ndarray], float, int]:
    """Flow region cues of one video as fusion curves: per type, the baseline's score and one per region.

    Returns (curves by name "cue.<type>.<region|all>", fps, num_frames); flow is cached at `cache_path`.
    """

    result = bl.video_region_curves(path, bcfg, cache_path, landmarks)
    curves, fps, n = result["curves"], result["fps"], result["num_frames"]
    out = {}
    for kind in TYPES:
        out[f"cue.{kind}.all"] = bl.type_score(curves, bcfg, kind, fps, n)
        for region in fl.REGIONS:
            out[f"cue.{kind}.{region}"] = bl.type_score(curves, bcfg, kind, fps, n, regions=[region])
    return out, float(result["fps"]), int(n)

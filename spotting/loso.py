"""Leave-one-subject-out evaluation of the SpotMAE spotter (`python -m spotting loso`, spotting.loso_cli).

One fold per subject (spotting.protocol). Inside a fold only the other subjects are seen: each training subject
gets out-of-sample head scores from heads trained on the remaining training subjects (inner LOSO; or one held-out
inner split); the spotter that reads the channels is fitted on those (`spotter`: the temporal detector, whose
training length, suppression and thresholds come from its own inner folds, or the logistic fusion and its peak
thresholds), then the heads are retrained on all training subjects and the held-out subject is spotted. The
frozen encoder's window features and the flow cues are computed once for all folds (they hold no labels).
Writes <out>/folds/<subject>/{predictions.csv, detector_fit.json or fusion.json, fold.json}, the pooled
<out>/predictions.csv, <out>/metrics.json + metrics.txt in the three metric variants, <out>/timeline.png, the
flow baseline's results on the same videos (<out>/baseline_*), and (final_model) a spotter trained on every
subject in <out>/model for `python -m spotting spot`. Finished folds are skipped on a rerun. Folds run as Ray
tasks when `parallel` is set.
With `encoder_tuning.mode` partial or full the encoder channels are not computed once: each fold fine-tunes the
encoder on its training subjects (spotting.tuned_channels, early stopping on the last of them) and rebuilds every
video's channels with it (folds/<subject>/encoder_tuning.json); the final model carries its own tuned encoder.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from data.common.atomic import read_json, write_json, write_text
from data.common.config import Config, setting, to_dict
from data.common.dataset import read_dataset
from data.common.errors import ConfigError
from finetune import store
from finetune.config import FinetuneConfig
from finetune.encoder import load_encoder
from finetune.features import compute_features
from finetune.heads import SpottingHead
from finetune.motion_tuning import EncoderTuningConfig, check_tuning
from finetune.predict import curves_from_pooled
from finetune.train import build_spotter, fit_heads, train_head, video_labels, window_targets
from spotting import detector_spotter as ds
from spotting import fusion as fu
from spotting import protocol
from spotting import tuned_channels as tc
from spotting.baseline import BaselineConfig
from spotting.channels import ENCODER, FLOW, Channel, VideoFeatures, cue_channels, model_channels, video_features
from spotting.encoder_channels import EncoderChannelsConfig, encoder_channels, stable_video
from spotting.metric import format_variants
from spotting.plots import plot_timeline, plot_tuning

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LosoConfig(Config):
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)  # flow cue settings
    # What turns a video's channels into intervals: "detector" (spotting.detector_spotter: a temporal detector
    # with learned boundaries) or "logistic" (spotting.fusion: per-frame logistic fusion, peaks, fixed widths).
    # Both read the channel sets fusion.use_model / fusion.use_cues switch on (the detector also the FLOW set).
    spotter: Literal["detector", "logistic"] = "detector"
    fusion: fu.FusionConfig = dataclasses.field(default_factory=fu.FusionConfig)
    detector: ds.DetectorSpotterConfig = dataclasses.field(default_factory=ds.DetectorSpotterConfig)
    # fusion.use_encoder: how the encoder channels are made (the encoder is finetune.model's), and where their
    # stabilised streams and features are cached (null: <out>/encoder_input; they hold no labels)
    encoder_input: EncoderChannelsConfig = dataclasses.field(default_factory=EncoderChannelsConfig)
    encoder_cache: str | None = None
    # fusion.use_encoder: fine-tune the encoder on each fold's training subjects before its channels are made
    # (finetune.motion_tuning); frozen (the default) computes them once for all folds
    encoder_tuning: EncoderTuningConfig = dataclasses.field(default_factory=EncoderTuningConfig)
    out: str = "runs/loso"
    # How a fold gets out-of-sample head scores for fitting fusion + thresholds on its training subjects:
    # "cross": every training subject scored by heads trained on the other training subjects (inner LOSO);
    # "holdout": the last `val_subjects` training subjects scored by heads trained on the rest.
    inner: Literal["cross", "holdout"] = "cross"
    val_subjects: int = setting(1, ge=1)
    retrain_on_all: bool = True  # retrain heads on all training subjects before spotting the test subject
    parallel: bool = True  # folds as Ray tasks; false = one after another in this process
    cpus_per_fold: int = setting(1, ge=1)
    final_model: bool = True  # also train on every subject -> <out>/model (for `spotting spot`)
    # label efficiency: each fold trains on only this many of the other subjects (spotting.protocol.loso_splits);
    # null: all of them. The final model (final_model) still learns from every subject.
    train_subjects: int | None = setting(None, ge=1)

    def detector_sets(self) -> tuple[str, ...]:
        """The channel sets the detector reads."""
        return self.fusion.sets() + ((FLOW,) if self.fusion.use_cues else ())

    def tuned(self) -> bool:
        return self.encoder_tuning.mode != "frozen"

    def check(self) -> None:
        if self.tuned() and not self.fusion.use_encoder:
            raise ConfigError("encoder tuning changes the encoder channels, but they are not read",
                              field="encoder_tuning.mode",
                              fix="set fusion.use_encoder=true or encoder_tuning.mode=frozen")
        if self.tuned() and self.fusion.use_model:
            raise ConfigError("the heads read the frozen encoder's RGB features, and a spotter folder holds one "
                              "encoder: tuning the motion encoder and the heads cannot share it",
                              field="encoder_tuning.mode",
                              fix="set fusion.use_model=false or encoder_tuning.mode=frozen")
        if self.tuned() and (self.encoder_input.input.layer != "final" or self.encoder_input.pool.endswith("bands")):
            raise ConfigError("encoder tuning teaches the final tokens pooled by landmark region; these channels "
                              f"read layer {self.encoder_input.input.layer!r} pooled as {self.encoder_input.pool!r}",
                              field="encoder_input", fix="input.layer=final and pool=regions+std (or regions), or "
                              "encoder_tuning.mode=frozen")
        if self.fusion.use_encoder and self.spotter != "detector":
            raise ConfigError("encoder channels speak for no one expression type: only the detector reads them",
                              field="fusion.use_encoder", fix="set spotter=detector or fusion.use_encoder=false")
        if (self.fusion.use_model or self.fusion.use_encoder) and self.finetune.train.mode != "frozen":
            raise ConfigError(f"LOSO's heads read a frozen encoder's cached features, got mode "
                              f"{self.finetune.train.mode!r}", field="finetune.train.mode",
                              fix="set finetune.train.mode=frozen; to fine-tune the encoder inside each fold, set "
                              "encoder_tuning.mode=partial (it changes the encoder channels)")


@dataclasses.dataclass
class Shared:
    """What every fold reads: tables, label-free channels per video (cues, pair motion, the frozen encoder's
    channels; with encoder tuning each fold replaces those by its tuned encoder's, tuned_shared), frozen window
    features for the heads (None when the heads are not used)."""
    videos: pd.DataFrame
    gt: pd.DataFrame
    cues: dict[str, dict[Channel, np.ndarray]]
    features: object | None
    labels: dict[str, np.ndarray]
    dim: int
    tubelet: int
    encoder: object | None = None  # as loaded; encoder_tuning starts from it in every fold
    encoder_dir: Path | None = None  # the encoder channels' cache (stabilised streams + features)


def set_fold_threads(cfg: LosoConfig) -> None:
    """One torch thread per Ray fold task (two processes on two cores: more threads is ~50x slower)."""
    torch.set_num_threads(max(1, cfg.cpus_per_fold if cfg.parallel else cfg.finetune.train.threads))


def model_curves(cfg: LosoConfig, shared: Shared, train_videos: list[str], videos: list[str]) -> dict:
    """Head probabilities {video: {granularity: [T, 4]}} for `videos`, heads trained on `train_videos` only."""
    ft = cfg.finetune
    set_fold_threads(cfg)
    out: dict[str, dict[str, np.ndarray]] = {v: {} for v in videos}
    nframes = dict(zip(shared.videos["video"].astype(str), shared.videos["num_frames"]))
    for g in ft.granularities:
        windows, pooled = shared.features.windows[g.name], shared.features.pooled[g.name]
        with torch.random.fork_rng():
            torch.manual_seed(ft.train.seed)
            head = SpottingHead(shared.dim, ft.model.pool_rows, ft.model.head_hidden, ft.model.head_kernel,
                                shared.tubelet)
        x = torch.cat([pooled[v] for v in train_videos])
        y = torch.cat([window_targets(shared.labels[v], windows[v]) for v in train_videos])
        train_head(head, x, y, ft.train, desc=f"head {g.name}")
        for v in videos:
            out[v][g.name] = curves_from_pooled(head, pooled[v], windows[v], int(nframes[v]))
    return out


def features_for(shared: Shared, videos: list[str], model: dict | None) -> list[VideoFeatures]:
    """The fusion inputs of `videos`: their cue channels and (when given) their model curves as channels."""
    rows = shared.videos.set_index(shared.videos["video"].astype(str))
    items = []
    for v in videos:
        r = rows.loc[v]
        heads = model_channels(model[v]) if model else None
        items.append(video_features(str(r["subject"]), v, r["fps"], r["num_frames"], shared.cues.get(v), heads))
    return items


def inner_scores(cfg: LosoConfig, shared: Shared, train_subjects: list[str]) -> tuple[list[str], dict | None, dict]:
    """(videos to fit on, their out-of-sample head curves or None, the split used) - training subjects only."""
    if cfg.inner == "cross" and len(train_subjects) >= 2:
        model: dict = {}
        if cfg.fusion.use_model:
            for split in protocol.loso_splits(train_subjects):
                model.update(model_curves(cfg, shared, protocol.videos_of(shared.videos, split.train),
                                          protocol.videos_of(shared.videos, [split.test])))
        return (protocol.videos_of(shared.videos, train_subjects), model if cfg.fusion.use_model else None,
                {"inner": "cross"})
    inner, val = protocol.split_subjects(train_subjects, cfg.val_subjects)
    val_videos = protocol.videos_of(shared.videos, val)
    model = (model_curves(cfg, shared, protocol.videos_of(shared.videos, inner), val_videos)
             if cfg.fusion.use_model else None)
    return val_videos, model, {"inner": "holdout", "inner_train": inner, "inner_val": val}


def fit_fold_fusion(cfg: LosoConfig, shared: Shared, train_subjects: list[str]) -> tuple[fu.Fusion, dict]:
    """Fusion weights + thresholds from training subjects only, on out-of-sample head scores."""
    videos, model, split = inner_scores(cfg, shared, train_subjects)
    gt_train = shared.gt[shared.gt["subject"].astype(str).isin(train_subjects)]
    return fu.fit_and_choose(features_for(shared, videos, model), gt_train, cfg.fusion), split


def heldout_features(cfg: LosoConfig, shared: Shared, test_subject: str, heads_on: list[str]) -> list[VideoFeatures]:
    """The held-out subject's channels; with the heads in use, their curves from heads trained on `heads_on`."""
    test_videos = protocol.videos_of(shared.videos, [test_subject])
    model = (model_curves(cfg, shared, protocol.videos_of(shared.videos, heads_on), test_videos)
             if cfg.fusion.use_model else None)
    return features_for(shared, test_videos, model)


@dataclasses.dataclass
class FusionFolds:
    """The fold runner of the SpotMAE spotter (spotting.protocol): heads + fusion fitted on the training subjects;
    the held-out subject's labels are never read."""
    cfg: LosoConfig
    shared: Shared

    def __call__(self, split: protocol.Split) -> protocol.FoldResult:
        cfg, shared, train = self.cfg, self.shared, list(split.train)
        fusion, inner = fit_fold_fusion(cfg, shared, train)
        heads_on = inner.get("inner_train", train) if not cfg.retrain_on_all else train
        pred = fu.predict(fusion, heldout_features(cfg, shared, split.test, heads_on))
        return protocol.FoldResult(pred, {**inner, "fusion": fusion.to_dict()}, {"fusion.json": fusion.to_dict()})


@dataclasses.dataclass
class DetectorFolds:
    """The fold runner of the detector spotter: fitted on the training subjects' channels (head curves
    out-of-sample, as for the fusion); the held-out subject's labels are never read."""
    cfg: LosoConfig
    shared: Shared

    def __call__(self, split: protocol.Split) -> protocol.FoldResult:
        cfg, train = self.cfg, list(split.train)
        shared, _, tuning = tuned_shared(cfg, self.shared, train)
        spotter, inner = fit_fold_detector(cfg, shared, train)
        pred = spotter.predict(heldout_features(cfg, shared, split.test, train))
        artifacts = {"detector_fit.json": spotter.to_dict(), **({"encoder_tuning.json": tuning} if tuning else {})}
        summary = {k: tuning[k] for k in ("fitted", "early_stopping", "best_epoch", "best_val_auc")} if tuning else {}
        return protocol.FoldResult(pred, {**inner, "detector": spotter.selection, **summary}, artifacts)


def tuned_shared(cfg: LosoConfig, shared: Shared, subjects: list[str]) -> tuple[Shared, object, dict | None]:
    """(shared inputs whose encoder channels come from the encoder tuned on `subjects`, that encoder, its tuning
    record); unchanged, with the encoder as loaded and no record, when encoder_tuning is frozen.
    The detector is then fitted on channels of the subjects the encoder learned from: in-sample for them (their
    inner folds are optimistic), out-of-sample only for the held-out subject. Cross-fitting (one tuning per inner
    fold) would remove that at 5x the cost; not done."""
    if not cfg.tuned():
        return shared, shared.encoder, None
    set_fold_threads(cfg)
    encoder, info = tc.tune_on_subjects(shared.encoder, shared.videos, shared.labels, subjects, cfg.encoder_tuning,
                                        cfg.encoder_input, shared.encoder_dir)
    channels = compute_encoder_channels(cfg, shared.videos, encoder, shared.encoder_dir)
    cues = {v: {**{c: x for c, x in shared.cues.get(v, {}).items() if c.set != ENCODER}, **channels[v]}
            for v in channels}
    return dataclasses.replace(shared, cues=cues), encoder, info


def fit_fold_detector(cfg: LosoConfig, shared: Shared, train_subjects: list[str]) -> tuple[ds.DetectorSpotter, dict]:
    """The detector on the training subjects' videos; head curves out-of-sample (inner cross-fitting)."""
    set_fold_threads(cfg)
    _, model, split = inner_scores(dataclasses.replace(cfg, inner="cross"), shared, train_subjects)
    videos = protocol.videos_of(shared.videos, train_subjects)
    gt_train = shared.gt[shared.gt["subject"].astype(str).isin(train_subjects)]
    return ds.fit_spotter(features_for(shared, videos, model), gt_train, cfg.detector_sets(), cfg.detector), split


RUNNERS = {"detector": DetectorFolds, "logistic": FusionFolds}


def compute_cues(cfg: LosoConfig, videos: pd.DataFrame, out: Path) -> dict[str, dict[Channel, np.ndarray]]:
    return {str(r.video): cue_channels(r.path, cfg.baseline, out / "cues" / f"{r.video}.npz")
            for r in tqdm(list(videos.itertuples(index=False)), desc="flow cues", unit="video")}


def encoder_cache_dir(cfg: LosoConfig, out: Path) -> Path:
    return Path(cfg.encoder_cache) if cfg.encoder_cache else out / "encoder_input"


def compute_encoder_channels(cfg: LosoConfig, videos: pd.DataFrame, encoder, cache: Path) -> dict:
    return {str(r.video): encoder_channels(r.path, str(r.video), float(r.fps), int(r.num_frames), encoder,
                                           cfg.encoder_input, cache)
            for r in tqdm(list(videos.itertuples(index=False)), desc="encoder channels", unit="video")}


def stabilise_all(cfg: LosoConfig, videos: pd.DataFrame, frames: int, cache: Path) -> None:
    """Fill the stabilised-stream cache before tuned folds read it (parallel folds would each stabilise)."""
    for r in tqdm(list(videos.itertuples(index=False)), desc="stabilisation", unit="video"):
        stable_video(r.path, str(r.video), float(r.fps), int(r.num_frames), cfg.encoder_input, frames, cache)


def prepare(cfg: LosoConfig, out: Path) -> Shared:
    ft = cfg.finetune
    videos, gt = read_dataset(ft.data.root, "finetune.data.root")
    cues = compute_cues(cfg, videos, out) if cfg.fusion.use_cues else {}
    features, dim, tubelet, encoder, cache = None, 0, 1, None, encoder_cache_dir(cfg, out)
    if cfg.fusion.use_model or cfg.fusion.use_encoder:
        encoder = load_encoder(ft.model.encoder, ft.model.name, ft.train.seed)
    if cfg.fusion.use_encoder and cfg.tuned():
        check_tuning(cfg.encoder_tuning, encoder)  # each fold makes its own channels (tuned_shared)
        stabilise_all(cfg, videos, encoder.cfg.frames, cache)
    elif cfg.fusion.use_encoder:  # label-free per-video channels, kept beside the cues
        for video, channels in compute_encoder_channels(cfg, videos, encoder, cache).items():
            cues[video] = {**cues.get(video, {}), **channels}
    if cfg.fusion.use_model:
        features = compute_features(encoder, videos, ft, ft.feature_cache or out / "features")
        dim, tubelet = encoder.cfg.dim, encoder.cfg.tubelet
    return Shared(videos, gt, cues, features, video_labels(videos, gt), dim, tubelet, encoder, cache)


def final_model(cfg: LosoConfig, shared: Shared, out: Path) -> Path:
    """A spotter for `spotting spot`: heads on every subject, fusion fitted as in a fold (inner split)."""
    folder = out / "model"
    if store.is_complete(folder):
        log.info("final model already in %s: keeping it", folder)
        return folder
    subjects = protocol.subjects_of(shared.videos, cfg.finetune.data.root)
    shared, encoder, tuning = tuned_shared(cfg, shared, subjects)
    if cfg.spotter == "detector":
        detector, split = fit_fold_detector(cfg, shared, subjects)
        detector.save(folder)
    else:
        fusion, split = fit_fold_fusion(cfg, shared, subjects)
        fusion.save(folder / "fusion.json")
    ft = cfg.finetune
    if encoder is None:  # neither heads nor encoder channels: the folder still carries an encoder
        encoder = load_encoder(ft.model.encoder, ft.model.name, ft.train.seed)
    if tuning:
        split = {**split, "encoder_tuning": tuning}
    spotter = build_spotter(encoder, ft)
    if cfg.fusion.use_model:
        fit_heads(spotter, shared.features, shared.labels, protocol.videos_of(shared.videos, subjects), ft)
    write_json(folder / "cues.json", to_dict(cfg.baseline))
    if cfg.fusion.use_encoder:
        write_json(folder / "encoder_input.json", to_dict(cfg.encoder_input))
    store.save_spotter(spotter, ft, folder, {"subjects": subjects, "encoder_source": ft.model.encoder,
                                             "encoder_tuned": tuning is not None, **split})
    return folder


def run_loso(cfg: LosoConfig, runner: Callable[[LosoConfig, Shared], protocol.FoldRunner] | None = None) -> dict:
    """Every fold of `runner` (made from the config and the shared inputs), pooled and scored next to the flow
    baseline; returns {"spotter": metrics, "baseline": metrics}."""
    out = Path(cfg.out)
    t0 = time.perf_counter()
    shared = prepare(cfg, out)
    subjects = protocol.subjects_of(shared.videos, cfg.finetune.data.root)
    runner = runner or RUNNERS[cfg.spotter]
    spotter = protocol.evaluate_folds(runner(cfg, shared), subjects, shared.gt, out, parallel=cfg.parallel,
                                      cpus_per_fold=cfg.cpus_per_fold, desc="LOSO folds",
                                      train_subjects=cfg.train_subjects)
    # the flow cues are the baseline's own curves: its flow is read from the cue cache
    base = protocol.baseline_result(cfg.baseline, shared.videos, shared.gt, out, out / "cues", prefix="baseline_")
    text = (format_variants(spotter.metrics, "LOSO spotter") + "\n"
            + format_variants(base.metrics, "flow-only baseline, same videos"))
    write_text(out / "metrics.txt", text)
    write_json(out / "config.json", to_dict(cfg))
    plot_timeline(shared.gt, spotter.predictions, shared.videos, out / "timeline.png",
                  title="LOSO predictions vs ground truth")
    if cfg.tuned():
        plot_tuning({f.name: read_json(f / "encoder_tuning.json") for f in sorted((out / "folds").iterdir())
                     if (f / "encoder_tuning.json").is_file()}, out / "encoder_tuning.png")
    if cfg.final_model:
        final_model(cfg, shared, out)
    log.info("LOSO over %d subjects in %.1f s -> %s", len(subjects), time.perf_counter() - t0, out)
    print(text)
    return {"spotter": spotter.metrics, "baseline": base.metrics}

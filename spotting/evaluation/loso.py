"""Leave-one-subject-out evaluation of the SpotMAE spotter (`python -m spotting loso`, spotting.cli.loso).

One fold per subject (spotting.evaluation.protocol). The config names the reader (`reader: detector | logistic`,
spotting.readers) and the channel sets it reads (`channels: [cues, flow, encoder, heads]`, spotting.channels).
The label-free sets (cues, flow, encoder) are built once for all folds by the one builder `spot` also calls
(spotting.channels.builder: one decode and one face track per video); the heads learn inside each fold. Inside a
fold only the other subjects are seen: with heads, each training subject gets out-of-sample head scores from
heads trained on the remaining training subjects (inner LOSO; or one held-out inner split for the logistic
reader); the reader is fitted on those (the detector chooses its training length, suppression and thresholds on
its own inner folds), then the heads are retrained on all training subjects and the held-out subject is spotted.
With `encoder_tuning.mode` partial or full each fold fine-tunes the encoder on its training subjects
(spotting.channels.tuned, early stopping on the last of them) and rebuilds every video's encoder channels with it.

Writes <out>/folds/<subject>/{predictions.csv, <reader>_fit.json, fold.json}, the pooled <out>/predictions.csv,
<out>/metrics.json + metrics.txt in the three metric variants, <out>/timeline.png, the flow baseline's results on
the same videos (<out>/baseline_*), and (final_model) a spotter trained on every subject in <out>/model for
`python -m spotting spot`. Finished folds are skipped on a rerun. Folds run as Ray tasks when `parallel` is set.
"""
from __future__ import annotations

import contextlib
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
from data.common.config import Config, replace, setting, to_dict
from data.common.dataset import read_dataset
from data.common.errors import ConfigError
from data.common.hub import is_repo_id, resolve_model
from data.common.storage import shared_locations
from data.common.tables import empty_intervals
from finetune import store
from finetune.encoder.load import load_encoder
from finetune.encoder.tuning import EncoderTuningConfig, check_tuning
from finetune.heads.config import FinetuneConfig
from finetune.heads.features import FeatureSet, compute_features
from finetune.heads.model import SpottingHead
from finetune.heads.predict import curves_from_pooled, model_frames
from finetune.heads.train import build_heads, fit_heads, train_head, video_labels, window_targets
from spotting.baseline import BaselineConfig
from spotting.channels import tuned
from spotting.channels.builder import ChannelBuilder
from spotting.channels.causal import CAUSAL_SETS, CausalConfig
from spotting.channels.encoder import EncoderChannelsConfig, check_pretraining_view, stable_video
from spotting.channels.heads import head_channels
from spotting.channels.vocabulary import CUES, ENCODER, FLOW, HEADS, Channel, ChannelSet, VideoFeatures, video_features
from spotting.detector.reader import DetectorReaderConfig
from spotting.evaluation import protocol
from spotting.evaluation.metric import format_variants
from spotting.evaluation.plots import plot_timeline, plot_tuning
from spotting.intervals import to_frame
from spotting.live.decide import decide_video
from spotting.logistic import LogisticConfig
from spotting.readers import READERS
from spotting.spotter import save_channels

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LosoConfig(Config):
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)  # data, encoder, heads
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)  # how cues and flow are made
    # What turns a video's channels into intervals (spotting.readers): "detector" (a temporal detector with
    # learned boundaries, spotting.detector) or "logistic" (per-frame logistic regression, peaks, fixed widths)
    reader: Literal["detector", "logistic"] = "detector"
    # The channel sets the reader reads (spotting.channels.vocabulary): the default is the full system
    channels: list[ChannelSet] = dataclasses.field(default_factory=lambda: [CUES, FLOW, ENCODER])
    detector: DetectorReaderConfig = dataclasses.field(default_factory=DetectorReaderConfig)
    logistic: LogisticConfig = dataclasses.field(default_factory=LogisticConfig)
    # How the encoder channels are made (the encoder is finetune.model's), and where their stabilised streams and
    # features are cached (null: <out>/encoder_input; they hold no labels)
    encoder_channels: EncoderChannelsConfig = dataclasses.field(default_factory=EncoderChannelsConfig)
    encoder_cache: str | None = None
    # Fine-tune the encoder on each fold's training subjects before its channels are made
    # (finetune.encoder.tuning); frozen (the default) computes them once for all folds
    encoder_tuning: EncoderTuningConfig = dataclasses.field(default_factory=EncoderTuningConfig)
    out: str = "runs/loso"
    # How a fold gets out-of-sample head scores for fitting the logistic reader on its training subjects:
    # "cross": every training subject scored by heads trained on the other training subjects (inner LOSO);
    # "holdout": the last `val_subjects` training subjects scored by heads trained on the rest. The detector
    # always uses "cross" (its own choices come from inner folds).
    inner: Literal["cross", "holdout"] = "cross"
    val_subjects: int = setting(1, ge=1)
    retrain_on_all: bool = True  # retrain heads on all training subjects before spotting the test subject
    parallel: bool = True  # folds as Ray tasks; false = one after another in this process
    cpus_per_fold: int = setting(1, ge=1)
    final_model: bool = True  # also train on every subject -> <out>/model (for `spotting spot`)
    # label efficiency: each fold trains on only this many of the other subjects (spotting.evaluation.protocol.
    # loso_splits); null: all of them. The final model (final_model) still learns from every subject.
    train_subjects: int | None = setting(None, ge=1)
    # causal: the channels `spotting live` computes (spotting.live: running statistics, flow from past pairs) and
    # its sliding-window decisions (`live`), so LOSO scores the live spotter; cues and flow only
    causal: bool = False
    live: CausalConfig = dataclasses.field(default_factory=CausalConfig)

    @property
    def sets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.channels))

    def tuned(self) -> bool:
        return self.encoder_tuning.mode != "frozen"

    def check(self) -> None:
        if not self.channels:
            raise ConfigError("the reader needs channels to read", field="channels", fix="e.g. [cues, flow]")
        reads = READERS[self.reader].READS
        unread = [s for s in self.sets if s not in reads]
        if unread:
            raise ConfigError(f"the {self.reader} reader cannot read {unread}: it reads {list(reads)}",
                              field="channels", fix=f"drop {unread}, or reader=detector (it reads every set)")
        stray = sorted({s for g in self.detector.groups for s in g} - set(self.sets))
        if stray and self.reader == "detector":  # the logistic reader has no groups
            raise ConfigError(f"detector.groups name channel sets {stray} that channels does not read",
                              field="detector.groups", fix=f"detector.groups=[] (one detector on {list(self.sets)}), "
                                                           f"or add them to channels")
        if self.tuned():
            self._check_tuning()
        if self.causal and (self.reader != "detector" or set(self.sets) - set(CAUSAL_SETS)):
            raise ConfigError(f"live spotting (causal=true) reads the detector on {list(CAUSAL_SETS)}, got reader "
                              f"{self.reader!r} on {list(self.sets)}", field="causal",
                              fix=f"set reader=detector and channels={list(CAUSAL_SETS)}, or causal=false")
        if {HEADS, ENCODER} & set(self.sets) and self.finetune.train.mode != "frozen":
            raise ConfigError(f"LOSO's heads and encoder channels read a frozen encoder, got mode "
                              f"{self.finetune.train.mode!r}", field="finetune.train.mode",
                              fix="set finetune.train.mode=frozen; to fine-tune the encoder inside each fold, set "
                              "encoder_tuning.mode=partial (it changes the encoder channels)")

    def _check_tuning(self) -> None:
        if ENCODER not in self.sets:
            raise ConfigError("encoder tuning changes the encoder channels, but they are not read",
                              field="encoder_tuning.mode", fix="add encoder to channels or encoder_tuning.mode=frozen")
        if HEADS in self.sets:
            raise ConfigError("the heads read the frozen encoder's RGB features, and a spotter folder holds one "
                              "encoder: tuning the motion encoder and the heads cannot share it",
                              field="encoder_tuning.mode", fix="drop heads from channels or encoder_tuning.mode=frozen")
        enc = self.encoder_channels
        if enc.view.layer != "final" or enc.pool.endswith("bands"):
            raise ConfigError("encoder tuning teaches the final tokens pooled by landmark region; these channels "
                              f"read layer {enc.view.layer!r} pooled as {enc.pool!r}", field="encoder_channels",
                              fix="view.layer=final and pool=regions+std (or regions), or encoder_tuning.mode=frozen")

    def builder(self, out: Path, encoder=None) -> ChannelBuilder:
        """The label-free channel sets of this config; caches under `out` (cues, tracks) and the encoder cache."""
        return ChannelBuilder(self.sets, self.baseline, self.encoder_channels, encoder, out,
                              encoder_cache_dir(self, out), live=self.live if self.causal else None)


PATH_FIELDS = ("out", "finetune.feature_cache", "finetune.model.encoder")  # paths every fold must find


def located(cfg: LosoConfig, source=None) -> LosoConfig:
    """`cfg` with its paths as every Ray worker names them (data.common.storage.shared_location), a Hub id
    encoder first resolved to its snapshot in the local Hub cache (data.common.hub)."""
    encoder = cfg.finetune.model.encoder
    if encoder and is_repo_id(encoder):
        cfg = replace(cfg, {"finetune.model.encoder": str(resolve_model(encoder, "finetune.model.encoder"))})
    return shared_locations(cfg, PATH_FIELDS, source)


def encoder_cache_dir(cfg: LosoConfig, out: Path) -> Path:
    return Path(cfg.encoder_cache) if cfg.encoder_cache else out / "encoder_input"


@dataclasses.dataclass
class Shared:
    """What every fold reads: tables, label-free channels per video (cues, pair motion, the frozen encoder's
    channels; with encoder tuning each fold replaces the encoder's by its tuned encoder's, tuned_shared), frozen
    window features for the heads (None when the heads are not read)."""
    videos: pd.DataFrame
    gt: pd.DataFrame
    channels: dict[str, dict[Channel, np.ndarray]]
    features: FeatureSet | None
    labels: dict[str, np.ndarray]
    dim: int
    tubelet: int
    encoder: object | None = None  # as loaded; encoder_tuning starts from it in every fold
    builder: ChannelBuilder | None = None
    faces: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # causal: frames with a face


def set_fold_threads(cfg: LosoConfig) -> None:
    """One torch thread per Ray fold task (two processes on two cores: more threads is ~50x slower)."""
    torch.set_num_threads(max(1, cfg.cpus_per_fold if cfg.parallel else cfg.finetune.train.threads))


# ---- the heads, trained inside folds ---------------------------------------------------------------------------

def head_curves(cfg: LosoConfig, shared: Shared, train_videos: list[str], videos: list[str]) -> dict:
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


def features_for(shared: Shared, videos: list[str], heads: dict | None) -> list[VideoFeatures]:
    """The reader inputs of `videos`: their label-free channels and (when given) their head curves."""
    rows = shared.videos.set_index(shared.videos["video"].astype(str))
    items = []
    for v in videos:
        r = rows.loc[v]
        item = video_features(str(r["subject"]), v, r["fps"], r["num_frames"], shared.channels.get(v),
                              head_channels(heads[v]) if heads else None)
        items.append(dataclasses.replace(item, face=shared.faces.get(v)))
    return items


def inner_scores(cfg: LosoConfig, shared: Shared, train_subjects: list[str],
                 inner: str) -> tuple[list[str], dict | None, dict]:
    """(videos to fit on, their out-of-sample head curves or None, the split used) - training subjects only."""
    heads = HEADS in cfg.sets
    if inner == "cross" and len(train_subjects) >= 2:
        curves: dict = {}
        if heads:
            for split in protocol.loso_splits(train_subjects):
                curves.update(head_curves(cfg, shared, protocol.videos_of(shared.videos, split.train),
                                          protocol.videos_of(shared.videos, [split.test])))
        return protocol.videos_of(shared.videos, train_subjects), curves if heads else None, {"inner": "cross"}
    fitted, val = protocol.split_subjects(train_subjects, cfg.val_subjects)
    val_videos = protocol.videos_of(shared.videos, val)
    curves = head_curves(cfg, shared, protocol.videos_of(shared.videos, fitted), val_videos) if heads else None
    return val_videos, curves, {"inner": "holdout", "inner_train": fitted, "inner_val": val}


def heldout_features(cfg: LosoConfig, shared: Shared, test_subject: str, heads_on: list[str]) -> list[VideoFeatures]:
    """The held-out subject's channels; with the heads read, their curves from heads trained on `heads_on`."""
    test_videos = protocol.videos_of(shared.videos, [test_subject])
    curves = (head_curves(cfg, shared, protocol.videos_of(shared.videos, heads_on), test_videos)
              if HEADS in cfg.sets else None)
    return features_for(shared, test_videos, curves)


# ---- one fold ---------------------------------------------------------------------------------------------------

def fit_fold_reader(cfg: LosoConfig, shared: Shared, train_subjects: list[str]) -> tuple[object, dict]:
    """The reader fitted on the training subjects' channels (head curves out-of-sample) and the inner split."""
    set_fold_threads(cfg)
    inner = "cross" if cfg.reader == "detector" else cfg.inner
    videos, curves, split = inner_scores(cfg, shared, train_subjects, inner)
    gt_train = shared.gt[shared.gt["subject"].astype(str).isin(train_subjects)]
    settings = {"detector": cfg.detector, "logistic": cfg.logistic}[cfg.reader]
    return READERS[cfg.reader].fit(features_for(shared, videos, curves), gt_train, cfg.sets, settings), split


def predict(cfg: LosoConfig, reader, items: list[VideoFeatures]) -> tuple[pd.DataFrame, list[dict]]:
    """The reader's intervals of `items`: offline, or (causal) decided on a stream as `spotting live` decides,
    with when each was decided (stream seconds)."""
    if not cfg.causal:
        return reader.predict(items), []
    frames, decisions = [empty_intervals(with_score=True)], []
    for it in items:
        found = decide_video(reader, it, it.face, cfg.live)
        decisions += [{"video": it.video, "fps": it.fps, **dataclasses.asdict(d.interval), "decided_s": d.decided_s}
                      for d in found]
        frames.append(to_frame(sorted((d.interval for d in found), key=lambda i: (i.onset, i.type)), it.subject,
                               it.video))
    return pd.concat(frames, ignore_index=True), decisions


@dataclasses.dataclass
class ReaderFolds:
    """The fold runner of the SpotMAE spotter (spotting.evaluation.protocol): the encoder (when tuned), heads
    and reader fitted on the training subjects; the held-out subject's labels are never read."""
    cfg: LosoConfig
    shared: Shared

    def __call__(self, split: protocol.Split) -> protocol.FoldResult:
        cfg, train = self.cfg, list(split.train)
        shared, _, tuning = tuned_shared(cfg, self.shared, train)
        reader, inner = fit_fold_reader(cfg, shared, train)
        heads_on = inner.get("inner_train", train) if not cfg.retrain_on_all else train
        pred, decisions = predict(cfg, reader, heldout_features(cfg, shared, split.test, heads_on))
        chosen = reader.selection if cfg.reader == "detector" else reader.to_dict()
        files = {f"{cfg.reader}_fit.json": reader.to_dict(), **({"encoder_tuning.json": tuning} if tuning else {}),
                 **({"live_decisions.json": {"decisions": decisions}} if cfg.causal else {})}
        summary = {k: tuning[k] for k in ("fitted", "early_stopping", "best_epoch", "best_val_auc")} if tuning else {}
        return protocol.FoldResult(pred, {**inner, cfg.reader: chosen, **summary}, files)


def tuned_shared(cfg: LosoConfig, shared: Shared, subjects: list[str]) -> tuple[Shared, object, dict | None]:
    """(shared inputs whose encoder channels come from the encoder tuned on `subjects`, that encoder, its tuning
    record); unchanged, with the encoder as loaded and no record, when encoder_tuning is frozen.
    The reader is then fitted on channels of the subjects the encoder learned from: in-sample for them (their
    inner folds are optimistic), out-of-sample only for the held-out subject. Cross-fitting (one tuning per inner
    fold) would remove that at 5x the cost; not done."""
    if not cfg.tuned():
        return shared, shared.encoder, None
    set_fold_threads(cfg)
    builder = shared.builder
    encoder, info = tuned.tune_on_subjects(shared.encoder, shared.videos, shared.labels, subjects,
                                           cfg.encoder_tuning, builder)
    fold_builder = dataclasses.replace(builder, sets=(ENCODER,), encoder=encoder)
    channels = {}
    for r in tqdm(list(shared.videos.itertuples(index=False)), desc="encoder channels", unit="video"):
        own = fold_builder.channels(fold_builder.source(r.path, str(r.video), float(r.fps)))
        channels[str(r.video)] = {**{c: x for c, x in shared.channels[str(r.video)].items() if c.set != ENCODER},
                                  **own}
    return dataclasses.replace(shared, channels=channels), encoder, info


# ---- shared inputs, the final model, the run -------------------------------------------------------------------

def prepare(cfg: LosoConfig, out: Path) -> Shared:
    """Every video's label-free channels (and, with heads, its frozen window features): one pass per video."""
    ft = cfg.finetune
    videos, gt = read_dataset(ft.data.root, "finetune.data.root")
    encoder = (load_encoder(ft.model.encoder, ft.model.name, ft.train.seed)
               if ENCODER in cfg.sets or HEADS in cfg.sets else None)
    if ENCODER in cfg.sets:
        check_pretraining_view(ft.model.encoder, encoder, cfg.encoder_channels.view)
    builder = cfg.builder(out, encoder)
    if cfg.tuned():
        check_tuning(cfg.encoder_tuning, encoder)
        builder = dataclasses.replace(builder, sets=tuple(s for s in cfg.sets if s != ENCODER))
    channels, features, faces = {}, None, {}
    for r in tqdm(list(videos.itertuples(index=False)), desc="channels", unit="video"):
        source = builder.source(r.path, str(r.video), float(r.fps))
        if cfg.causal:
            channels[str(r.video)], faces[str(r.video)] = builder.causal(source)
        else:
            channels[str(r.video)] = builder.channels(source)
        if cfg.tuned():  # each fold makes its own encoder channels from these streams (tuned_shared)
            stable_video(source, cfg.encoder_channels, encoder.cfg.frames, builder.encoder_cache)
        if HEADS in cfg.sets:
            one = compute_features(encoder, videos[videos["video"] == r.video], ft,
                                   ft.feature_cache or out / "features",
                                   frames_of=lambda _: model_frames(source.frames, encoder.cfg.img_size))
            features = one if features is None else features.merge(one)
        source.release()
    dim, tubelet = (encoder.cfg.dim, encoder.cfg.tubelet) if HEADS in cfg.sets else (0, 1)
    return Shared(videos, gt, channels, features, video_labels(videos, gt), dim, tubelet, encoder,
                  dataclasses.replace(builder, sets=cfg.sets), faces)


def final_model(cfg: LosoConfig, shared: Shared, out: Path) -> Path:
    """A spotter for `spotting spot`: the reader (and heads) fitted on every subject, as in a fold."""
    folder = out / "model"
    if store.is_complete(folder):
        log.info("final model already in %s: keeping it", folder)
        return folder
    subjects = protocol.subjects_of(shared.videos, cfg.finetune.data.root)
    log.info("final model: fitting the %s reader on all %d subjects", cfg.reader, len(subjects))
    shared, encoder, tuning = tuned_shared(cfg, shared, subjects)
    reader, split = fit_fold_reader(cfg, shared, subjects)
    reader.save(folder)
    ft = cfg.finetune
    if encoder is None:  # neither heads nor encoder channels: the folder still carries an encoder
        encoder = load_encoder(ft.model.encoder, ft.model.name, ft.train.seed)
    if tuning:
        split = {**split, "encoder_tuning": tuning}
    heads = build_heads(encoder, ft)
    if HEADS in cfg.sets:
        fit_heads(heads, shared.features, shared.labels, protocol.videos_of(shared.videos, subjects), ft)
    save_channels(folder, cfg.sets, cfg.baseline, cfg.encoder_channels, cfg.live if cfg.causal else None)
    store.save_spotter(heads, ft, folder, {"reader": cfg.reader, "subjects": subjects,
                                           "encoder_source": ft.model.encoder, "encoder_tuned": tuning is not None,
                                           "training_fps": store.fps_range(shared.videos), **split})
    return folder


@contextlib.contextmanager
def final_model_alongside(cfg: LosoConfig, shared: Shared, out: Path):
    """The final model (final_model) fitted while the folds run, as one more Ray task beside them, when they run
    in parallel; after them otherwise."""
    if not (cfg.final_model and cfg.parallel) or store.is_complete(out / "model"):
        yield
        if cfg.final_model:
            final_model(cfg, shared, out)
        return
    import ray

    with protocol.ray_folds(cfg.cpus_per_fold):
        done = ray.remote(num_cpus=cfg.cpus_per_fold)(final_model).remote(cfg, shared, out)
        yield
        log.info("waiting for the final model (fitted on every subject beside the folds)")
        while not ray.wait([done], timeout=protocol.HEARTBEAT_S)[0]:
            log.info("final model: still fitting")
        ray.get(done)


def run_loso(cfg: LosoConfig, runner: Callable[[LosoConfig, Shared], protocol.FoldRunner] | None = None) -> dict:
    """Every fold of `runner` (made from the config and the shared inputs), pooled and scored next to the flow
    baseline; returns {"spotter": metrics, "baseline": metrics}."""
    out = Path(cfg.out)
    t0 = time.perf_counter()
    shared = prepare(cfg, out)
    subjects = protocol.subjects_of(shared.videos, cfg.finetune.data.root)
    runner = runner or ReaderFolds
    with final_model_alongside(cfg, shared, out):
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
    log.info("LOSO over %d subjects in %.1f s -> %s", len(subjects), time.perf_counter() - t0, out)
    print(text)
    return {"spotter": spotter.metrics, "baseline": base.metrics}

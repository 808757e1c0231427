"""Leave-one-subject-out evaluation: `python -m spotting loso --config configs/spotting/loso.yaml [key=value]`.

One fold per subject. Inside a fold only the other subjects are seen: each training subject gets out-of-sample head
scores from heads trained on the remaining training subjects (inner LOSO; or one held-out inner split), the
fusion weights and peak thresholds are fitted on those, then the heads are retrained on all training subjects and
the held-out subject is spotted. The frozen encoder's window features and the flow cues are computed once for
all folds (they hold no labels).
Writes <out>/folds/<subject>/{predictions.csv,fusion.json,fold.json}, the pooled <out>/predictions.csv,
<out>/metrics.json + metrics.txt in the three metric variants, <out>/timeline.png, the flow baseline's metrics on the same videos,
and (final_model) a spotter trained on every subject in <out>/model for `python -m spotting spot`.
Finished folds are skipped on a rerun. Folds run as Ray tasks when `parallel` is set.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from tqdm import tqdm

from data.common.atomic import write_json, write_text
from data.common.config import load_config, to_dict
from data.common.errors import ConfigError
from data.common.tables import empty_intervals, read_predictions, write_predictions
from finetune import store
from finetune.config import FinetuneConfig
from finetune.encoder import load_encoder
from finetune.features import compute_features
from finetune.heads import SpottingHead
from finetune.predict import curves_from_pooled, named_curves
from finetune.train import build_spotter, fit_heads, load_dataset, train_head, video_labels, window_targets
from spotting import fusion as fu
from spotting.baseline import BaselineConfig, spot_video
from spotting.intervals import to_frame
from spotting.metric import VARIANTS, evaluate, format_table
from spotting.plots import plot_timeline

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LosoConfig:
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)  # flow cue settings
    fusion: fu.FusionConfig = dataclasses.field(default_factory=fu.FusionConfig)
    out: str = "runs/loso"
    # How a fold gets out-of-sample head scores for fitting fusion + thresholds on its training subjects:
    # "cross": every training subject scored by heads trained on the other training subjects (inner LOSO);
    # "holdout": the last `val_subjects` training subjects scored by heads trained on the rest.
    inner: Literal["cross", "holdout"] = "cross"
    val_subjects: int = 1
    retrain_on_all: bool = True  # retrain heads on all training subjects before spotting the test subject
    parallel: bool = True  # folds as Ray tasks; false = one after another in this process
    cpus_per_fold: int = 1
    final_model: bool = True  # also train on every subject -> <out>/model (for `spotting spot`)

    def __post_init__(self):
        if self.val_subjects < 1:
            raise ConfigError("must be >= 1", field="val_subjects")
        if not (self.fusion.use_model or self.fusion.use_cues):
            raise ConfigError("fusion needs model scores, cues or both", field="fusion.use_model")
        if self.fusion.use_model and self.finetune.train.mode != "frozen":
            raise ConfigError(f"LOSO trains heads on cached frozen-encoder features, got mode "
                              f"{self.finetune.train.mode!r}", field="finetune.train.mode",
                              fix="set finetune.train.mode=frozen (partial/full fine-tuning: python -m finetune)")


@dataclasses.dataclass
class Shared:
    """What every fold reads: tables, cue curves, frozen features (None when the model is not used)."""
    videos: pd.DataFrame
    gt: pd.DataFrame
    cues: dict[str, dict[str, np.ndarray]]
    features: object | None
    labels: dict[str, np.ndarray]
    dim: int
    tubelet: int


def split_subjects(train: list[str], val_count: int) -> tuple[list[str], list[str]]:
    """(inner-train, inner-val) of the training subjects; with one subject, both are that subject."""
    if len(train) < 2:
        log.warning("only %d training subject(s): fusion and thresholds are fitted on training data", len(train))
        return list(train), list(train)
    val_count = min(val_count, len(train) - 1)
    return train[:-val_count], train[-val_count:]


def _videos_of(shared: Shared, subjects: list[str]) -> list[str]:
    return [str(v) for v, s in zip(shared.videos["video"], shared.videos["subject"]) if str(s) in subjects]


def model_curves(cfg: LosoConfig, shared: Shared, train_videos: list[str], videos: list[str]) -> dict:
    """Head probabilities {video: {"gran.channel": curve}} for `videos`, heads trained on `train_videos` only."""
    import torch


    ft = cfg.finetune
    torch.set_num_threads(max(1, cfg.cpus_per_fold if cfg.parallel else ft.train.threads))
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
            curve = curves_from_pooled(head, pooled[v], windows[v], int(nframes[v]))
            out[v].update(named_curves({g.name: curve}))
    return out


def items_for(shared: Shared, videos: list[str], model: dict | None) -> list[fu.VideoItem]:
    rows = shared.videos.set_index(shared.videos["video"].astype(str))
    items = []
    for v in videos:
        curves = dict(shared.cues.get(v, {}))
        curves.update((model or {}).get(v, {}))
        r = rows.loc[v]
        items.append(fu.VideoItem(str(r["subject"]), v, float(r["fps"]), int(r["num_frames"]), curves))
    return items


def inner_scores(cfg: LosoConfig, shared: Shared, train_subjects: list[str]) -> tuple[list[str], dict | None, dict]:
    """(videos to fit on, their out-of-sample head curves or None, the split used) - training subjects only."""
    if cfg.inner == "cross" and len(train_subjects) >= 2:
        model: dict = {}
        for s in train_subjects:
            rest = [t for t in train_subjects if t != s]
            if cfg.fusion.use_model:
                model.update(model_curves(cfg, shared, _videos_of(shared, rest), _videos_of(shared, [s])))
        return _videos_of(shared, train_subjects), model if cfg.fusion.use_model else None, {"inner": "cross"}
    inner, val = split_subjects(train_subjects, cfg.val_subjects)
    val_videos = _videos_of(shared, val)
    model = (model_curves(cfg, shared, _videos_of(shared, inner), val_videos) if cfg.fusion.use_model else None)
    return val_videos, model, {"inner": "holdout", "inner_train": inner, "inner_val": val}


def fit_fold_fusion(cfg: LosoConfig, shared: Shared, train_subjects: list[str]) -> tuple[fu.Fusion, dict]:
    """Fusion weights + thresholds from training subjects only, on out-of-sample head scores."""
    videos, model, split = inner_scores(cfg, shared, train_subjects)
    items = items_for(shared, videos, model)
    gt_train = shared.gt[shared.gt["subject"].astype(str).isin(train_subjects)]
    return fu.fit_and_choose(items, gt_train, cfg.fusion), split


def run_fold(cfg: LosoConfig, shared: Shared, test_subject: str) -> tuple[pd.DataFrame, dict]:
    """Spot the held-out subject; nothing of its labels is read before the final evaluation."""
    subjects = sorted(map(str, shared.videos["subject"].unique()))
    train = [s for s in subjects if s != test_subject]
    fusion, split = fit_fold_fusion(cfg, shared, train)
    test_videos = _videos_of(shared, [test_subject])
    model = None
    if cfg.fusion.use_model:
        heads_on = split.get("inner_train", train) if not cfg.retrain_on_all else train
        model = model_curves(cfg, shared, _videos_of(shared, heads_on), test_videos)
    pred = fu.predict(fusion, items_for(shared, test_videos, model))
    gt_test = shared.gt[shared.gt["subject"].astype(str) == test_subject]
    info = {"test_subject": test_subject, "train_subjects": train, **split, "fusion": fusion.to_dict(),
            "metrics": evaluate(gt_test, pred)}
    return pred, info


def compute_cues(cfg: LosoConfig, videos: pd.DataFrame, out: Path) -> dict[str, dict[str, np.ndarray]]:
    cues = {}
    for r in tqdm(list(videos.itertuples(index=False)), desc="flow cues", unit="video"):
        cues[str(r.video)], _, _ = fu.cue_curves(r.path, cfg.baseline, out / "cues" / f"{r.video}.npz")
    return cues


def prepare(cfg: LosoConfig, out: Path) -> Shared:
    ft = cfg.finetune
    videos, gt = load_dataset(ft.data.root, ft.data.synthetic_config)
    cues = compute_cues(cfg, videos, out)
    features, dim, tubelet = None, 0, 1
    if cfg.fusion.use_model:

        encoder = load_encoder(ft.model.encoder, ft.model.name, ft.train.seed)
        features = compute_features(encoder, videos, ft, ft.feature_cache or out / "features")
        dim, tubelet = encoder.cfg.dim, encoder.cfg.tubelet
    return Shared(videos, gt, cues, features, video_labels(videos, gt), dim, tubelet)


def _fold_done(folder: Path) -> bool:
    return (folder / "fold.json").is_file() and (folder / "predictions.csv").is_file()


def _save_fold(folder: Path, pred: pd.DataFrame, info: dict) -> None:
    write_predictions(pred, folder / "predictions.csv")
    fu.Fusion.from_dict(info["fusion"]).save(folder / "fusion.json")
    write_json(folder / "fold.json", info)  # written last: marks the fold finished


def run_folds(cfg: LosoConfig, shared: Shared, todo: list[str], out: Path) -> None:
    if not cfg.parallel or len(todo) < 2:
        for s in tqdm(todo, desc="LOSO folds", unit="fold"):
            _save_fold(out / "folds" / s, *run_fold(cfg, shared, s))
        return
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=max(1, cfg.cpus_per_fold * min(len(todo), 2)), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        remote = ray.remote(num_cpus=cfg.cpus_per_fold)(run_fold)
        cfg_ref, shared_ref = ray.put(cfg), ray.put(shared)
        pending = {remote.remote(cfg_ref, shared_ref, s): s for s in todo}
        with tqdm(total=len(todo), desc="LOSO folds (ray)", unit="fold") as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                s = pending.pop(done[0])
                _save_fold(out / "folds" / s, *ray.get(done[0]))
                bar.update(1)
    finally:
        if started:
            ray.shutdown()


def pooled_metrics(gt: pd.DataFrame, pred: pd.DataFrame) -> dict:
    return {variant: evaluate(gt, pred, variant) for variant in VARIANTS}


def metrics_text(metrics: dict, title: str) -> str:
    return "\n\n".join(format_table(metrics[v], f"{title} ({v})") for v in VARIANTS) + "\n"


def baseline_metrics(cfg: LosoConfig, shared: Shared, out: Path) -> dict:
    """The flow-only baseline on the same videos (it learns nothing, so folds do not change it)."""

    rows = [empty_intervals(with_score=True)]
    for r in shared.videos.itertuples(index=False):
        found = spot_video(r.path, cfg.baseline, out / "cues" / f"{r.video}.npz")  # reads the cached flow
        rows.append(to_frame(found, str(r.subject), str(r.video)))
    pred = pd.concat(rows, ignore_index=True)
    write_predictions(pred, out / "baseline_predictions.csv")
    return pooled_metrics(shared.gt, pred)


def final_model(cfg: LosoConfig, shared: Shared, out: Path) -> Path:
    """A spotter for `spotting spot`: heads on every subject, fusion fitted as in a fold (inner split)."""

    folder = out / "model"
    if store.is_complete(folder):
        log.info("final model already in %s: keeping it", folder)
        return folder
    subjects = sorted(map(str, shared.videos["subject"].unique()))
    fusion, split = fit_fold_fusion(cfg, shared, subjects)
    ft = cfg.finetune
    encoder = load_encoder(ft.model.encoder, ft.model.name, ft.train.seed)
    spotter = build_spotter(encoder, ft)
    if cfg.fusion.use_model:
        fit_heads(spotter, shared.features, shared.labels, _videos_of(shared, subjects), ft)
    fusion.save(folder / "fusion.json")
    write_json(folder / "cues.json", to_dict(cfg.baseline))
    store.save_spotter(spotter, ft, folder, {"subjects": subjects, "encoder_source": ft.model.encoder, **split})
    return folder


def run_loso(cfg: LosoConfig) -> dict:
    out = Path(cfg.out)
    t0 = time.perf_counter()
    shared = prepare(cfg, out)
    subjects = sorted(map(str, shared.videos["subject"].unique()))
    if len(subjects) < 2:
        raise ConfigError(f"LOSO needs at least 2 subjects, the dataset has {subjects}",
                          path=cfg.finetune.data.root, field="subject", fix="add subjects")
    todo = [s for s in subjects if not _fold_done(out / "folds" / s)]
    if len(todo) < len(subjects):
        log.info("%d of %d folds already finished: skipping them", len(subjects) - len(todo), len(subjects))
    run_folds(cfg, shared, todo, out)
    pred = pd.concat([read_predictions(out / "folds" / s / "predictions.csv") for s in subjects],
                     ignore_index=True)
    write_predictions(pred, out / "predictions.csv")
    metrics = pooled_metrics(shared.gt, pred)
    write_json(out / "metrics.json", metrics)
    text = metrics_text(metrics, "LOSO spotter")
    base = baseline_metrics(cfg, shared, out)
    write_json(out / "baseline_metrics.json", base)
    text += "\n" + metrics_text(base, "flow-only baseline, same videos")
    write_text(out / "metrics.txt", text)
    write_json(out / "config.json", to_dict(cfg))

    plot_timeline(shared.gt, pred, shared.videos, out / "timeline.png", title="LOSO predictions vs ground truth")
    if cfg.final_model:
        final_model(cfg, shared, out)
    log.info("LOSO over %d subjects in %.1f s -> %s", len(subjects), time.perf_counter() - t0, out)
    print(text)
    return {"spotter": metrics, "baseline": base}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m spotting loso", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (configs/spotting/loso.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. parallel=false")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, LosoConfig, args.overrides)
    result = run_loso(cfg)
    print(json.dumps({k: v["megc"]["overall"] for k, v in result.items()}))
    return 0

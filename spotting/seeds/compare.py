"""`python -m spotting seeds --method softnet|lgnmnet|mean|lgsnet|all --config configs/seeds/compare.yaml [k=v]`

Runs the seed methods on one dataset folder with the same leave-one-subject-out folds as spotting.loso (one fold
per subject, subjects in sorted order, the test subject's labels read only for scoring) and the same metric.
Writes <out>/<method>/folds/<subject>/predictions.csv (a finished fold is skipped on a rerun),
<out>/<method>/predictions.csv + metrics.json, and with --method all the comparison table
<out>/comparison.md (+ .json): every method next to the flow-only baseline and, when enabled, the SpotMAE
LOSO spotter.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from data.common.atomic import write_json, write_text
from data.common.config import load_config, to_dict
from data.common.errors import ConfigError
from data.common.tables import TYPES, empty_intervals, read_predictions, write_predictions
from finetune.train import load_dataset
from spotting.baseline import spot_video
from spotting.intervals import to_frame
from spotting.loso import LosoConfig, run_loso
from spotting.metric import VARIANTS, evaluate
from spotting.seeds import cnn, inputs, lgsnet
from spotting.seeds.config import CNN_METHODS, METHODS, SeedsConfig
from spotting.seeds.mean import strs

log = logging.getLogger(__name__)

COLUMNS_DOC = ("Macro / micro / overall F1: our `megc` metric variant (one-to-one matching at IoU >= 0.5, false "
               "positives counted in every video). Overall F1 (softnet): the `softnet` variant (a type is scored "
               "only in videos holding ground truth of that type). STRS: spotting F1 (megc, overall) x emotion "
               "recognition macro-F1 over the true positives (spot-then-recognize methods only). Time: wall "
               "seconds for all folds on this machine (2 shared cores: noisy), training and inference; the seed "
               "methods' shared ROI flow images are computed once beforehand and not included, the baseline's flow "
               "is; SpotMAE: this invocation of spotting.loso, which reuses folds finished by an earlier one.")


def video_data(cfg: SeedsConfig, videos: pd.DataFrame, gt: pd.DataFrame, out: Path) -> list[cnn.VideoData]:
    """ROI flow images of every video at both types' k (cached under <out>/inputs)."""
    result = []
    total = int(videos["num_frames"].sum()) * len(TYPES)
    with tqdm(total=total, desc="ROI flow images", unit="pair") as bar:
        for r in videos.itertuples(index=False):
            ks = sorted({cfg.type_k(kind, float(r.fps)) for kind in TYPES})
            images = inputs.load_or_compute(r.path, out / "inputs" / f"{r.video}.npz", ks, cfg.image_size,
                                            cfg.flow_method, bar.update)
            rows = gt[gt["video"].astype(str) == str(r.video)]
            result.append(cnn.VideoData(str(r.subject), str(r.video), float(r.fps), int(r.num_frames), images, rows,
                                        str(r.path), str(out / "inputs" / f"{r.video}_appearance.npz")))
    return result


def subjects_of(videos: pd.DataFrame, path) -> list[str]:
    subjects = sorted(map(str, videos["subject"].unique()))
    if len(subjects) < 2:
        raise ConfigError(f"LOSO needs at least 2 subjects, the dataset has {subjects}", path=path,
                          field="subject", fix="add subjects")
    return subjects


def fold_runner(method: str):
    if method in CNN_METHODS:
        return cnn.run_fold

    return lgsnet.run_fold


def run_method(method: str, cfg: SeedsConfig, data: list, subjects: list[str], out: Path) -> tuple[pd.DataFrame, float]:
    """All folds of one method (finished folds reused); returns pooled predictions and the seconds spent."""
    folder = out / method
    run = fold_runner(method)
    spent = 0.0
    for s in tqdm(subjects, desc=f"{method} folds", unit="fold"):
        done = folder / "folds" / s / "predictions.csv"
        if done.is_file():
            continue
        t0 = time.perf_counter()
        pred = run(method, cfg, data, s)
        spent += time.perf_counter() - t0
        write_predictions(pred, done)
    timing = folder / "seconds.json"
    if spent:  # a rerun that finds every fold done keeps the time of the run that made them
        previous = json.loads(timing.read_text())["seconds"] if timing.is_file() else 0.0
        write_json(timing, {"seconds": previous + spent})
    seconds = json.loads(timing.read_text())["seconds"] if timing.is_file() else spent
    frames = [empty_intervals(with_score=True)] + [read_predictions(folder / "folds" / s / "predictions.csv")
                                                   for s in subjects]
    pred = pd.concat(frames, ignore_index=True)
    write_predictions(pred, folder / "predictions.csv")
    return pred, seconds


def score(gt: pd.DataFrame, pred: pd.DataFrame, with_strs: bool) -> dict:
    result = {variant: evaluate(gt, pred, variant) for variant in VARIANTS}
    if with_strs:

        result["str_score"] = strs(gt, pred)  # not "strs": that name is a metric variant
    return result


def baseline_row(cfg: SeedsConfig, videos: pd.DataFrame, gt: pd.DataFrame, out: Path) -> tuple[dict, float]:
    """The flow-only baseline on the same videos (it learns nothing, so folds do not change it); a finished run
    (predictions + seconds.json) is reused."""

    folder = out / "baseline"
    if (folder / "predictions.csv").is_file() and (folder / "seconds.json").is_file():
        pred = read_predictions(folder / "predictions.csv")
        return score(gt, pred, False), json.loads((folder / "seconds.json").read_text())["seconds"]
    t0 = time.perf_counter()
    rows = [empty_intervals(with_score=True)]
    for r in tqdm(list(videos.itertuples(index=False)), desc="flow baseline", unit="video"):
        found = spot_video(r.path, cfg.baseline, folder / "curves" / f"{r.video}.npz")
        rows.append(to_frame(found, str(r.subject), str(r.video)))
    pred = pd.concat(rows, ignore_index=True)
    seconds = time.perf_counter() - t0
    write_predictions(pred, folder / "predictions.csv")
    write_json(folder / "seconds.json", {"seconds": seconds})
    return score(gt, pred, False), seconds


def spotmae_row(cfg: SeedsConfig, out: Path) -> tuple[dict, float]:
    """The SpotMAE spotter through spotting.loso on the same data folder (its own folds = ours: one per subject)."""

    overrides = [f"finetune.data.root={cfg.data.root}", "finetune.data.synthetic_config=null",
                 f"out={out / 'spotmae'}", "final_model=false", *cfg.spotmae.overrides]
    loso_cfg = load_config(cfg.spotmae.config, LosoConfig, overrides)
    t0 = time.perf_counter()
    result = run_loso(loso_cfg)
    return result["spotter"], time.perf_counter() - t0


def guarded_spotmae_row(cfg: SeedsConfig, out: Path) -> tuple[dict, float]:
    """The SpotMAE column, or a row that says why it failed: the seed columns cost minutes and are kept either way
    (the failure is logged with its traceback, shown in the table, and makes the command exit 1)."""
    t0 = time.perf_counter()
    try:
        return spotmae_row(cfg, out)
    except Exception as e:  # noqa: BLE001 - reported in the table and the exit code, not swallowed
        log.exception("SpotMAE LOSO column failed")
        return {"error": f"{type(e).__name__}: {e}"}, time.perf_counter() - t0


def table_row(name: str, metrics: dict, seconds: float) -> str:
    if "error" in metrics:
        return f"| {name} | failed: {metrics['error']} | | | | | {seconds:.0f} |"
    m = metrics["megc"]
    strs = f"{metrics['str_score']['strs']:.3f}" if "str_score" in metrics else "-"
    return (f"| {name} | {m['macro']['f1']:.3f} | {m['micro']['f1']:.3f} | {m['overall']['f1']:.3f} | "
            f"{metrics['softnet']['overall']['f1']:.3f} | {strs} | {seconds:.0f} |")


def markdown(rows: dict[str, tuple[dict, float]], num_videos: int, num_subjects: int) -> str:
    lines = [f"LOSO over {num_subjects} subjects ({num_videos} videos), synthetic benchmark.", "",
             "| method | macro F1 | micro F1 | overall F1 | overall F1 (softnet) | STRS | time (s) |",
             "|---|---|---|---|---|---|---|"]
    lines += [table_row(name, metrics, seconds) for name, (metrics, seconds) in rows.items()]
    return "\n".join(lines + ["", COLUMNS_DOC, ""])


def run(cfg: SeedsConfig) -> dict:
    out = Path(cfg.out)

    videos, gt = load_dataset(cfg.data.root, cfg.data.synthetic_config)  # generates the synthetic set if asked
    subjects = subjects_of(videos, cfg.data.root)
    methods = list(METHODS) if cfg.method == "all" else [cfg.method]
    data = video_data(cfg, videos, gt, out)  # every seed method reads the ROI flow images
    rows: dict[str, tuple[dict, float]] = {}
    for method in methods:
        pred, seconds = run_method(method, cfg, data, subjects, out)
        rows[method] = (score(gt, pred, method == "mean"), seconds)
        write_json(out / method / "metrics.json", rows[method][0])
        log.info("%s: overall F1 %.3f (megc) in %.0f s", method, rows[method][0]["megc"]["overall"]["f1"], seconds)
    if cfg.method == "all":
        rows["flow-only baseline"] = baseline_row(cfg, videos, gt, out)
        if cfg.spotmae.enabled:
            rows["SpotMAE (LOSO spotter)"] = guarded_spotmae_row(cfg, out)
        text = markdown(rows, len(videos), len(subjects))
        write_text(out / "comparison.md", text)
        write_json(out / "comparison.json", {name: {"metrics": m, "seconds": s} for name, (m, s) in rows.items()})
        print(text)
    write_json(out / "config.json", to_dict(cfg))
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m spotting seeds", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (configs/seeds/compare.yaml)")
    parser.add_argument("--method", help="softnet | lgnmnet | mean | lgsnet | all (overrides the config's method)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"method={args.method}"] if args.method else [])
    cfg = load_config(args.config, SeedsConfig, overrides)
    rows = run(cfg)
    print(json.dumps({name: m["megc"]["overall"]["f1"] if "megc" in m else m for name, (m, _) in rows.items()}))
    return 1 if any("error" in m for m, _ in rows.values()) else 0

"""The published methods on one dataset folder, through the evaluation protocol (`python -m spotting published`,
spotting.cli.published).

Each method is a fold runner of spotting.evaluation.protocol: the same leave-one-subject-out folds as
spotting.evaluation.loso (one fold
per subject, subjects in sorted order, the test subject's labels read only for scoring) and the same metric.
Writes <out>/<method>/folds/<subject>/{predictions.csv, fold.json} (a finished fold is skipped on a rerun),
<out>/<method>/predictions.csv + metrics.json, and with method "all" the comparison table <out>/comparison.md
(+ .json): every method next to the flow-only baseline and, when enabled, the SpotMAE LOSO spotter.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from data.common.atomic import write_json, write_text
from data.common.config import load_config, replace, to_dict
from data.common.dataset import read_dataset
from data.common.tables import TYPES
from spotting.evaluation import protocol
from spotting.evaluation.loso import LosoConfig, run_loso
from spotting.evaluation.metric import evaluate_variants
from spotting.published import cnn, inputs, lgsnet
from spotting.published.config import CNN_METHODS, METHODS, PublishedConfig
from spotting.published.mean import strs

log = logging.getLogger(__name__)

COLUMNS = ["macro", "micro", "overall", "overall_softnet", "strs", "seconds"]
COLUMNS_DOC = ("Macro / micro / overall F1: our `megc` metric variant (one-to-one matching at IoU >= 0.5, false "
               "positives counted in every video). Overall F1 (softnet): the `softnet` variant (a type is scored "
               "only in videos holding ground truth of that type). STRS: spotting F1 (megc, overall) x emotion "
               "recognition macro-F1 over the true positives (spot-then-recognize methods only). Time: wall "
               "seconds for all folds on this machine (2 shared cores: noisy), training and inference; the "
               "published methods' shared ROI flow images are computed once beforehand and not included, the "
               "baseline's flow is; SpotMAE: this invocation of spotting.evaluation.loso, which reuses folds "
               "finished by an "
               "earlier one.")


def video_data(cfg: PublishedConfig, videos: pd.DataFrame, gt: pd.DataFrame, out: Path) -> list[cnn.VideoData]:
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


@dataclasses.dataclass
class PublishedFolds:
    """The fold runner of one published method (spotting.evaluation.protocol)."""
    method: str
    cfg: PublishedConfig
    data: list[cnn.VideoData]

    def __call__(self, split: protocol.Split) -> protocol.FoldResult:
        run = cnn.run_fold if self.method in CNN_METHODS else lgsnet.run_fold
        return protocol.FoldResult(run(self.method, self.cfg, self.data, split.test))


def with_strs(gt: pd.DataFrame, pred: pd.DataFrame) -> dict:
    """Every metric variant and, for spot-then-recognize methods, the STRS."""
    return {**evaluate_variants(gt, pred), "str_score": strs(gt, pred)}  # not "strs": that name is a variant


def method_row(method: str, cfg: PublishedConfig, data: list, subjects: list[str], gt: pd.DataFrame,
               out: Path) -> protocol.Row:
    result = protocol.evaluate_folds(PublishedFolds(method, cfg, data), subjects, gt, out / method,
                                     desc=f"{method} folds", score=with_strs if method == "mean" else evaluate_variants)
    log.info("%s: overall F1 %.3f (megc) in %.0f s", method, result.metrics["megc"]["overall"]["f1"], result.seconds)
    return protocol.Row(method, result.metrics, result.seconds)


def baseline_row(cfg: PublishedConfig, videos: pd.DataFrame, gt: pd.DataFrame, out: Path) -> protocol.Row:
    folder = out / "baseline"
    result = protocol.baseline_result(cfg.baseline, videos, gt, folder, folder / "curves", workers=cfg.baseline.workers)
    return protocol.Row("flow-only baseline", result.metrics, result.seconds)


def spotmae_row(cfg: PublishedConfig, out: Path) -> protocol.Row:
    """The SpotMAE spotter through spotting.evaluation.loso on the same data folder (its own folds = ours: one per
    subject),
    or a row that says why it failed: the other rows cost minutes and are kept either way (the failure is logged
    with its traceback, shown in the table, and makes the command exit 1)."""
    label = "SpotMAE (LOSO spotter)"
    t0 = time.perf_counter()
    try:
        loso = replace(load_config(cfg.spotmae.config, LosoConfig, cfg.spotmae.overrides),
                       {"finetune.data.root": cfg.data.root, "out": str(out / "spotmae"), "final_model": False})
        return protocol.Row(label, run_loso(loso)["spotter"], time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - reported in the table and the exit code, not swallowed
        log.exception("SpotMAE LOSO row failed")
        return protocol.Row(label, {"error": f"{type(e).__name__}: {e}"}, time.perf_counter() - t0)


def markdown(rows: list[protocol.Row], num_videos: int, num_subjects: int) -> str:
    lines = [f"LOSO over {num_subjects} subjects ({num_videos} videos), synthetic benchmark.", "",
             protocol.results_table(rows, COLUMNS)]
    return "\n".join(lines + ["", COLUMNS_DOC, ""])


def run(cfg: PublishedConfig) -> dict[str, protocol.Row]:
    """The configured method(s); with "all" also the baseline and SpotMAE rows and the comparison table."""
    out = Path(cfg.out)
    videos, gt = read_dataset(cfg.data.root)
    subjects = protocol.subjects_of(videos, cfg.data.root)
    methods = list(METHODS) if cfg.method == "all" else [cfg.method]
    data = video_data(cfg, videos, gt, out)  # every published method reads the ROI flow images
    rows = {m: method_row(m, cfg, data, subjects, gt, out) for m in methods}
    if cfg.method == "all":
        rows["baseline"] = baseline_row(cfg, videos, gt, out)
        if cfg.spotmae.enabled:
            rows["spotmae"] = spotmae_row(cfg, out)
        text = markdown(list(rows.values()), len(videos), len(subjects))
        write_text(out / "comparison.md", text)
        write_json(out / "comparison.json", {r.label: {"metrics": r.metrics, "seconds": r.seconds}
                                             for r in rows.values()})
        print(text)
    write_json(out / "config.json", to_dict(cfg))
    return rows

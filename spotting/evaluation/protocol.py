"""The evaluation protocol every spotter is scored by: leave-one-subject-out folds, pooled, in every metric variant.

- Folds: one per subject, subjects in sorted order (`loso_splits`). A spotter enters as a *fold runner*: a
  picklable callable that takes a `Split` and returns the test subject's predictions (`FoldResult`). It is never
  given the test subject's labels: the protocol scores each fold itself.
- `evaluate_folds` runs every unfinished fold (one after another, or as Ray tasks), writes
  <folder>/folds/<subject>/{predictions.csv, the runner's extra JSON files, fold.json} (fold.json last: it marks
  the fold finished, so a rerun skips it), pools the folds into <folder>/predictions.csv and scores the pool in
  every metric variant (<folder>/metrics.json).
- `baseline_result`: the flow-only baseline on the same videos. It learns nothing, so it needs no folds.
- `results_table`: results side by side, as markdown (README, comparison files) or aligned text (terminal).

LOSO (spotting.evaluation.loso), the published methods (spotting.published.compare), the ablation and the encoder probe
(benchmarks/) all evaluate through here; a new spotter is a new fold runner, not a new loop.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from data.common.atomic import write_json
from data.common.config import to_dict
from data.common.errors import ConfigError
from data.common.tables import empty_intervals, read_predictions, write_predictions
from spotting.baseline import BaselineConfig, spot_dataset
from spotting.evaluation.metric import evaluate, evaluate_variants

log = logging.getLogger(__name__)
FOLD_DONE = "fold.json"
HEARTBEAT_S = 10.0  # a log line at least this often while Ray folds run (a fold takes minutes)


@dataclasses.dataclass(frozen=True)
class Split:
    """One fold: the held-out subject and the subjects a spotter may learn from."""
    test: str
    train: tuple[str, ...]


@dataclasses.dataclass
class FoldResult:
    predictions: pd.DataFrame  # the test subject's videos only
    info: dict = dataclasses.field(default_factory=dict)  # goes into fold.json
    files: dict[str, dict] = dataclasses.field(default_factory=dict)  # more JSON files of the fold, by name


FoldRunner = Callable[[Split], FoldResult]


@dataclasses.dataclass
class Result:
    """A spotter's pooled predictions, their metrics in every variant, and the seconds spent making them."""
    predictions: pd.DataFrame
    metrics: dict
    seconds: float


def subjects_of(videos: pd.DataFrame, source) -> list[str]:
    """The dataset's subjects, sorted; LOSO needs two at least."""
    subjects = sorted(map(str, videos["subject"].unique()))
    if len(subjects) < 2:
        raise ConfigError(f"LOSO needs at least 2 subjects, the dataset has {subjects}", path=source,
                          field="subject", fix="add subjects")
    return subjects


def loso_splits(subjects: list[str], train_subjects: int | None = None) -> list[Split]:
    """One split per subject. `train_subjects` (label-efficiency runs): each fold trains on only that many of
    the others, the ones that follow the held-out subject in `subjects`' order (cyclically), so every subject
    is used as often and the choice is the same in every run."""
    n = len(subjects)
    if train_subjects is None or train_subjects >= n - 1:
        return [Split(s, tuple(t for t in subjects if t != s)) for s in subjects]
    return [Split(s, tuple(sorted(subjects[(i + k) % n] for k in range(1, train_subjects + 1))))
            for i, s in enumerate(subjects)]


def videos_of(videos: pd.DataFrame, subjects) -> list[str]:
    """The videos of `subjects`, in video-table order."""
    wanted = set(map(str, subjects))
    return [str(v) for v, s in zip(videos["video"], videos["subject"]) if str(s) in wanted]


def split_subjects(train: list[str], val_count: int) -> tuple[list[str], list[str]]:
    """(inner-train, inner-val) of the training subjects: the last `val_count` are held out; with one subject,
    both are that subject (what is chosen on the held-out part is then chosen on training data)."""
    if len(train) < 2:
        log.warning("only %d training subject(s): the inner held-out part is the training part", len(train))
        return list(train), list(train)
    val_count = min(val_count, len(train) - 1)
    return list(train[:-val_count]), list(train[-val_count:])


def run_fold(runner: FoldRunner, split: Split) -> FoldResult:
    """One fold, with the split and its seconds added to its info."""
    t0 = time.perf_counter()
    fold = runner(split)
    fold.info = {"test_subject": split.test, "train_subjects": list(split.train), **fold.info,
                 "seconds": round(time.perf_counter() - t0, 3)}
    return fold


def _save_fold(folder: Path, fold: FoldResult, gt: pd.DataFrame) -> None:
    test = fold.info["test_subject"]
    fold.info["metrics"] = evaluate(gt[gt["subject"].astype(str) == test], fold.predictions)
    write_predictions(fold.predictions, folder / "predictions.csv")
    for name, content in fold.files.items():
        write_json(folder / name, content)
    write_json(folder / FOLD_DONE, fold.info)  # written last: marks the fold finished


def run_folds(runner: FoldRunner, splits: list[Split], folder: Path, gt: pd.DataFrame, parallel: bool = False,
              cpus_per_fold: int = 1, desc: str = "folds") -> None:
    """Run and save every split not finished in FOLDER/folds yet; as Ray tasks when `parallel`."""
    todo = [s for s in splits if not (folder / "folds" / s.test / FOLD_DONE).is_file()]
    if len(todo) < len(splits):
        log.info("%d of %d folds already finished: skipping them", len(splits) - len(todo), len(splits))
    if not parallel or len(todo) < 2:
        for split in tqdm(todo, desc=desc, unit="fold"):
            _save_fold(folder / "folds" / split.test, run_fold(runner, split), gt)
        return
    import ray

    with ray_folds(cpus_per_fold):
        remote = ray.remote(num_cpus=cpus_per_fold)(run_fold)
        runner_ref = ray.put(runner)
        pending = {remote.remote(runner_ref, split): split for split in todo}
        t0 = time.perf_counter()
        with tqdm(total=len(todo), desc=f"{desc} (ray)", unit="fold") as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=HEARTBEAT_S)
                if not done:  # a fold takes minutes: say the run is alive
                    log.info("%s: %d of %d finished, %.0f s", desc, bar.n, len(todo), time.perf_counter() - t0)
                    continue
                split = pending.pop(done[0])
                _save_fold(folder / "folds" / split.test, ray.get(done[0]), gt)
                bar.update(1)


@contextlib.contextmanager
def ray_folds(cpus_per_fold: int):
    """A local Ray for fold tasks (two at a time), or the one already running; shut down only if started here."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=max(1, cpus_per_fold * 2), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def evaluate_folds(runner: FoldRunner, subjects: list[str], gt: pd.DataFrame, folder, *, parallel: bool = False,
                   cpus_per_fold: int = 1, desc: str = "folds",
                   score: Callable[[pd.DataFrame, pd.DataFrame], dict] = evaluate_variants,
                   train_subjects: int | None = None) -> Result:
    """Every LOSO fold of `runner` (finished ones reused), pooled and scored; seconds = the folds' sum."""
    folder = Path(folder)
    run_folds(runner, loso_splits(subjects, train_subjects), folder, gt, parallel, cpus_per_fold, desc)
    folds = [folder / "folds" / s for s in subjects]
    pred = pd.concat([empty_intervals(with_score=True)] + [read_predictions(f / "predictions.csv") for f in folds],
                     ignore_index=True)
    seconds = sum(json.loads((f / FOLD_DONE).read_text()).get("seconds", 0.0) for f in folds)
    result = Result(pred, score(gt, pred), seconds)
    write_result(result, folder)
    return result


def write_result(result: Result, folder: Path, prefix: str = "") -> None:
    write_predictions(result.predictions, folder / f"{prefix}predictions.csv")
    write_json(folder / f"{prefix}metrics.json", result.metrics)


def baseline_result(cfg: BaselineConfig, videos: pd.DataFrame, gt: pd.DataFrame, folder, cache_dir,
                    prefix: str = "", workers: int = 1) -> Result:
    """The flow-only baseline on `videos` -> FOLDER/<prefix>{predictions.csv, metrics.json, run.json}; flow cached
    in CACHE_DIR. A finished run of the same config is reused, with the seconds it took."""
    folder = Path(folder)
    record, done = folder / f"{prefix}run.json", folder / f"{prefix}predictions.csv"
    config = json.loads(json.dumps(to_dict(cfg)))
    if record.is_file() and done.is_file() and json.loads(record.read_text()).get("config") == config:
        pred = read_predictions(done)
        return Result(pred, evaluate_variants(gt, pred), json.loads(record.read_text())["seconds"])
    t0 = time.perf_counter()
    pred = spot_dataset(cfg, videos, cache_dir, workers)
    result = Result(pred, evaluate_variants(gt, pred), time.perf_counter() - t0)
    write_result(result, folder, prefix)
    write_json(record, {"seconds": result.seconds, "config": config})  # written last: marks the run finished
    return result


# ---- the results table ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Row:
    label: str
    metrics: dict  # evaluate_variants(...) (+ "str_score"), or {"error": text} for a spotter that failed
    seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Row], str]
    of_failures: bool = False  # also filled for a failed row


def _f1(kind: str, variant: str = "megc") -> Callable[[Row], str]:
    return lambda row: f"{row.metrics[variant][kind]['f1']:.3f}"


COLUMNS = {
    "macro": Column("macro F1", _f1("macro")),
    "micro": Column("micro F1", _f1("micro")),
    "overall": Column("overall F1", _f1("overall")),
    "counts": Column("overall TP/FP/FN", lambda r: "{tp}/{fp}/{fn}".format(**r.metrics["megc"]["overall"])),
    "overall_softnet": Column("overall F1 (softnet)", _f1("overall", "softnet")),
    "strs": Column("STRS", lambda r: f"{r.metrics['str_score']['strs']:.3f}" if "str_score" in r.metrics else "-"),
    "seconds": Column("time (s)", lambda r: f"{r.seconds:.0f}", of_failures=True),
}


def _cells(row: Row, columns: list[Column]) -> list[str]:
    if "error" not in row.metrics:
        return [c.cell(row) for c in columns]
    return [f"failed: {row.metrics['error']}" if i == 0 else c.cell(row) if c.of_failures else ""
            for i, c in enumerate(columns)]


def results_table(rows: list[Row], columns: list[str], label: str = "method", style: str = "markdown",
                  label_width: int = 0) -> str:
    """One line per row under the COLUMNS named. markdown: a pipe table; text: the label left-aligned in
    `label_width` characters, the numbers right-aligned under their headers, the last column left-aligned after
    a wider gap (it holds counts of varying width)."""
    cols = [COLUMNS[name] for name in columns]
    table = [(r.label, _cells(r, cols)) for r in rows]
    if style == "markdown":
        def md(cells: list[str]) -> str:
            return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"

        lines = [md([label] + [c.header for c in cols]), "|" + "---|" * (len(cols) + 1)]
        return "\n".join(lines + [md([name] + cells) for name, cells in table])

    def line(name: str, cells: list[str]) -> str:
        numbers = [f"{cell:>{len(c.header)}}" for cell, c in zip(cells[:-1], cols)]
        return " ".join([f"{name:<{label_width}}"] + numbers) + "   " + cells[-1]

    head = line(label, [c.header for c in cols])
    return "\n".join([head, "-" * len(head)] + [line(name, cells) for name, cells in table])

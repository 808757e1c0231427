"""`python -m launch demo [--config FILE] [--out DIR] [key=value ...]`: the whole chain on synthetic data.

synthesize (skipped when the data exists) -> spot (the flow baseline today; pretrain/fine-tune slot in as
further steps) -> evaluate (every metric variant) -> timeline PNG -> print where everything is.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Literal

from data.atomic import write_json
from data.config import load_config, to_dict
from data.errors import ConfigError

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class DemoConfig:
    out_dir: str = "runs/demo"
    data_config: str = "configs/data/synthetic_demo.yaml"
    data_overrides: list[str] = dataclasses.field(default_factory=list)
    regenerate_data: bool = False  # rebuild OUT/data even when it exists (needed after changing the data config)
    spotter: Literal["baseline"] = "baseline"
    spotter_config: str = "configs/spotting/baseline.yaml"
    spotter_overrides: list[str] = dataclasses.field(default_factory=list)
    timeline_max_videos: int = 40


def resolve(path: str, field: str) -> Path:
    """A config path as given (relative to the working directory), else relative to the repository."""
    for candidate in (Path(path), REPO / path):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"file {path!r} not found", path="configs/launch/demo.yaml", field=field,
                      fix="run from the repository root or give an absolute path")


def make_data(cfg: DemoConfig, out: Path) -> Path:
    from data.synthetic import generate
    from data.synthetic_config import load_synthetic_config

    synth = load_synthetic_config(resolve(cfg.data_config, "data_config"), cfg.data_overrides)
    return Path(generate(synth, out / "data", force=cfg.regenerate_data))


def spot(cfg: DemoConfig, data_dir: Path, out: Path) -> Path:
    from spotting.baseline import BaselineConfig, run_baseline

    spotter = load_config(resolve(cfg.spotter_config, "spotter_config"), BaselineConfig, cfg.spotter_overrides)
    write_json(out / "spotter_config.json", to_dict(spotter))
    return run_baseline(spotter, data_dir, out)


def evaluate(data_dir: Path, predictions: Path, out: Path) -> dict:
    from spotting.baseline_cli import evaluate_all

    results = evaluate_all(data_dir / "intervals.csv", predictions)
    write_json(out / "metrics.json", results)
    return results


def plot(cfg: DemoConfig, data_dir: Path, predictions: Path, out: Path) -> Path:
    from data.tables import read_intervals, read_predictions, read_videos
    from spotting.plots import plot_timeline

    return plot_timeline(read_intervals(data_dir / "intervals.csv"), read_predictions(predictions),
                         read_videos(data_dir / "videos.csv"), out / "timeline.png", cfg.timeline_max_videos,
                         title=f"{cfg.spotter} on {data_dir}")


def run_demo(cfg: DemoConfig) -> dict:
    """Run every step; returns (and writes to OUT/summary.json) the paths, metrics and step times."""
    out = Path(cfg.out_dir)
    resolve(cfg.data_config, "data_config")  # fail before minutes of work, not after
    resolve(cfg.spotter_config, "spotter_config")
    times = {}

    def timed(name, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        times[name] = round(time.perf_counter() - start, 2)
        log.info("demo step %s: %.1f s", name, times[name])
        return result

    data_dir = timed("data", make_data, cfg, out)
    predictions = timed("spot", spot, cfg, data_dir, out)
    metrics = timed("evaluate", evaluate, data_dir, predictions, out)
    timeline = timed("plot", plot, cfg, data_dir, predictions, out)
    summary = {"data": str(data_dir), "predictions": str(predictions), "metrics": str(out / "metrics.json"),
               "timeline": str(timeline), "seconds": times, "f1": {k: v["f1"] for k, v in metrics["megc"].items()}}
    write_json(out / "summary.json", summary)
    return {**summary, "results": metrics}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m launch demo", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs/launch/demo.yaml"))
    ap.add_argument("--out", help="output folder (default: out_dir from the config)")
    ap.add_argument("overrides", nargs="*", help="key=value, e.g. 'data_overrides=[subjects=2]'")
    args = ap.parse_args(argv)
    overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out else [])
    cfg = load_config(args.config, DemoConfig, overrides)
    start = time.perf_counter()
    summary = run_demo(cfg)
    from spotting.metric import format_table

    print(format_table(summary["results"]["megc"], title=f"{cfg.spotter} spotter, metric variant megc"))
    print(f"data:        {summary['data']}")
    print(f"predictions: {summary['predictions']}")
    print(f"metrics:     {summary['metrics']} (variants: {', '.join(summary['results'])})")
    print(f"timeline:    {summary['timeline']}")
    print(f"steps (s):   {json.dumps(summary['seconds'])}; total {time.perf_counter() - start:.1f} s")
    return 0

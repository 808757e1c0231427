"""`python -m launch demo [--config FILE] [--out DIR] [key=value ...]`: the whole chain on synthetic data.

synthesize -> pack shards from those videos -> pretrain the LGI-Former (Ray Train, 2 CPU workers x DeepSpeed) ->
fine-tune spotting heads on the frozen encoder, leave-one-subject-out (each held-out subject is spotted by a
fold that never saw it; folds run as Ray tasks) -> evaluate every metric variant -> results table (flow-only
baseline vs SpotMAE) + timeline PNG + summary.json; then the final spotter on a real unlabelled video.
Every stage skips finished work, so a rerun takes seconds: the generator skips finished videos; shards go to
OUT/shards/<pack config digest> (finished shards are skipped); pretraining runs in OUT/pretrain/<recipe digest>
(model, data, optimizer: more steps resume that run, another recipe starts a new one) and is skipped when its
demo_result.json records the same config; LOSO keeps its folds in OUT/loso/<digest of its config + encoder
checkpoint>. `spotmae=false` runs the flow baseline alone (quick, no Ray).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from data.common.assets import carphone_video
from data.common.atomic import write_json, write_text
from data.common.config import Config, load_config, replace, setting, to_dict
from data.common.dataset import read_dataset
from data.common.errors import ConfigError, DataError
from data.common.ray_session import ray_session
from data.common.storage import shared_location
from data.common.tables import read_intervals, read_predictions, read_videos
from data.shards.pack import PackConfig, pack
from data.synthetic.config import load_synthetic_config
from data.synthetic.generate import generate
from pretrain.config import load_pretrain_config
from pretrain.trainer import check_inputs, fit
from spotting.baseline import BaselineConfig
from spotting.channels.encoder import cache_dirs
from spotting.evaluation import protocol
from spotting.evaluation.loso import LosoConfig, run_loso
from spotting.evaluation.plots import plot_timeline
from spotting.spot import spot

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class DemoConfig(Config):
    """Which config file each stage reads, and the user's key=value overrides of it (the demo sets the paths that
    wire the stages together itself: data folder, shards, encoder)."""
    out_dir: str = "runs/demo"
    data_config: str = "configs/data/synthetic_demo.yaml"
    data_overrides: list[str] = dataclasses.field(default_factory=list)  # e.g. [subjects=2, duration_s=15]
    regenerate_data: bool = False  # rebuild OUT/data even when it exists (needed after changing the data config)
    spotmae: bool = True  # pack + pretrain + LOSO fine-tuning; false: the flow baseline alone
    pretrain: bool = True  # pretrain on the demo's videos; false: the LOSO config's encoder (null = scratch)
    pack_config: str = "configs/data/pack_synthetic.yaml"
    pack_overrides: list[str] = dataclasses.field(default_factory=list)
    pretrain_config: str = "configs/pretrain/lgi_tiny.yaml"
    pretrain_overrides: list[str] = dataclasses.field(default_factory=list)
    loso_config: str = "configs/spotting/loso.yaml"
    loso_overrides: list[str] = dataclasses.field(default_factory=list)
    baseline_config: str = "configs/spotting/baseline.yaml"  # the flow-only baseline (also LOSO's flow cues)
    baseline_overrides: list[str] = dataclasses.field(default_factory=list)
    spot_new_video: bool = True  # run the final spotter on the real carphone video (no labels)
    timeline_max_videos: int = setting(40, ge=1)


def resolve(path: str, field: str) -> Path:
    """A config path as given (relative to the working directory), else relative to the repository."""
    for candidate in (Path(path), REPO / path):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"file {path!r} not found", path="configs/launch/demo.yaml", field=field,
                      fix="run from the repository root or give an absolute path")


def fingerprint(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


# ---- stages ----------------------------------------------------------------------------------------------

def make_data(cfg: DemoConfig, out: Path) -> Path:
    synth = load_synthetic_config(resolve(cfg.data_config, "data_config"), cfg.data_overrides)
    return Path(generate(synth, out / "data", force=cfg.regenerate_data))


def baseline_config(cfg: DemoConfig):
    return load_config(resolve(cfg.baseline_config, "baseline_config"), BaselineConfig, cfg.baseline_overrides)


def run_flow_baseline(cfg: DemoConfig, data_dir: Path, out: Path) -> tuple[Path, dict]:
    """The flow baseline alone (spotmae=false): predictions + metrics in every variant, in OUT/baseline."""
    baseline = baseline_config(cfg)
    write_json(out / "baseline_config.json", to_dict(baseline))
    videos, gt = read_dataset(data_dir)
    folder = out / "baseline"
    result = protocol.baseline_result(baseline, videos, gt, folder, folder / "curves", workers=baseline.workers)
    return folder / "predictions.csv", result.metrics


def encoder_cache(out: Path) -> Path:
    """Where LOSO's encoder channels keep their stabilised streams and features; packing stabilised shards fills
    the same stream cache, so each demo video is stabilised once."""
    return out / "encoder_input"


def pack_shards(cfg: DemoConfig, data_dir: Path, out: Path) -> Path:
    """Pretraining shards cut from the demo's own videos (the video table is the source list)."""

    path = resolve(cfg.pack_config, "pack_config")
    pack_cfg = load_config(path, PackConfig, cfg.pack_overrides)
    streams = cache_dirs(encoder_cache(out), pack_cfg.stabilisation)[0]
    pack_cfg = replace(pack_cfg, {"source": "list", "source_path": str(data_dir / "videos.csv"),
                                  "stabilise_cache": str(streams)})
    # shards are immutable: another pack config gets its own folder instead of an error
    tag = fingerprint({k: v for k, v in to_dict(pack_cfg).items() if k not in ("workers", "out_dir")})
    return pack(dataclasses.replace(pack_cfg, out_dir=str(out / "shards" / tag)))


@contextlib.contextmanager
def local_ray():
    """One local Ray for pretraining and the LOSO folds; shut down only if this call started it."""
    # DeepSpeed JIT-builds its comm op once per environment: workers inherit this and reuse the venv's cache
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    with ray_session():
        yield


def pretrain(cfg: DemoConfig, shards: Path, out: Path) -> dict:
    """Pretrain (or resume, or skip when finished with the same config); returns the run record."""

    path = resolve(cfg.pretrain_config, "pretrain_config")
    pre = replace(load_pretrain_config(path, cfg.pretrain_overrides), {"data.shards": str(shards)})
    # One run folder per model/data/recipe: more steps resume the run (Ray: same storage + name), while
    # another model or data starts a new one instead of resuming from weights that do not fit.
    recipe = {k: v for k, v in to_dict(pre).items() if k not in ("schedule", "checkpoint")}
    pre = replace(pre, {"checkpoint.storage_path": str(out / "pretrain" / fingerprint(recipe))})
    config = json.loads(json.dumps(to_dict(pre)))
    run_dir = Path(pre.checkpoint.storage_path) / pre.checkpoint.name
    record_path = run_dir / "demo_result.json"
    if record_path.is_file() and json.loads(record_path.read_text()).get("config") == config:
        log.info("pretraining already finished in %s: keeping it", run_dir)
        return json.loads(record_path.read_text())
    check_inputs(pre)
    result = fit(pre)
    if result.checkpoint is None:
        raise DataError("pretraining finished without a checkpoint", path=run_dir, field="checkpoint.every_steps",
                        fix="make checkpoint.every_steps <= schedule.total_steps")
    record = {"run": str(run_dir), "checkpoint": str(result.checkpoint.path), "model": pre.model.name,
              "input": pre.model.input, "target": pre.model.target, "steps": pre.schedule.total_steps,
              "metrics": result.metrics, "config": config}
    write_json(record_path, record)
    return record


def loso_settings(cfg: DemoConfig, data_dir: Path, out: Path, encoder: dict | None):
    """The LOSO config for the demo's data and encoder; its folder is named after everything that shapes it."""

    # The flow cues are the baseline's, so the table's baseline row and the fused cues are the same signal.
    wiring = {"finetune.data.root": str(data_dir), "baseline": baseline_config(cfg), "out": "",
              "encoder_cache": str(encoder_cache(out))}
    if encoder is not None:
        # the checkpoint carries its model config: the LOSO config's architecture name must not override it
        wiring |= {"finetune.model.encoder": encoder["run"], "finetune.model.name": None}
    loso = replace(load_config(resolve(cfg.loso_config, "loso_config"), LosoConfig, cfg.loso_overrides), wiring)
    tag = fingerprint(to_dict(loso), encoder and encoder["checkpoint"])
    return replace(loso, {"out": str(out / "loso" / tag)})


def fine_tune_loso(cfg: DemoConfig, data_dir: Path, out: Path, encoder: dict | None) -> Path:
    """LOSO fine-tuning + spotting of every held-out subject + both spotters' metrics; returns its folder."""

    loso = loso_settings(cfg, data_dir, out, encoder)
    write_json(out / "loso_config.json", to_dict(loso))
    run_loso(loso)
    return Path(loso.out)


def spot_new_video(loso_dir: Path) -> dict:
    """The final spotter (trained on every subject) on a real face video without labels."""

    video = Path(carphone_video())
    out = loso_dir / "spot"
    done = out / f"{video.stem}.json"
    if done.is_file():
        return json.loads(done.read_text())
    return spot(video, loso_dir / "model", out)


def plot(cfg: DemoConfig, data_dir: Path, predictions: Path, out: Path, title: str) -> Path:
    return plot_timeline(read_intervals(data_dir / "intervals.csv"), read_predictions(predictions),
                         read_videos(data_dir / "videos.csv"), out / "timeline.png", cfg.timeline_max_videos,
                         title=title)


# ---- the chain -------------------------------------------------------------------------------------------

def check_paths(cfg: DemoConfig) -> None:
    """Fail before minutes of work, not after."""
    needed = ["data_config", "baseline_config"]
    if cfg.spotmae:
        needed += ["loso_config"] + (["pack_config", "pretrain_config"] if cfg.pretrain else [])
    for field in needed:
        resolve(getattr(cfg, field), field)


def run_demo(cfg: DemoConfig) -> dict:
    """Run every stage; returns (and writes to OUT/summary.json) the paths, metrics and stage times."""
    out = Path(shared_location(cfg.out_dir, "out_dir"))  # Ray workers run in their own folders: absolute paths
    check_paths(cfg)
    times: dict[str, float] = {}

    def timed(name, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        times[name] = round(time.perf_counter() - start, 2)
        log.info("demo stage %s: %.1f s", name, times[name])
        return result

    data_dir = timed("data", make_data, cfg, out)
    summary: dict = {"data": str(data_dir)}
    if not cfg.spotmae:
        predictions, baseline = timed("baseline", run_flow_baseline, cfg, data_dir, out)
        metrics = {"baseline": baseline}
        summary["predictions"] = {"baseline": str(predictions)}
    else:
        encoder = None
        with local_ray():
            if cfg.pretrain:
                shards = timed("pack", pack_shards, cfg, data_dir, out)
                encoder = timed("pretrain", pretrain, cfg, shards, out)
                summary.update(shards=str(shards), pretrain={k: v for k, v in encoder.items() if k != "config"})
            loso_dir = timed("finetune_loso", fine_tune_loso, cfg, data_dir, out, encoder)
        metrics = {"baseline": json.loads((loso_dir / "baseline_metrics.json").read_text()),
                   "spotmae": json.loads((loso_dir / "metrics.json").read_text())}
        predictions = loso_dir / "predictions.csv"
        summary.update(loso=str(loso_dir), model=str(loso_dir / "model"), encoder_weights=encoder_weights(loso_dir),
                       predictions={"baseline": str(loso_dir / "baseline_predictions.csv"),
                                    "spotmae": str(predictions)})
        if cfg.spot_new_video:
            found = timed("spot_new_video", spot_new_video, loso_dir)
            summary["new_video"] = {"video": found["video"], "intervals": len(found["intervals"]),
                                    "timeline": str(loso_dir / "spot" / f"{Path(found['video']).stem}_timeline.png")}
    write_json(out / "metrics.json", metrics)
    name = "spotmae" if cfg.spotmae else "baseline"
    timeline = timed("plot", plot, cfg, data_dir, predictions, out, f"{name} spotter on {data_dir}")
    table = results_table(metrics, labels(summary))
    write_text(out / "results.txt", table + "\n")
    summary.update(metrics=str(out / "metrics.json"), timeline=str(timeline), seconds=times,
                   f1={s: {k: m["megc"][k]["f1"] for k in ("macro", "micro", "overall")} for s, m in metrics.items()})
    write_json(out / "summary.json", summary)
    return {**summary, "results": metrics, "table": table}


def encoder_weights(loso_dir: Path) -> list[float] | None:
    """The encoder detector's weight each fold chose (late fusion: the second group's), or None (one detector)."""
    weights = [json.loads(f.read_text())["detector"].get("weights") for f in sorted(loso_dir.glob("folds/*/fold.json"))]
    return [w[-1] for w in weights] if weights and all(w and len(w) > 1 for w in weights) else None


def labels(summary: dict) -> dict[str, str]:
    """Row labels that say what each spotter read, what its encoder saw in pretraining, and, with late fusion, the
    weight each fold gave the encoder's detector."""
    pre = summary.get("pretrain")
    encoder = (f"LGI pretrained {pre['steps']} steps on the {pre['input']} view, target {pre['target']}" if pre
               else "LGI from scratch")
    weights = summary.get("encoder_weights")
    if weights is None:
        return {"baseline": "flow baseline (no learning)", "spotmae": f"SpotMAE: detector on flow cues + {encoder}, LOSO"}
    return {"baseline": "flow baseline (no learning)",
            "spotmae": f"SpotMAE: late fusion of flow cues and {encoder} (encoder weight per fold "
                       f"{', '.join(f'{w:g}' for w in weights)}), LOSO"}


def results_table(metrics: dict, names: dict[str, str]) -> str:
    """One row per spotter: F1 per type and overall, plus the overall counts (metric variant megc)."""
    rows = [protocol.Row(names.get(name, name), result) for name, result in metrics.items()]
    width = max(len(r.label) for r in rows)
    return ("results, metric variant megc (IoU >= 0.5, one-to-one, FPs in every video)\n"
            + protocol.results_table(rows, ["macro", "micro", "overall", "counts"], label="spotter", style="text",
                                     label_width=width))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m launch demo", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs/launch/demo.yaml"))
    ap.add_argument("--out", help="output folder (default: out_dir from the config)")
    ap.add_argument("overrides", nargs="*", help="key=value, e.g. 'data_overrides=[subjects=2]' spotmae=false")
    args = ap.parse_args(argv)
    overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out else [])
    cfg = load_config(args.config, DemoConfig, overrides)
    start = time.perf_counter()
    summary = run_demo(cfg)
    print(summary["table"])
    print(f"data:        {summary['data']}")
    if "loso" in summary:
        print(f"fine-tuning: {summary['loso']} (final spotter: {summary['model']})")
    if "pretrain" in summary:
        m = summary["pretrain"]["metrics"]
        print(f"pretraining: {summary['pretrain']['run']} (loss {m.get('loss', float('nan')):.4f} against its "
              f"floor {m.get('floor', float('nan')):.4f}, the best constant prediction of the masked targets)")
    print(f"metrics:     {summary['metrics']} (variants: {', '.join(next(iter(summary['results'].values())))})")
    print(f"timeline:    {summary['timeline']}")
    if "new_video" in summary:
        print(f"new video:   {summary['new_video']['intervals']} intervals, {summary['new_video']['timeline']}")
    print(f"stages (s):  {json.dumps(summary['seconds'])}; total {time.perf_counter() - start:.1f} s")
    return 0

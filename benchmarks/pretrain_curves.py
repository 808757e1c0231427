"""Does pretraining help? The loss curve against its trivial floor, and the frozen-feature probe against steps.

    python benchmarks/pretrain_curves.py --run runs/pretrain/lgi_tiny_motion --out runs/pretrain_curves \
        [--steps 1500,3000,6000,12000] [--seeds 0,1,2] [key=value ...]   # LOSO overrides for the probe

- OUT/loss.png: the training loss, its trivial floor (the best constant prediction of the masked targets,
  logged by the run as pretrain/floor) and their ratio, per logged step (TensorBoard events of the run).
- OUT/probe.jsonl: one row per encoder: random inits (finetune.train.seed = each of --seeds) and the run's
  checkpoint at each of --steps, probed as benchmarks/encoder_probe.py --input stabilised does (held-out
  subjects, pooled frame AUC per type). Rows already in the file are kept (rerun = resume).
- OUT/probe_vs_steps.png: those AUCs against steps, the random inits' mean +- spread at step 0.
- OUT/results.json: the results JSON `python -m launch release --results` puts in the model card (the loss and
  its floor over the last tenth of the run, the probe rows); benchmarks/label_efficiency.py --results adds its
  rows to it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.encoder_probe import stabilised_probe  # noqa: E402
from data.common.atomic import atomic_path, write_json  # noqa: E402
from data.common.config import load_config, replace  # noqa: E402
from data.common.tables import TYPES  # noqa: E402
from pretrain.checkpoint_commit import step_of  # noqa: E402
from spotting.evaluation.loso import LosoConfig  # noqa: E402


def scalars(run: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    points = sorted((e.step, e.value) for e in events.Scalars(name))
    return np.array([s for s, _ in points]), np.array([v for _, v in points])


def plot_loss(run: Path, png: Path) -> dict:
    import matplotlib.pyplot as plt

    steps, loss = scalars(run, "pretrain/loss")
    _, floor = scalars(run, "pretrain/floor")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    top.plot(steps, loss, label="loss (masked tokens)")
    top.plot(steps, floor, label="trivial floor (best constant)", alpha=0.7)
    top.set_ylabel("MSE")
    top.set_yscale("log")
    top.legend()
    ratio = loss / floor
    bottom.plot(steps, ratio, color="C2")
    bottom.axhline(1.0, color="grey", lw=0.8, ls="--")
    bottom.set_ylim(max(0.0, float(ratio.min()) - 0.05), 1.2)  # the first steps (far above 1) are off the top
    bottom.set_ylabel("loss / floor")
    bottom.set_xlabel("optimizer step")
    fig.suptitle(run.name)
    fig.tight_layout()
    with atomic_path(png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    last = slice(-max(1, len(steps) // 10), None)  # the last tenth of the logged steps
    return {"steps": int(steps[-1]), "loss": float(loss[last].mean()), "floor": float(floor[last].mean()),
            "loss/floor": float(ratio[last].mean())}


def read_rows(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    return {row["encoder"]: row for row in map(json.loads, path.read_text().splitlines()) if row}


def checkpoints(run: Path) -> dict[int, Path]:
    """The run's checkpoint folders by step (pretrain.checkpoint_commit.step_of reads their names)."""
    return {step_of(p.name): p for p in run.glob("checkpoint_*") if step_of(p.name) >= 0}


def probe_rows(cfg, run: Path, out: Path, steps: list[int], seeds: list[int]) -> dict[str, dict]:
    path = out / "probe.jsonl"
    rows = read_rows(path)
    found = checkpoints(run)
    missing = sorted(set(steps) - set(found))
    if missing:
        raise SystemExit(f"error: {run} has no checkpoint of step(s) {missing}; it has {sorted(found)}")
    todo = [(f"random seed {s}", None, s, 0) for s in seeds]
    todo += [(f"step {k}", found[k], 0, k) for k in steps]
    for label, checkpoint, seed, step in todo:
        if label in rows:
            continue
        seeded = replace(cfg, {"finetune.train.seed": seed})
        row = stabilised_probe(seeded, out / "cache", label, None if checkpoint is None else str(checkpoint))
        rows[label] = {**row, "step": step}
        with open(path, "a") as f:  # one line per finished probe: a killed run keeps what it measured
            f.write(json.dumps(rows[label]) + "\n")
    return rows


def plot_probe(rows: dict[str, dict], png: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, kind in enumerate(TYPES):
        key = f"encoder.{kind}"
        random = [r[key] for r in rows.values() if r["step"] == 0]
        trained = sorted((r["step"], r[key]) for r in rows.values() if r["step"] > 0)
        if random:
            ax.errorbar([0], [np.mean(random)], yerr=[np.std(random)], fmt="o", color=f"C{i}", capsize=4)
        ax.plot([0] + [s for s, _ in trained], [np.mean(random) if random else np.nan] + [v for _, v in trained],
                "-o", color=f"C{i}", label=kind)
    ax.set_xlabel("pretraining step (0: random init, mean +- sd over seeds)")
    ax.set_ylabel("held-out frame ROC AUC")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def release_results(summary: dict) -> dict:
    """The model card's facts: loss and floor (means over the last tenth of the run: one report is a few
    batches, too noisy to quote), one probe row per encoder."""
    loss = summary["loss"]
    probe = [{"encoder": r["encoder"], "step": r["step"], "macro AUC": r["encoder.macro"],
              "micro AUC": r["encoder.micro"]} for r in sorted(summary["probe"], key=lambda r: r["step"])]
    return {"metrics": {"step": loss["steps"]},
            "pretraining": {"steps": loss["steps"], "final_loss": round(loss["loss"], 5),
                            "loss_window": "mean over the last tenth of the logged steps",
                            "floor": round(loss["floor"], 5), "probe": probe}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the pretraining run folder (storage_path/name)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", default="configs/spotting/loso.yaml", help="the LOSO config the probe uses")
    parser.add_argument("--steps", default="", help="checkpoint steps to probe, comma-separated (default: all)")
    parser.add_argument("--seeds", default="0,1,2", help="random-init seeds for the reference rows")
    parser.add_argument("overrides", nargs="*", help="LOSO config overrides (e.g. finetune.data.root=...)")
    args = parser.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = [int(s) for s in args.steps.split(",")] if args.steps else sorted(checkpoints(run))
    summary = {"loss": plot_loss(run, out / "loss.png")}
    cfg = load_config(args.config, LosoConfig, args.overrides)
    rows = probe_rows(cfg, run, out, steps, [int(s) for s in args.seeds.split(",")])
    plot_probe(rows, out / "probe_vs_steps.png", f"frozen-feature probe, {run.name}")
    summary["probe"] = list(rows.values())
    write_json(out / "results.json", release_results(summary))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

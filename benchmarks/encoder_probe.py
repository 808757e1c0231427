"""How much do frozen encoder features say about expressions? A leave-one-subject-out probe, per encoder.

    python benchmarks/encoder_probe.py --config runs/demo/loso_config.json --out runs/probe \
        --encoder scratch --encoder pretrained40=runs/demo/pretrain/<digest>/lgi_tiny [--encoder NAME=PATH ...] \
        [--input stabilised]

For every encoder: frozen window features (cached in OUT/features), then per held-out subject the LOSO spotting
heads are trained on the other subjects and score the held-out subject's frames. The measure is the frame-level
ROC AUC of each presence curve against the ground truth, pooled over the held-out frames of every fold (0.5 =
chance). F1 after peak picking moves by whole events on a small benchmark; AUC shows smaller differences. The flow
cue of each type (no learning) is the reference row. One JSON line per encoder, then a table.

`--input stabilised` probes the detector's encoder channels instead (spotting.channels.encoder: the stabilised,
lighting-normalised face, temporal contrast, region pooling, per-video standardisation): per held-out subject and
type, a class-balanced ridge logistic regression on the leading PROBE_COMPONENTS principal components of the other
subjects' frames (spotting.logistic.fit_logistic), scored by the same pooled AUC.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.common.config import load_config, replace  # noqa: E402
from data.common.tables import TYPES  # noqa: E402
from finetune.encoder.tuning import roc_auc  # noqa: E402
from spotting.channels.vocabulary import CUES, ENCODER, HEADS, Channel, VideoFeatures  # noqa: E402
from spotting.detector.inputs import principal_directions  # noqa: E402
from spotting.evaluation.loso import LosoConfig, features_for, inner_scores, prepare  # noqa: E402
from spotting.evaluation.protocol import loso_splits  # noqa: E402
from spotting.logistic import fit_logistic  # noqa: E402

PROBE_COMPONENTS = 128  # of 2,560 pooled lgi_tiny features (256 tried: 0.846 / 0.631, lower)


def pooled_auc(items: list[VideoFeatures], labels: dict[str, np.ndarray], channel: Channel) -> float:
    """AUC of one channel against the presence labels of its type, over the frames of every video."""
    score = np.concatenate([it.curves[channel] for it in items])
    label = np.concatenate([labels[it.video][:, TYPES.index(channel.type)] for it in items])
    return round(roc_auc(score, label), 4)


def probe(cfg, out: Path, label: str, encoder: str | None) -> dict:
    cfg = replace(cfg, {"parallel": False, "reader": "detector", "channels": ["cues", "flow", "heads"], "detector.groups": [],
                        "finetune.feature_cache": str(out / "features"), "finetune.model.encoder": encoder})
    shared = prepare(cfg, out)
    # LOSO's inner cross-fitting over every subject: each video scored by heads trained without its subject
    videos, curves, _ = inner_scores(cfg, shared, sorted(map(str, shared.videos["subject"].unique())), "cross")
    items = features_for(shared, videos, curves)
    row = {"encoder": label, "path": encoder}
    for g in cfg.finetune.granularities:
        for kind in TYPES:
            row[f"{g.name}.{kind}"] = pooled_auc(items, shared.labels, Channel(HEADS, kind, g.name, "present"))
    for kind in TYPES:
        row[f"cue.{kind}"] = pooled_auc(items, shared.labels, Channel(CUES, kind, "all", "motion"))
    return row


def stabilised_probe(cfg, out: Path, label: str, encoder: str | None) -> dict:
    cfg = replace(cfg, {"parallel": False, "channels": ["encoder"], "detector.groups": [],
                        "finetune.model.encoder": encoder})
    shared = prepare(cfg, out)
    items = features_for(shared, [str(v) for v in shared.videos["video"]], None)
    channels = items[0].all_channels((ENCODER,))
    x = {it.video: it.matrix(channels).astype(np.float32) for it in items}
    scores: dict[str, list[np.ndarray]] = {kind: [] for kind in TYPES}
    truth: dict[str, list[np.ndarray]] = {kind: [] for kind in TYPES}
    for split in loso_splits(sorted({it.subject for it in items})):
        train = [it.video for it in items if it.subject != split.test]
        test = [it.video for it in items if it.subject == split.test]
        basis = principal_directions(np.concatenate([x[v] for v in train]).T, PROBE_COMPONENTS)
        xt = np.concatenate([x[v] for v in train]) @ basis.T
        mu, sd = xt.mean(0), xt.std(0) + 1e-6
        for t, kind in enumerate(TYPES):
            y = np.concatenate([shared.labels[v][:, t] for v in train]) > 0.5
            w, b = fit_logistic((xt - mu) / sd, y.astype(np.float64), l2=1.0)
            for v in test:
                scores[kind].append(((x[v] @ basis.T - mu) / sd) @ w + b)
                truth[kind].append(shared.labels[v][:, t])
    row = {"encoder": label, "path": encoder, "input": "stabilised"}
    for kind in TYPES:
        row[f"encoder.{kind}"] = round(roc_auc(np.concatenate(scores[kind]), np.concatenate(truth[kind])), 4)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a LOSO config (YAML or the JSON a demo run wrote)")
    parser.add_argument("--out", required=True, help="folder for cached cues and features")
    parser.add_argument("--encoder", action="append", required=True,
                        help="NAME alone (random init, finetune.train.seed) or NAME=PATH (pretraining run folder or "
                             "exported encoder)")
    parser.add_argument("--input", choices=("raw", "stabilised"), default="raw",
                        help="raw: the spotting heads on the aligned crops; stabilised: the encoder channels")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the LOSO config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    cfg = load_config(args.config, LosoConfig, args.overrides)
    out = Path(args.out)
    rows = []
    for spec in args.encoder:
        label, _, path = spec.partition("=")
        run = stabilised_probe if args.input == "stabilised" else probe
        row = run(cfg, out, label, path or None)  # NAME alone: a random init (finetune.train.seed)
        print(json.dumps(row), flush=True)
        rows.append(row)
    keys = [k for k in rows[0] if k not in ("encoder", "path", "input")]
    print("\nframe-level ROC AUC of held-out presence curves (0.5 = chance)")
    print(f"{'encoder':<16}" + "".join(f"{k:>14}" for k in keys))
    for row in rows:
        print(f"{row['encoder']:<16}" + "".join(f"{row.get(k, float('nan')):>14.3f}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The spotting ablation: the same LOSO folds with and without pretraining, model scores and flow cues.

    python benchmarks/ablation.py --config configs/spotting/loso.yaml --out runs/ablation \
        --encoder runs/demo/pretrain/<digest>/lgi_tiny [--variants a,b,...] [key=value ...]

Variants (each one spotting.evaluation.loso run in OUT/<variant>, the protocol's finished folds skipped on a rerun):
  logistic_cues                the per-frame logistic reader of the flow cues, peaks, fitted widths (the
                               reader before the detector)
  detector_cues                the temporal detector on the flow cues and region pair motion (no encoder)
  detector_encoder_scratch     the detector on pooled features of a randomly initialised encoder looking at the
                               stabilised face (spotting.channels.encoder), no flow
  detector_encoder_pretrained  the same with the pretrained encoder (--encoder)
  detector_full                the detector on flow cues + encoder features of the scratch encoder
  detector_full_pretrained     the same with the pretrained encoder (--encoder)
  detector_encoder_tuned       detector_encoder_scratch with the encoder fine-tuned inside every fold
                               (encoder_tuning.mode=partial: spotting.channels.tuned)
  detector_full_tuned          detector_full with the encoder fine-tuned inside every fold
  detector_heads               the detector on flow cues + the spotting heads' curves (frozen encoder, raw crops)
  late_fusion                  a detector on the flow cues and one on the scratch encoder's features, their
                               scores mixed with a weight chosen on the inner folds (detector.groups)
  late_fusion_pretrained       the same with the pretrained encoder (--encoder)
The flow-only baseline (no learning) is scored on the same videos by every run. Flow cues are computed once and
shared through OUT/shared (they hold no labels), heads' features once per encoder in OUT/features, and the encoder
channels' inputs (stabilised streams, features, tuned encoders) in OUT/encoder_input unless encoder_cache= says.
Writes OUT/ablation.json and OUT/ablation.md (the README table) over every variant finished in OUT, and prints it,
with each run's same-type copies (predictions that overlap a better one of their type by IoU >= 0.5:
spotting.intervals.count_copies). `--variants ""` only rebuilds the table from the runs already in OUT.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.common.atomic import write_json, write_text  # noqa: E402
from data.common.config import load_config, replace  # noqa: E402
from data.common.tables import read_predictions  # noqa: E402
from spotting.evaluation import protocol  # noqa: E402
from spotting.evaluation.loso import LosoConfig, run_loso  # noqa: E402
from spotting.intervals import count_copies  # noqa: E402

LATE = [["cues", "flow"], ["encoder"]]  # late fusion's two detectors: the cues', the encoder's
EARLY = {"detector.groups": []}  # one detector on every set read (configs/spotting/loso.yaml fuses late)
# name: (table label, changes to the LOSO config)
VARIANTS = {
    "logistic_cues": ("logistic reader of flow cues", {"reader": "logistic", "channels": ["cues"], **EARLY}),
    "detector_cues": ("detector on flow cues only", {"channels": ["cues", "flow"], **EARLY}),
    "detector_encoder_scratch": ("detector on encoder features only, scratch", {
        "finetune.model.encoder": None, "channels": ["encoder"], **EARLY}),
    "detector_encoder_pretrained": ("detector on encoder features only, pretrained", {"channels": ["encoder"], **EARLY}),
    "detector_full": ("detector on flow cues + encoder features (early fusion)", {"finetune.model.encoder": None, **EARLY}),
    "detector_full_pretrained": ("early fusion, pretrained encoder", {**EARLY}),
    "detector_encoder_tuned": ("detector on encoder features only, encoder tuned per fold (scratch)", {
        "finetune.model.encoder": None, "channels": ["encoder"], "encoder_tuning.mode": "partial", **EARLY}),
    "detector_full_tuned": ("early fusion, encoder tuned per fold (scratch)", {
        "finetune.model.encoder": None, "encoder_tuning.mode": "partial", **EARLY}),
    "detector_heads": ("detector on flow cues + spotting heads' curves", {"channels": ["cues", "flow", "heads"], **EARLY}),
    "late_fusion": ("late fusion: cues detector + encoder detector, weight chosen on inner folds (scratch)", {
        "finetune.model.encoder": None, "detector.groups": LATE}),
    "late_fusion_pretrained": ("late fusion, pretrained encoder", {"detector.groups": LATE}),
}
SHARED = ("cues", "faces")  # label-free caches every run may reuse


def copy_caches(src: Path, dst: Path) -> None:
    """Copy the flow caches `dst` lacks from `src` (copies, not links: a run may add files)."""
    for name in SHARED:
        if (src / name).is_dir() and not (dst / name).exists():
            shutil.copytree(src / name, dst / name)


def run_variant(args, name: str) -> dict:
    out = Path(args.out)
    run = out / name
    copy_caches(out / "shared", run)
    encoder = {"finetune.model.encoder": args.encoder} if args.encoder else {}
    cfg = replace(load_config(args.config, LosoConfig, args.overrides),
                  {**encoder, **VARIANTS[name][1], "out": str(run.resolve()), "final_model": False,
                   "finetune.feature_cache": str((out / "features").resolve())})
    if cfg.encoder_cache is None:  # stabilised streams, encoder features and tuned encoders: shared by variants
        cfg = replace(cfg, {"encoder_cache": str((out / "encoder_input").resolve())})
    result = run_loso(cfg)
    copy_caches(run, out / "shared")
    return result


def finished(out: Path) -> dict:
    """Results of every variant finished in OUT so far (a run may add variants to an earlier one), in table order."""
    results = {}
    for name in VARIANTS:
        run = out / name
        if (run / "metrics.json").is_file() and (run / "baseline_metrics.json").is_file():
            results[name] = {"spotter": json.loads((run / "metrics.json").read_text()),
                             "baseline": json.loads((run / "baseline_metrics.json").read_text()),
                             "config": json.loads((run / "config.json").read_text()),
                             "same_type_copies": {role: count_copies(read_predictions(run / f"{prefix}predictions.csv"))
                                                  for role, prefix in (("spotter", ""), ("baseline", "baseline_"))}}
    return results


def table(results: dict) -> str:
    """The README table: the flow-only baseline (the same in every run), then each finished variant."""
    first = next(iter(results.values()))
    rows = [protocol.Row("flow-only baseline (no learning)", first["baseline"])]
    rows += [protocol.Row(VARIANTS[name][0], r["spotter"]) for name, r in results.items()]
    copies = "; ".join(f"{name} {r['same_type_copies']['spotter']}" for name, r in results.items())
    return (protocol.results_table(rows, ["macro", "micro", "overall", "counts"], label="variant") + "\n\n"
            f"Same-type copies (IoU >= 0.5) in the pooled predictions: baseline "
            f"{first['same_type_copies']['baseline']}; {copies}.\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/spotting/loso.yaml", help="the LOSO config")
    parser.add_argument("--out", required=True)
    parser.add_argument("--encoder", help="pretrained encoder (Ray run folder, checkpoint or exported folder)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, from {','.join(VARIANTS)} (default: all)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the LOSO config")
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}: choose from {list(VARIANTS)}")
    if any("pretrained" in v for v in args.variants) and not args.encoder:
        parser.error("--encoder is needed for the pretrained variants")
    logging.basicConfig(level=logging.WARNING)

    for name in args.variants:
        run_variant(args, name)
    out = Path(args.out)
    results = finished(out)
    write_json(out / "ablation.json", results)
    text = table(results)
    write_text(out / "ablation.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

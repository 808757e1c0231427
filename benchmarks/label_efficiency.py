"""Label efficiency: the detector on encoder features only (`--systems encoder`) and the full system (`full`: late
fusion of a flow-cue detector and an encoder detector, configs/spotting/loso.yaml's), with 2, 3 and 5 training
subjects per fold, pretrained vs scratch encoder. Each
(system, k, encoder) is one benchmarks/ablation.py variant run with `train_subjects=k`
(spotting.evaluation.protocol.loso_splits: the k subjects after the held-out one), in OUT/train<k>.

    python benchmarks/label_efficiency.py --out runs/label_efficiency --encoder RUN_OR_CHECKPOINT \
        [--subjects 2,3,5] [--systems encoder,full] [key=value ...]   # LOSO overrides, e.g. finetune.data.root=...

Writes OUT/label_efficiency.json (rows: system, train subjects, scratch / pretrained macro, micro, overall F1, gain)
and OUT/label_efficiency.md, and prints the table; --results FILE adds the rows and each run's metrics to a release
results JSON (benchmarks/pretrain_curves.py writes one). Finished folds are reused on a rerun.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import ablation  # noqa: E402
from data.common.atomic import write_json, write_text  # noqa: E402
from launch.model_card import markdown_table  # noqa: E402

PAIRS = {"encoder": ("detector_encoder_scratch", "detector_encoder_pretrained"),
         "full": ("late_fusion", "late_fusion_pretrained")}


def f1(result: dict, kind: str, variant: str = "megc") -> float:
    return round(result["spotter"][variant][kind]["f1"], 4)


def rows_for(out: Path, subjects: list[int], systems: tuple[str, ...] = ("encoder",)) -> list[dict]:
    rows = []
    for system in systems:
        for k in subjects:
            rows.append(row_for(ablation.finished(out / f"train{k}"), system, k))
    return rows


def row_for(done: dict, system: str, k: int) -> dict:
    scratch, pretrained = (done[name] for name in PAIRS[system])
    row = {"train subjects": k}
    for name, result in (("scratch", scratch), ("pretrained", pretrained)):
        row.update({f"{name} {kind}": f1(result, kind) for kind in ("macro", "micro", "overall")})
    row["overall gain"] = round(row["pretrained overall"] - row["scratch overall"], 4)
    row["system"] = system
    return row


def markdown(rows: list[dict]) -> str:
    return "\n".join(markdown_table(rows)) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/spotting/loso.yaml")
    parser.add_argument("--out", required=True)
    parser.add_argument("--encoder", required=True, help="pretrained encoder (Ray run folder or checkpoint)")
    parser.add_argument("--subjects", default="2,3,5", help="training subjects per fold, comma-separated")
    parser.add_argument("--systems", default="encoder", help=f"comma-separated, of {list(PAIRS)}")
    parser.add_argument("--results", help="a release results JSON (benchmarks/pretrain_curves.py) to add the rows to")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    subjects = [int(k) for k in args.subjects.split(",")]
    systems = tuple(args.systems.split(","))
    variants = [name for system in systems for name in PAIRS[system]]
    out = Path(args.out)
    for k in subjects:
        ablation.main(["--config", args.config, "--out", str(out / f"train{k}"), "--encoder", args.encoder,
                       "--variants", ",".join(variants), *args.overrides, f"train_subjects={k}"])
    rows = rows_for(out, subjects, systems)
    write_json(out / "label_efficiency.json", rows)
    text = markdown(rows)
    write_text(out / "label_efficiency.md", text)
    if args.results:
        results = json.loads(Path(args.results).read_text())
        results.setdefault("pretraining", {})["label_efficiency"] = rows
        for system in systems:  # the runs themselves, for the card's spotting table
            for k in subjects:
                for name, label in zip(PAIRS[system], ("scratch", "pretrained")):
                    entry = f"{system}, {label}, {k} training subjects"
                    results.setdefault("ablation", {})[entry] = ablation.finished(out / f"train{k}")[name]["spotter"]
        write_json(args.results, results)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

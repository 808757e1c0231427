"""`python -m launch release --spotter DIR --out OUT [--push REPO_ID]`: a trained spotter as a Hub model repo.

OUT holds the spotter folder's files unchanged (finetune.store, spotting.spotter: spotter.json, encoder/,
heads.safetensors, the fitted reader, channels.json), so a snapshot of the repo in the local Hub cache is a spotter
folder: `python -m spotting spot VIDEO --model org/name` and `Spotter.from_pretrained("org/name")` read it as they
read DIR (data.common.hub). Beside them:

  README.md     the model card (launch.model_card.render_spotter): what it was trained on, its LOSO table in one
                metric variant next to the flow baseline, its channels and input, its limits
  release.json  the size and sha256 of every file (spotter.json records those of the spotter's own files too);
                written last, it marks the export finished

The card's facts come from DIR's spotter.json and channels.json and, when DIR is a LOSO run's <out>/model, from
that run (<out>/config.json: the dataset; <out>/metrics.json and baseline_metrics.json: the table; --results
names another metrics.json). The copy is built beside OUT, loaded back with spotting.spotter.load (every file
checked against its record), then renamed into place.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd

from data.common.atomic import read_json, write_json, write_text
from data.common.checksums import folder_record
from data.common.config import to_dict
from data.common.errors import DataError
from finetune import store
from launch import model_card
from launch.release_folder import MANIFEST, make_readable, partial_folder, replace_folder
from spotting import spotter as spotters
from spotting.evaluation.metric import VARIANTS

log = logging.getLogger(__name__)

CARD = "README.md"


def export(folder, out, repo_id: str | None = None, results=None, variant: str = "megc") -> Path:
    """The spotter in `folder` as a release folder `out` (see the module doc)."""
    folder = Path(folder)
    spotter = spotters.load(folder)  # refuses a damaged or incomplete folder before anything is written
    meta = store.read_manifest(folder)
    facts = gather_facts(folder, spotter, meta, repo_id, results, variant)
    names = sorted(meta["files"]) + [store.MANIFEST]
    out = Path(out).resolve()
    tmp = partial_folder(out)
    try:
        for name in names:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / name, tmp / name)
        write_text(tmp / CARD, model_card.render_spotter(facts))
        spotters.load(tmp)  # the copy is the spotter, file for file
        write_json(tmp / MANIFEST, {"kind": "spotter-folder", "source": str(folder), "reader": spotter.reader_name,
                                    "channels": list(spotter.sets), "files": folder_record(tmp, [*names, CARD])})
        make_readable(tmp)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported the spotter %s to %s", folder, out)
    return out


def gather_facts(folder: Path, spotter, meta: dict, repo_id: str | None, results, variant: str) -> dict:
    """Everything the spotter card states (launch.model_card.render_spotter)."""
    run = folder.parent  # `spotting loso` writes its spotter to <out>/model
    config = read_json(run / "config.json") if (run / "config.json").is_file() else {}
    metrics = Path(results) if results else run / "metrics.json"
    loso = None
    if results or metrics.is_file():
        loso = {"variant": variant, "spotter": read_metrics(metrics, variant, "--results")}
        baseline = run / "baseline_metrics.json"
        if not results and baseline.is_file():
            loso["baseline"] = read_metrics(baseline, variant, None)
    root = config.get("finetune", {}).get("data", {}).get("root")
    encoder = spotter.encoder.cfg
    return {"repo_id": repo_id, "source": str(folder), "reader": spotter.reader_name, "sets": list(spotter.sets),
            "subjects": meta.get("subjects"), "granularities": meta.get("granularities", []),
            "encoder": {"name": encoder.name, "input": encoder.input, "dim": encoder.dim, "depth": encoder.depth,
                        "frames": encoder.frames, "img_size": encoder.img_size,
                        "source": meta.get("encoder_source"), "tuned": meta.get("encoder_tuned", False)},
            "baseline": to_dict(spotter.baseline), "encoder_channels": to_dict(spotter.encoder_channels),
            "dataset": dataset_facts(root), "loso": loso, "loso_config": bool(config)}


def read_metrics(path: Path, variant: str, field: str | None) -> dict:
    """One variant's {macro, micro, overall} of a LOSO metrics.json (spotting.evaluation.protocol)."""
    raw = read_json(path, fix="pass the metrics.json a `spotting loso` run wrote")
    table = raw.get(variant) if isinstance(raw, dict) else None
    if not isinstance(table, dict) or not all(isinstance(table.get(k), dict) for k in ("macro", "micro", "overall")):
        raise DataError(f"no {{macro, micro, overall}} scores for metric variant {variant!r}", path=path,
                        field=field, fix=f"pass a LOSO metrics.json and one of its variants {list(VARIANTS)} "
                                         "(--variant)")
    return table


def dataset_facts(root) -> dict:
    """What the training data was: its folder, size, rate and, for the synthetic generator's, its identities."""
    if not root:
        return {}
    root = Path(root)
    facts = {"root": str(root), "name": root.name}
    if (root / "videos.csv").is_file():
        videos = pd.read_csv(root / "videos.csv")
        facts.update({"videos": len(videos), "subjects": int(videos["subject"].nunique()),
                      "fps": sorted({float(f) for f in videos["fps"]}),
                      "minutes": round(float((videos["num_frames"] / videos["fps"]).sum()) / 60, 2)})
    if (root / "config.yaml").is_file() and (root / "meta").is_dir():
        import yaml

        synth = yaml.safe_load((root / "config.yaml").read_text()) or {}
        facts["synthetic"] = {"identities": (synth.get("identity") or {}).get("sources", []),
                              "seed": synth.get("seed"), "duration_s": synth.get("duration_s")}
    elif (root / "prepare.json").is_file():
        facts["prepared"] = True
    return facts

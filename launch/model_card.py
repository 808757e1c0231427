"""The model card (README.md) of a released encoder: usage, config, pretraining facts, spotting results.

Everything in the card comes from a `facts` dict that launch/release.py assembles from the checkpoint, the
pretraining config / shard manifest and an optional results JSON; a fact that is unknown is said to be
unknown rather than left out, so a reader can tell "not measured" from "forgotten".
"""
from __future__ import annotations

import json
from pathlib import Path

from data.common.errors import DataError
from data.shards.format import read_manifest

ROW_KEYS_FIRST = ("encoder", "step", "train subjects")  # a results row's identifying columns, leftmost
TAGS = ["video", "facial-expression-spotting", "micro-expression", "videomae", "lgi-former", "spotmae"]


def render(facts: dict) -> str:
    """facts: kind, repo_id, config (dict), pretraining (dict), results (dict), source (str)."""
    parts = [_front_matter(), _title(facts), _usage(facts), _config_table(facts["config"], facts["kind"]),
             _pretraining(facts.get("pretraining") or {}), _spotting(facts.get("results") or {}), _notes(facts)]
    return "\n\n".join(p.rstrip() for p in parts if p) + "\n"


def read_results(path) -> dict:
    """The optional results JSON (format: launch/release.py module doc), checked for the fields the card uses."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read results JSON ({e})", path=path, fix="pass a JSON file to --results") from None
    if not isinstance(raw, dict):
        raise DataError("results JSON must be an object", path=path)
    for key in ("metrics", "pretraining", "ablation"):
        if key in raw and not isinstance(raw[key], dict):
            raise DataError(f"must be an object, got {type(raw[key]).__name__}", path=path, field=key)
    for name, metrics in raw.get("ablation", {}).items():
        table = metrics.get(raw.get("variant", "megc"), metrics) if isinstance(metrics, dict) else None
        if not isinstance(table, dict) or not isinstance(table.get("overall"), dict):
            raise DataError("needs {macro, micro, overall} scores (a spotting metrics.json)", path=path,
                            field=f"ablation.{name}", fix="copy the metrics.json of that run here")
    return raw


def data_summary(pretrain_cfg) -> dict:
    """Counts from the shard set's manifest (clips, shards, bytes, source videos) plus the clip geometry."""

    shards = pretrain_cfg.data.shards
    manifest = read_manifest(shards) if "://" not in shards else None
    summary = {"shards folder": Path(shards).name}
    if manifest:
        sources = manifest.get("sources", [])
        packed = manifest.get("config", {})
        summary.update({"clips": manifest.get("num_clips"), "shards": manifest.get("num_shards"),
                        "bytes": manifest.get("num_bytes"), "source videos": len(sources),
                        "source subjects": len({s.get("subject") for s in sources}),
                        "source list": Path(str(packed.get("source_path", "unknown"))).name,
                        "crop": packed.get("crop", "unknown")})
    m = pretrain_cfg.model
    strides = pretrain_cfg.data.frame_strides or [pretrain_cfg.data.frame_stride]
    summary["clip"] = f"{m.frames} frames at stride {'/'.join(map(str, strides))}, {m.img_size}x{m.img_size}"
    return summary


def _front_matter() -> str:
    tags = "\n".join(f"- {t}" for t in TAGS)
    return f"---\nlibrary_name: transformers\npipeline_tag: feature-extraction\ntags:\n{tags}\n---"


def _title(facts: dict) -> str:
    cfg = facts["config"]
    what = ("LGI-Former encoder with spotting heads for " + ", ".join(cfg["granularities"])
            if facts["kind"] == "spotter" else "LGI-Former video encoder, VideoMAE-pretrained on face clips")
    return (f"# SpotMAE {cfg['name']}: {what}\n\n"
            f"A local-global interaction transformer (LGI-Former) over {cfg['frames']} frames of "
            f"{cfg['img_size']}x{cfg['img_size']} aligned face crops, for spotting macro- and micro-expressions "
            f"in long videos. Trained with SpotMAE.")


def _usage(facts: dict) -> str:
    cfg = facts["config"]
    repo = facts.get("repo_id") or "PATH_TO_THIS_FOLDER"
    dims = f"{cfg['in_chans']}, {cfg['frames']}, {cfg['img_size']}, {cfg['img_size']}"
    shape = f"[batch, {dims}]"
    grid = cfg["frames"] // cfg["tubelet"], cfg["img_size"] // cfg["patch"], cfg["img_size"] // cfg["patch"]
    if facts["kind"] == "spotter":
        call = (f"out = model(video, granularity=\"{cfg['granularities'][0]}\")\n"
                f"out.logits  # [batch, {cfg['frames']}, {len(cfg['head_channels'])}]: "
                f"{', '.join(cfg['head_channels'])}")
    else:
        call = (f"out = model(video)\n"
                f"out.last_hidden_state  # [batch, {grid[0] * grid[1] * grid[2]}, {cfg['dim']}], tokens in "
                f"(time, row, column) order: reshape to [batch, {grid[0]}, {grid[1]}, {grid[2]}, {cfg['dim']}]")
    motion = cfg.get("input") == "motion"
    comment = "the motion view, see below" if motion else "RGB in [0, 1], then (x - mean) / std per channel"
    return (
        "## Usage\n\n"
        "```python\nimport torch\nfrom transformers import AutoModel\n\n"
        f"model = AutoModel.from_pretrained(\"{repo}\", trust_remote_code=True).eval()\n"
        f"video = torch.randn(1, {dims})  # {comment}\n"
        f"{call}\n```\n\n"
        f"Input: `pixel_values` {shape}, {_input_text(cfg)} The modelling code (`modeling_spotmae.py`, torch and "
        "transformers only) ships in this folder, hence `trust_remote_code=True`. Loading is strict: missing, "
        "unexpected or misshapen weights raise an error instead of being initialised at random.")


def _input_text(cfg: dict) -> str:
    if cfg.get("input") == "motion":
        return ("the motion view SpotMAE's spotter shows this encoder (pretrain/motion_input.py): the face "
                "stabilised per frame on a 30 Hz grid and lighting-normalised (grey, 0-255), then with the default "
                "settings each frame minus the window's first frame, times 1/16, the same in all 3 channels (the "
                "run's own settings: the `motion` section of its pretrain_config.json).")
    return f"RGB scaled to [0, 1] and normalised with mean {cfg['image_mean']} and std {cfg['image_std']}."


def _config_table(cfg: dict, kind: str) -> str:
    skip = {"auto_map", "architectures", "transformers_version", "dtype", "torch_dtype"}
    if kind != "spotter":  # head sizes are in config.json but describe nothing an encoder release holds
        skip |= {"granularities", "head_rows", "head_hidden", "head_kernel", "head_channels"}
    rows = [f"| `{key}` | `{json.dumps(cfg[key])}` |" for key in sorted(cfg) if key not in skip]
    return "## Config\n\n| field | value |\n|---|---|\n" + "\n".join(rows)


def _pretraining(pre: dict) -> str:
    data = pre.get("data") or {}
    lines = ["## Pretraining", ""]
    if data:
        lines.append("Data: " + ", ".join(f"{k} {_fmt(v)}" for k, v in data.items()) + ".")
    else:
        lines.append("Data: not recorded with this checkpoint (pass --pretrain-config to describe it).")
    window = pre.get("loss_window", "mean over the last reporting interval")
    lines.append(f"Optimizer steps: {_fmt(pre.get('steps', 'unknown'))}. Training loss at the released step "
                 f"(MSE on masked tokens, {window}): {_fmt(pre.get('final_loss', 'unknown'))}.")
    if pre.get("floor") is not None:
        lines.append(f"Trivial floor of that loss (the best constant prediction): {_fmt(pre['floor'])}.")
    if pre.get("recipe"):
        lines.append("Recipe: " + ", ".join(f"{k} {_fmt(v)}" for k, v in pre["recipe"].items()) + ".")
    for title, key in (("Frozen-feature probe", "probe"), ("Label efficiency", "label_efficiency")):
        lines += _rows_table(title, pre.get(key))
    if pre.get("source"):
        lines.append(f"Source checkpoint: `{pre['source']}`.")
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> list[str]:
    """Flat row dicts (same keys) as Markdown table lines, the identifying columns (ROW_KEYS_FIRST) leftmost."""
    first = [k for k in ROW_KEYS_FIRST if k in rows[0]]
    keys = first + [k for k in rows[0] if k not in first]  # JSON files may have sorted the keys
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return lines + ["| " + " | ".join(_fmt(r.get(k, "-")) for k in keys) + " |" for r in rows]


def _rows_table(title: str, rows) -> list[str]:
    """A results JSON's list of rows as a Markdown table under `title` (nothing when there are none)."""
    return ["", f"{title}:", ""] + markdown_table(rows) + [""] if rows else []


def _spotting(results: dict) -> str:
    ablation = results.get("ablation") or {}
    if not ablation:
        return "## Spotting results\n\nNo spotting evaluation was supplied with this release."
    variant = results.get("variant", "megc")
    lines = ["## Spotting results", "",
             f"F1 per expression type, metric variant `{variant}` (IoU >= 0.5, one-to-one matching, TP/FP/FN "
             f"summed over videos). {results.get('description', '')}".rstrip(), "",
             "| setting | macro F1 | micro F1 | overall F1 | overall P | overall R |", "|---|---|---|---|---|---|"]
    for name, metrics in ablation.items():
        table = metrics.get(variant, metrics)
        row = [table.get(k, {}) for k in ("macro", "micro", "overall")]
        lines.append(f"| {name} | {_f1(row[0])} | {_f1(row[1])} | {_f1(row[2])} | "
                     f"{_num(row[2].get('precision'))} | {_num(row[2].get('recall'))} |")
    return "\n".join(lines)


def _notes(facts: dict) -> str:
    return ("## Files\n\n`config.json` (every architecture value explicit, `auto_map` for the Auto classes), "
            "`model.safetensors` (weights), `modeling_spotmae.py` (code), `release.json` (provenance and a "
            f"checksum of the weights). Exported from `{facts.get('source', 'unknown')}`.")


def _f1(scores: dict) -> str:
    return _num(scores.get("f1"))


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)

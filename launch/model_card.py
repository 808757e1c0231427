"""The model cards (README.md) of releases: an encoder's (`render`: usage, input, config, pretraining facts,
spotting results) and a spotter's (`render_spotter`: usage, training data, LOSO table, channels and input, limits).

Everything in a card comes from a `facts` dict that launch/release.py (launch/spotter_release.py) assembles from
the checkpoint (spotter folder), the pretraining config / shard manifest (LOSO run) and an optional results JSON;
a fact that is unknown is said to be unknown rather than left out, so a reader can tell "not measured" from
"forgotten".
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
    dims = f"{cfg['frames']}, {cfg['in_chans']}, {cfg['img_size']}, {cfg['img_size']}"
    grid = cfg["frames"] // cfg["tubelet"], cfg["img_size"] // cfg["patch"], cfg["img_size"] // cfg["patch"]
    processor = facts.get("processor")
    lines = ["```python"]
    if processor:
        size = cfg["img_size"]
        frames = (f"grey_faces)  # stabilised, uint8 [N, {size}, {size}] on a {processor['rate_hz']:g} Hz grid"
                  if processor["input"] == "motion"
                  else f"face_crops, fps=30.0)  # aligned, uint8 [N, {size}, {size}, 3]")
        lines += ["from transformers import AutoModel, AutoProcessor", "",
                  f'processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)',
                  f'model = AutoModel.from_pretrained("{repo}", trust_remote_code=True).eval()',
                  f"inputs = processor({frames}", "# inputs.pixel_values: [windows, " + dims + "]"]
    else:
        lines += ["import torch", "from transformers import AutoModel", "",
                  f'model = AutoModel.from_pretrained("{repo}", trust_remote_code=True).eval()',
                  f'inputs = {{"pixel_values": torch.randn(1, {dims})}}  # see Input']
    if facts["kind"] == "spotter":
        lines += [f'out = model(**inputs, granularity="{cfg["granularities"][0]}")',
                  (f"out.logits  # [windows, {cfg['frames']}, {len(cfg['head_channels'])}]: "
                   f"{', '.join(cfg['head_channels'])}")]
    else:
        lines += ["out = model(**inputs)",
                  (f"out.last_hidden_state  # [windows, {grid[0] * grid[1] * grid[2]}, {cfg['dim']}]: tokens in "
                   f"(time, row, column) order, reshape to [windows, {grid[0]}, {grid[1]}, {grid[2]}, {cfg['dim']}]"),
                  (f"model(**inputs, output_hidden_states=True).hidden_states  # the embedding and each of the "
                   f"{cfg['depth']} blocks")]
    lines.append("```")
    text = (f"Input: `pixel_values` [batch, {dims}] (frames before channels, as transformers' VideoMAE takes them; "
            f"the [batch, channels, frames, ...] layout is refused), {_input_text(cfg, processor)} The modelling "
            "and processing code (`modeling_spotmae.py`, `processing_spotmae.py`: torch, numpy and transformers "
            "only) ships in this folder, hence `trust_remote_code=True`. Loading is strict: missing, unexpected or "
            "misshapen weights raise an error instead of being initialised at random.")
    if facts.get("no_processor"):
        text += f" No processor ships with this release: {facts['no_processor']}."
    return "## Usage\n\n" + "\n".join(lines) + "\n\n" + text


CONTRAST_TEXT = {"ref": "each frame minus the window's first frame", "mean": "each frame minus the window's mean",
                 "video": "each frame minus the video's median face", "diff": "each frame minus an earlier frame",
                 "running": "each frame minus a causal running mean of the frames before it",
                 "normal": "the normal flow against the window's first frame", "none": "the frames, centred"}


def _input_text(cfg: dict, processor: dict | None) -> str:
    if cfg.get("input") != "motion":
        return (f"RGB face crops scaled to [0, 1] and normalised with mean {cfg['image_mean']} and std "
                f"{cfg['image_std']}; the processor cuts a video's aligned crops into windows per granularity.")
    view = processor or {"lighting": "plane", "contrast": "ref", "gain": 1 / 16, "channels": "grey", "rate_hz": 30.0}
    channels = ("the same in all 3 channels" if view["channels"] == "grey"
                else "in 2 channels, the window's appearance in the third")
    return ("the motion view SpotMAE's spotter shows this encoder (data/faces/motion_view.py): the face stabilised "
            f"per frame on a {view['rate_hz']:g} Hz grid and lighting-normalised ({view['lighting']}; grey, 0-255), "
            f"then {CONTRAST_TEXT[view['contrast']]}, times {view['gain']:g}, {channels}; the processor makes it "
            "from the stabilised frames of a whole video, window by window.")


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


# ---------------------------------------------------------------- the spotter card

SPOTTER_TAGS = ["video", "facial-expression-spotting", "micro-expression", "temporal-action-localization", "spotmae"]
VARIANT_TEXT = {"megc": "MEGC: one-to-one matching per video, false positives counted in every video",
                "softnet": "SOFTNet's: videos without ground truth ignored", "strs": "the loose counting of "
                "community scripts (one prediction may match several ground truths; videos without ground truth "
                "ignored): it flatters long predictions"}


def render_spotter(facts: dict) -> str:
    """facts (launch.spotter_release.gather_facts): repo_id, source, reader, sets, subjects, granularities,
    encoder, baseline, encoder_channels, dataset, loso."""
    tags = "\n".join(f"- {t}" for t in SPOTTER_TAGS)
    parts = [f"---\nlibrary_name: spotmae\ntags:\n{tags}\n---", _spotter_title(facts), _spotter_usage(facts),
             _spotter_data(facts), _loso_table(facts.get("loso")), _spotter_channels(facts), _spotter_limits(facts),
             _spotter_files(facts)]
    return "\n\n".join(p.rstrip() for p in parts if p) + "\n"


def _spotter_title(facts: dict) -> str:
    return ("# SpotMAE spotter: macro- and micro-expression intervals in long face videos\n\n"
            f"A trained SpotMAE spotter: the `{facts['reader']}` reader on the channel sets "
            f"{', '.join(f'`{s}`' for s in facts['sets'])}. Give it a video with one face; it returns typed "
            "intervals (onset, apex, offset in frames, 0-based and inclusive; macro or micro; a score) and the "
            "per-frame curves behind them.")


def _spotter_usage(facts: dict) -> str:
    repo = facts.get("repo_id") or "ORG/NAME"
    return ("## Usage\n\n"
            f"With a SpotMAE checkout, after downloading this repository once (`hf download {repo}`; SpotMAE reads "
            "the local Hub cache and never downloads at run time):\n\n"
            f"```bash\nHF_HUB_OFFLINE=1 python -m spotting spot my_video.mp4 --model {repo} --out runs/spot\n```\n\n"
            "```python\nfrom spotting.api import Spotter\n\n"
            f"spotter = Spotter.from_pretrained(\"{repo}\")\n"
            "result = spotter.spot(\"my_video.mp4\")\n"
            "result.intervals  # DataFrame: onset, apex, offset, type, score\n"
            "result.curves     # DataFrame, one row per frame: the reader's score per type and every channel\n```\n\n"
            "Every file is checked against the sha256 recorded in `spotter.json` when the spotter loads.")


def _spotter_data(facts: dict) -> str:
    data = facts.get("dataset") or {}
    subjects = facts.get("subjects") or []
    lines = ["## Training data", ""]
    if not data:
        lines.append("Not recorded with this spotter (it is not the `model` folder of a `spotting loso` run).")
    else:
        size = ", ".join(f"{k} {_fmt(data[k])}" for k in ("videos", "subjects", "minutes") if k in data)
        lines.append(f"Dataset `{data['name']}`" + (f": {size}, at {', '.join(f'{f:g}' for f in data['fps'])} fps."
                                                     if size else "."))
        synth = data.get("synthetic")
        if synth:
            lines.append(f"Synthetic: SpotMAE's generator (data/synthetic: real face images warped by landmark-driven "
                         f"expression deformations, with blinks, head motion, talking and lighting drift as "
                         f"distractors; exact ground truth), identities from {', '.join(map(str, synth['identities']))}"
                         f", seed {synth['seed']}.")
        elif data.get("prepared"):
            lines.append("Prepared from a published dataset layout by `python -m data prepare` (see its prepare.json).")
    if subjects:
        lines.append(f"The final spotter learned from every subject: {', '.join(map(str, subjects))}.")
    return "\n".join(lines)


def _loso_table(loso: dict | None) -> str:
    if not loso:
        return "## LOSO evaluation\n\nNo leave-one-subject-out evaluation was supplied with this spotter."
    variant = loso["variant"]
    about = (f"Leave one subject out: each fold's reader (and its choices: training length, suppression, thresholds) "
             f"learned from the other subjects only; the final spotter above then learned from all of them. Metric "
             f"variant `{variant}` ({VARIANT_TEXT.get(variant, variant)}); a prediction is a true positive at IoU >= "
             f"0.5 with a ground truth of its type; TP/FP/FN summed over videos.")
    lines = ["## LOSO evaluation", "", about, "", "| system | type | TP | FP | FN | precision | recall | F1 |",
             "|---|---|---|---|---|---|---|---|"]
    for system, key in (("this spotter", "spotter"), ("flow-only baseline, same videos", "baseline")):
        for kind in ("macro", "micro", "overall") if key in loso else ():
            row = loso[key][kind]
            lines.append(f"| {system} | {kind} | {row.get('tp', '-')} | {row.get('fp', '-')} | {row.get('fn', '-')} | "
                         f"{_num(row.get('precision'))} | {_num(row.get('recall'))} | {_num(row.get('f1'))} |")
    return "\n".join(lines)


def _spotter_channels(facts: dict) -> str:
    enc, ec, base = facts["encoder"], facts["encoder_channels"], facts["baseline"]
    grans = ", ".join(f"{g['name']} ({g['span_s']:g} s windows every {g['hop_s']:g} s)" for g in facts["granularities"])
    lines = ["## Channels and input", "",
             ("Input: a video file (any size; frames with a short side above 540 px are decoded scaled down) or RGB "
              "frames in memory with their frame rate, showing one face. The video is decoded once and its face "
              "tracked once (dlib); every channel derives from those frames."), ""]
    about = {"cues": "the flow baseline's per-region scores of each type (optical flow between frames a fixed "
                     f"time apart, head motion removed; flow method `{base.get('method', '?')}`)",
             "flow": "the region motion of each frame pair behind those scores",
             "encoder": (f"pooled features of the {enc['name']} encoder (dim {enc['dim']}, depth {enc['depth']}, "
                         f"{enc['input']} input) on the face stabilised at "
                         f"{ec['stabilisation']['rate_hz']:g} Hz, lighting `{ec['view']['lighting']}`, contrast "
                         f"`{ec['view']['contrast']}`, pooled as `{ec['pool']}`, standardised per video"),
             "heads": f"the spotting heads' presence and apex probabilities per granularity: {grans}"}
    lines += [f"- `{s}`: {about.get(s, s)}" for s in facts["sets"]]
    tuned = " (fine-tuned inside SpotMAE on the training subjects)" if enc.get("tuned") else ""
    origin = f"`{enc['source']}`" if enc.get("source") else "a fresh initialisation (no pretraining)"
    size = f"{enc['frames']} frames of {enc['img_size']}x{enc['img_size']}"
    lines += ["", f"Encoder: `{enc['name']}`, {size}, from {origin}{tuned}."]
    return "\n".join(lines)


def _spotter_limits(facts: dict) -> str:
    data = facts.get("dataset") or {}
    lines = ["## Limits", ""]
    if data.get("synthetic"):
        lines.append("- **Trained on synthetic faces only.** Synthetic training data does not transfer to real faces: "
                     "real expressions change appearance (wrinkles, furrows, teeth) as well as shape, and real "
                     "talking, blinks and head motion differ from the generator's. Expect misses and false intervals "
                     "on real video; the LOSO numbers above measure held-out synthetic subjects, not real ones.")
    lines += [(f"- LOSO numbers are for held-out subjects of the same dataset ({data.get('subjects', 'unknown')} "
               "subjects); other cameras, frame rates, populations and recording conditions are not measured."),
              ("- One face per video: the main face is tracked; frames without a face borrow landmarks from the "
               "nearest frame with one."),
              ("- Intervals are suggestions for a human coder, not diagnoses; micro-expressions are the hard case "
               "(they move less than talking and blinks).")]
    return "\n".join(lines)


def _spotter_files(facts: dict) -> str:
    return ("## Files\n\n`spotter.json` (format, granularities, head sizes, provenance, and the size and sha256 of "
            "every file below), `encoder/` (config.json + model.safetensors), `heads.safetensors`, the fitted "
            "reader (`detector.json` + `detector_<i>.safetensors`, or `logistic.json`), `channels.json` (how the "
            "channels are made), `release.json` (the size and sha256 of every file here). Exported from "
            f"`{facts.get('source', 'unknown')}`.")

"""`python -m launch release --checkpoint SRC --out DIR [--push REPO_ID]`: an encoder release in transformers form;
`python -m launch release --spotter DIR --out DIR [--push REPO_ID]`: a trained spotter for the Hub
(launch.spotter_release: its files as `spotting spot --model` and `Spotter.from_pretrained` read them, with a card).

SRC is a pretraining run (Ray run folder, checkpoint_* folder, DeepSpeed folder), an encoder folder or
safetensors file (finetune.encoder.load), a trained spotter folder (finetune.store: encoder + heads), or with --peer
a MAE-DFER pretraining checkpoint (launch.peer_import). Each carries its model config (a peer file: in its shapes
and run arguments), so the architecture is never named here. DIR receives:

  config.json               SpotMAEConfig, every architecture value explicit, auto_map -> modeling_spotmae.py
  model.safetensors         weights (SpotMAEModel: encoder.*; SpotMAEForSpotting: encoder.* + heads.*)
  modeling_spotmae.py       the modelling code (torch + transformers only: loads without this project installed);
                            pixel_values [B, frames, channels, H, W] as VideoMAE's, BaseModelOutput
  preprocessor_config.json  the input the encoder was trained on, for AutoProcessor (launch.processor)
  processing_spotmae.py     the processor's code (torch, numpy and transformers only)
  README.md                 model card (launch.model_card)
  release.json              provenance + sha256 of the weights; written last, it marks the export finished

The folder is built beside DIR, loaded back with AutoModel / AutoProcessor (trust_remote_code=True) and checked
to compute what the training model computes (max |diff| <= 1e-6 on a probe clip) and to make exactly the
project's input from a probe stream, then renamed into place: DIR is either the old release or the new, checked
one. A finished DIR is kept (the push is retried) unless --force.

The push (huggingface_hub create_repo + upload_folder) reads the token from HF_TOKEN; the token is never
printed or written. A failed push is one error line and exit 2, with the export left complete in DIR.

Results JSON (--results, or SRC/results.json), every key optional:
  {"metrics": {"step": 40, "loss": 0.61},                 # what `python -m pretrain` prints
   "pretraining": {"steps": 40, "final_loss": 0.61, "floor": 0.62, "data": {"clips": 1000},
                   "probe": [ROW, ...], "label_efficiency": [ROW, ...]},  # ROW: a flat dict, one table row
   "ablation": {"pretrained, frozen": METRICS, ...},     # METRICS: a spotting metrics.json ({variant: {macro,
   "variant": "megc", "description": "..."}               #   micro, overall}}) or one variant's dict
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path

import torch

from data.common.atomic import write_bytes, write_json, write_text
from data.common.checksums import sha256_file
from data.common.config import to_dict
from data.common.errors import ConfigError, DataError
from finetune.encoder.load import checkpoint_run_config, find_checkpoint_states, read_state
from finetune.store import load_spotter
from finetune.windows import Granularity
from launch import model_card, processor, spotter_release
from launch.hf.modeling_spotmae import SpotMAEConfig, SpotMAEForSpotting, SpotMAEModel, SpotMAESpottingConfig
from launch.peer_import import load_peer_encoder
from launch.release_folder import (
    MANIFEST,
    check_out,
    is_complete,
    make_readable,
    partial_folder,
    push_folder,
    replace_folder,
)
from pretrain.config import PretrainConfig, load_pretrain_config
from pretrain.lgi_former import LGIEncoder

log = logging.getLogger(__name__)

MODELING_FILE = Path(__file__).with_name("hf") / "modeling_spotmae.py"
AUTO_MAP = {"encoder": {"AutoConfig": "modeling_spotmae.SpotMAEConfig", "AutoModel": "modeling_spotmae.SpotMAEModel"},
            "spotter": {"AutoConfig": "modeling_spotmae.SpotMAESpottingConfig",
                        "AutoModel": "modeling_spotmae.SpotMAEForSpotting"}}


@dataclasses.dataclass
class Source:
    """What a checkpoint holds: the training-side model (weights loaded) and how to describe it."""
    kind: str                       # "encoder" or "spotter"
    reference: torch.nn.Module      # pretrain LGIEncoder, or finetune EncoderHeads
    path: str
    head: dict = dataclasses.field(default_factory=dict)
    run: dict = dataclasses.field(default_factory=dict)  # step / loss / epoch recorded by the training run
    pretraining: PretrainConfig | None = None  # the run config a pretraining checkpoint carries
    granularities: list[Granularity] | None = None  # a spotter's heads' (its processor cuts their windows)

    @property
    def encoder(self):
        return self.reference.encoder if self.kind == "spotter" else self.reference


# ---------------------------------------------------------------- reading the source


def read_source(checkpoint, peer: bool, peer_heads: int | None) -> Source:
    """The checkpoint's model, built from the config it carries (a peer .pth: from its shapes and arguments)."""
    path = Path(checkpoint)
    if not path.exists():
        raise DataError("checkpoint not found", path=path, field="--checkpoint",
                        fix="pass a pretraining run folder, an encoder folder, a spotter folder or a .pth (--peer)")
    if peer:

        return Source("encoder", load_peer_encoder(path, heads=peer_heads), str(path))
    if (path / "spotter.json").is_file():
        return _spotter_source(path)

    state, cfg = read_state(path, field="--checkpoint")
    with torch.random.fork_rng():
        encoder = LGIEncoder(cfg)
    _load_strict(encoder, state, path)
    pretraining = None if path.suffix == ".safetensors" or (path / "model.safetensors").is_file() else \
        checkpoint_run_config(find_checkpoint_states(path) if path.is_dir() else path, "--checkpoint")
    return Source("encoder", encoder.eval(), str(path), run=checkpoint_metrics(path), pretraining=pretraining)


def _spotter_source(path: Path) -> Source:
    spotter, grans = load_spotter(path)
    meta = json.loads((path / "spotter.json").read_text())
    model = meta.get("model", {})
    head = {"granularities": [g.name for g in grans], "head_rows": model.get("pool_rows", 2),
            "head_hidden": model.get("head_hidden", 64), "head_kernel": model.get("head_kernel", 3)}
    return Source("spotter", spotter.eval(), str(path), head=head, granularities=grans)


def _load_strict(module: torch.nn.Module, state: dict, path) -> None:
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise DataError(f"weights do not fit their model config: {str(e).splitlines()[-1].strip()[:200]}",
                        path=path, field="model", fix="the checkpoint's weights and config disagree") from None
    if missing or unexpected:
        raise DataError(f"weights do not fit their model config: missing {missing[:3]}, unexpected {unexpected[:3]}",
                        path=path, field="model", fix="the checkpoint's weights and config disagree")


def checkpoint_metrics(path: Path) -> dict:
    """What Ray Train recorded for the released DeepSpeed checkpoint: {"step", "loss", "epoch", ...}.

    Ray keeps the reported metrics of every checkpoint in <run>/checkpoint_manager_snapshot.json. That file is
    Ray-internal, so anything unexpected just means "not known" ({}, or the step from the tag folder name).
    """
    if not path.is_dir() or (path / "model.safetensors").is_file():
        return {}

    try:
        states = find_checkpoint_states(path)
    except DataError:
        return {}
    found = re.fullmatch(r"step_(\d+)", states.parent.name)
    run = {"step": int(found.group(1))} if found else {}
    checkpoint = states.parent.parent
    try:
        snapshot = json.loads((checkpoint.parent / "checkpoint_manager_snapshot.json").read_text())
        for result in snapshot.get("checkpoint_results", []):
            if result.get("checkpoint_dir_name") == checkpoint.name and isinstance(result.get("metrics"), dict):
                run.update(result["metrics"])
    except (OSError, ValueError, AttributeError) as e:
        log.debug("no Ray metrics for %s (%s)", checkpoint, e)
    return run


# ---------------------------------------------------------------- building the transformers model


def hf_config(source: Source):
    """Every ModelConfig field (layer_norm_eps included) plus the heads' sizes, in transformers' config."""
    cfg = source.encoder.cfg
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    kind = SpotMAESpottingConfig if source.kind == "spotter" else SpotMAEConfig
    config = kind(**values, **source.head)
    config.auto_map = AUTO_MAP[source.kind]
    return config


def hf_model(source: Source):
    """The transformers model with the source's weights; strict (the names are the same on both sides)."""

    config = hf_config(source)
    if source.kind == "spotter":
        model, state = SpotMAEForSpotting(config), source.reference.state_dict()
    else:
        model = SpotMAEModel(config)
        state = {f"encoder.{k}": v for k, v in source.reference.state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DataError(f"release model and training model disagree: missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}", path=source.path, field="state_dict",
                        fix="launch/hf/modeling_spotmae.py is out of step with pretrain/lgi_former.py")
    return model.eval()


def probe_input(config, seed: int = 0) -> torch.Tensor:
    """A random clip in the training model's layout [1, channels, frames, size, size]."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, config.in_chans, config.frames, config.img_size, config.img_size, generator=gen)


def reference_outputs(source: Source, video: torch.Tensor) -> dict[str, torch.Tensor]:
    """Encoder features and, for a spotter, every head's logits (the encoder runs once)."""
    with torch.no_grad():
        features = source.encoder.forward_all(video)
        out = {"features": features.flatten(1, 3)}
        if source.kind == "spotter":
            out.update({g: source.reference.heads[g](features) for g in source.head["granularities"]})
        return out


def release_outputs(model, kind: str, video: torch.Tensor) -> dict[str, torch.Tensor]:
    """The release's outputs for a clip in the training model's layout (the release takes [B, T, C, H, W])."""
    pixel_values = video.transpose(1, 2)
    with torch.no_grad():
        if kind != "spotter":
            return {"features": model(pixel_values).last_hidden_state}
        first, *rest = model.config.granularities
        out = model(pixel_values, granularity=first)
        heads = {first: out.logits, **{g: model.heads[g](out.features) for g in rest}}
        return {"features": out.features.flatten(1, 3), **heads}


def check_same(expected: dict, got: dict, what: str, path, atol: float = 1e-6) -> float:
    """Largest absolute difference; DataError when any output differs by more than atol."""
    worst = 0.0
    for key, want in expected.items():
        if key not in got or got[key].shape != want.shape:
            raise DataError(f"{what}: output {key!r} missing or misshapen", path=path, field=key)
        worst = max(worst, (got[key] - want).abs().max().item())
    if worst > atol:
        raise DataError(f"{what}: outputs differ by {worst:.3g} (> {atol})", path=path, field="outputs",
                        fix="launch/hf/modeling_spotmae.py is out of step with the training model")
    return worst


# ---------------------------------------------------------------- writing the folder


def processor_settings(source: Source) -> tuple[dict | None, str | None]:
    """The release's processor settings (launch.processor), or None and why there is none."""
    view = source.pretraining.motion if source.pretraining is not None else None
    return processor.settings(source.encoder.cfg, source.granularities, view)


def export(source: Source, out, facts: dict) -> Path:
    """Write beside `out`, load back as users will and compare with the training model, then rename onto `out`."""

    out = Path(out).resolve()
    model = hf_model(source)
    video = probe_input(model.config)
    expected = reference_outputs(source, video)
    values, no_processor = processor_settings(source)
    tmp = partial_folder(out)
    try:
        model.save_pretrained(tmp)
        write_bytes(tmp / MODELING_FILE.name, MODELING_FILE.read_bytes())
        if values is not None:
            processor.write(tmp, values)
        facts = {**facts, "kind": source.kind, "config": json.loads((tmp / "config.json").read_text()),
                 "processor": values, "no_processor": no_processor}
        write_text(tmp / "README.md", model_card.render(facts))
        reloaded = load_release(tmp)
        diff = check_same(expected, release_outputs(reloaded, source.kind, video), "exported folder vs training model",
                          tmp)
        if values is not None:
            processor.check(tmp, values)
        write_json(tmp / MANIFEST, {"kind": source.kind, "source": source.path,
                                    "sha256": sha256_file(tmp / "model.safetensors"),
                                    "max_abs_diff_vs_training_model": diff,
                                    "transformers_class": type(model).__name__,
                                    "processor": None if values is None else values["input"],
                                    **({"no_processor": no_processor} if no_processor else {})})
        make_readable(tmp)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s release to %s (max |diff| vs training model %.3g)", source.kind, out, diff)
    return out


def load_release(folder):
    """AutoModel.from_pretrained(folder, trust_remote_code=True), offline: the way users will load it."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(folder), trust_remote_code=True, local_files_only=True).eval()


# ---------------------------------------------------------------- model card facts


def pretraining_config(source: Source, given: PretrainConfig | None, path=None) -> PretrainConfig | None:
    """The pretraining config the card describes: the one given (--pretrain-config), else the checkpoint's own.
    A given config whose model differs from the checkpoint's describes another run: refused, naming both."""
    if given is None:
        return source.pretraining
    ours, theirs = to_dict(given.model), to_dict(source.encoder.cfg)
    changed = [f"{k}: checkpoint {theirs.get(k)!r}, --pretrain-config {v!r}" for k, v in ours.items()
               if v != theirs.get(k)]
    if changed:
        raise ConfigError(f"the pretraining config's model is not the checkpoint's ({'; '.join(changed[:4])})",
                          path=path, field="--pretrain-config",
                          fix="pass the run's own pretraining YAML, or leave --pretrain-config out")
    return given


def gather_facts(source: Source, args, pretrain_cfg) -> dict:
    results_path = Path(args.results) if args.results else Path(source.path) / "results.json"
    results = model_card.read_results(results_path) if (args.results or results_path.is_file()) else {}
    pre = dict(results.get("pretraining", {}))
    metrics = results.get("metrics", {})
    pre.setdefault("steps", metrics.get("step", source.run.get("step", "unknown")))
    pre.setdefault("final_loss", metrics.get("loss", source.run.get("loss", "unknown")))
    floor = metrics.get("floor", source.run.get("floor"))
    if floor is not None:
        pre.setdefault("floor", floor)
    pre.setdefault("source", source.path)
    if pretrain_cfg is not None:
        pre.setdefault("data", model_card.data_summary(pretrain_cfg))
        pre.setdefault("recipe", {"global batch": pretrain_cfg.global_batch(), "peak lr": pretrain_cfg.peak_lr(),
                                  "total steps": pretrain_cfg.schedule.total_steps,
                                  "precision": pretrain_cfg.deepspeed.precision,
                                  "visible tokens per region": pretrain_cfg.model.visible_per_region,
                                  "input": pretrain_cfg.model.input, "target": pretrain_cfg.model.target})
    return {"source": source.path, "repo_id": args.push, "pretraining": pre, "results": results}


# ---------------------------------------------------------------- CLI


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch release", description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="pretraining run / encoder / spotter folder, or .pth: a transformers "
                      "release")
    what.add_argument("--spotter", help="a trained spotter folder (spotting loso's <out>/model): a spotter release")
    parser.add_argument("--out", required=True, help="release folder to write")
    parser.add_argument("--push", metavar="REPO_ID", help="upload to this Hub repo (token from HF_TOKEN)")
    parser.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--private", action="store_true", help="create the Hub repo private")
    parser.add_argument("--pretrain-config", help="the run's pretraining YAML, for the model card's data and recipe "
                        "(default: the config a pretraining checkpoint carries)")
    parser.add_argument("--results", help="results JSON for the model card (default: CHECKPOINT/results.json; with "
                        "--spotter: the LOSO run's metrics.json beside the spotter folder)")
    parser.add_argument("--variant", default="megc", help="--spotter: the metric variant of the card's LOSO table")
    parser.add_argument("--peer", action="store_true", help="CHECKPOINT is a MAE-DFER pretraining .pth")
    parser.add_argument("--peer-heads", type=int, help="attention heads of the peer model (default dim // 64)")
    parser.add_argument("--force", action="store_true", help="re-export even if OUT is a finished release")
    args = parser.parse_args(argv)

    given = load_pretrain_config(args.pretrain_config) if args.pretrain_config else None
    out = Path(args.out)
    check_out(out)
    if is_complete(out) and not args.force:
        log.info("%s is a finished release (use --force to re-export)", out)
    elif args.spotter:
        spotter_release.export(args.spotter, out, args.push, args.results, args.variant)
    else:
        source = read_source(args.checkpoint, args.peer, args.peer_heads)
        pretrain_cfg = pretraining_config(source, given, args.pretrain_config)
        export(source, out, gather_facts(source, args, pretrain_cfg))
    pushed = push_folder(out, args.push, args.endpoint, args.private) if args.push else None
    print(json.dumps({"release": str(out), "pushed": pushed}))
    return 0

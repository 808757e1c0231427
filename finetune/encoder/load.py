"""Loading the pretrained LGI-Former encoder for fine-tuning, and saving spotter weights.

An encoder source is one of:
  - None: a freshly initialised encoder (the "from scratch" ablation) of a named config;
  - a safetensors file, or a folder holding model.safetensors, with config.json beside it (the ModelConfig, or a
    release's config.json, which holds the same fields), or the Hub id of a release in the local Hub cache
    (data.common.hub);
  - a pretraining checkpoint folder written by pretrain/train_loop.py: a Ray run folder (checkpoint_* inside), one
    Ray checkpoint_* folder, or a DeepSpeed folder (`latest` + <tag>/mp_rank_00_model_states.pt), with the run's
    config beside `latest` (pretrain.config.RUN_CONFIG). The module weights come from mp_rank_00_model_states.pt
    (ZeRO 1/2 keep them whole there; bf16 engines store them in bf16 and they are cast to fp32), read with
    torch.load(weights_only=True) plus numpy scalar types only: no arbitrary unpickling. (The fp32 masters live
    in the optimizer shards, which pickle DeepSpeed objects.)
Every source but None carries its model config, so the architecture is never named again; a name the user does
give must match the checkpoint's.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import torch

from data.common.atomic import atomic_path, read_json, write_json
from data.common.config import build, to_dict
from data.common.errors import ConfigError, DataError
from data.common.hub import resolve_model
from pretrain.checkpoint_commit import problems
from pretrain.config import PretrainConfig, read_run_config
from pretrain.lgi_former import LGIEncoder
from pretrain.model_config import LATE_FIELDS, ModelConfig, digest_text, named_config

log = logging.getLogger(__name__)

PREFIXES = ("module.", "_orig_mod.", "encoder.")
SCRATCH_MODEL = "lgi_tiny"  # the encoder trained from scratch when no model name is given: CPU-sized


def require_rgb_input(encoder, source=None) -> None:
    """The spotting heads read ImageNet-normalised RGB crops: an encoder pretrained on the motion view
    (ModelConfig.input "motion") would see another input than it learned, so it is refused here."""
    if encoder.cfg.input != "rgb":
        raise ConfigError(f"this encoder was pretrained on the {encoder.cfg.input!r} input; the spotting heads "
                          "feed it RGB face crops", path=source, field="model.encoder",
                          fix="use it through the encoder channels (spotting loso channels=[encoder] or "
                              "[cues,flow,encoder]), or pick an rgb-pretrained encoder")


def encoder_features(encoder: LGIEncoder, video: torch.Tensor) -> torch.Tensor:
    """Normalised video [B, 3, T, H, W] -> time-ordered features [B, T', H', W', D]."""
    return encoder.forward_all(video)


def model_config_from_json(path) -> ModelConfig:
    """The ModelConfig in an encoder folder's config.json; a release's config.json holds the same fields among
    transformers' own keys, which are passed over."""
    raw = read_json(path, fix="re-export the encoder")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    return build(ModelConfig, {k: v for k, v in raw.items() if k in fields}, str(path))


def encoder_state(state: dict, source) -> dict[str, torch.Tensor]:
    """Keep the encoder's tensors, with wrapper prefixes (DeepSpeed, compile, VideoMAE) stripped."""
    has_encoder = any(k.split(".", 2)[:2] == ["module", "encoder"] or k.startswith("encoder.") for k in state)
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        name = key
        for prefix in PREFIXES:
            if name.startswith(prefix) and (prefix != "encoder." or has_encoder):
                name = name[len(prefix):]
        inside = key.startswith(("encoder.", "module.encoder.", "_orig_mod.encoder."))
        if has_encoder and not inside:
            continue  # the MAE decoder and its projection are not part of the encoder
        out[name] = value.float()
    if not out:
        raise DataError("no encoder weights found", path=source, fix="pass a VideoMAE/encoder checkpoint")
    return out


def _deepspeed_states_file(folder: Path) -> Path | None:
    """mp_rank_00_model_states.pt of the newest tag in a DeepSpeed checkpoint folder (None if not one)."""
    latest = folder / "latest"
    if latest.is_file():
        candidate = folder / latest.read_text().strip() / "mp_rank_00_model_states.pt"
        if candidate.is_file():
            return candidate
    found = sorted(folder.glob("*/mp_rank_00_model_states.pt"))
    return found[-1] if found else None


def find_checkpoint_states(folder: Path) -> Path:
    """The module-states file of the newest checkpoint below a run / Ray checkpoint / DeepSpeed folder."""
    direct = _deepspeed_states_file(folder)
    if direct is not None:
        return direct

    checkpoints = [p for p in sorted(folder.glob("checkpoint_*"), reverse=True) if p.is_dir()]
    # Prefer the newest checkpoint whose commit markers say it is complete; folders written without markers
    # (older runs) are used only when no complete one exists.
    complete = [p for p in checkpoints if not problems(p)]
    for ckpt in complete + [p for p in checkpoints if p not in complete]:
        found = _deepspeed_states_file(ckpt)
        if found is not None:
            if ckpt not in complete:
                log.warning("%s: using a checkpoint without complete commit markers", ckpt)
            return found
    raise DataError("no pretraining checkpoint found (no mp_rank_00_model_states.pt, no checkpoint_* folder)",
                    path=folder, field="model.encoder",
                    fix="pass the Ray run folder, a checkpoint_* folder, a safetensors file, or null")


def numpy_data_types() -> list:
    """Plain numpy scalars/dtypes that DeepSpeed client state may hold; data only, safe to allow."""
    import numpy as np

    dtypes = [type(np.dtype(t)) for t in ("bool", "uint8", "int32", "int64", "float16", "float32", "float64")]
    return [np._core.multiarray.scalar, np.dtype, *dtypes]


def checkpoint_run_config(states: Path, field: str | None = "model.encoder") -> PretrainConfig:
    """The run config of the pretraining checkpoint that holds module-states file `states`."""
    folder = Path(states).parent.parent  # <checkpoint>/<tag>/mp_rank_00_model_states.pt
    run_config = read_run_config(folder)
    if run_config is None:
        raise DataError("the checkpoint holds no model config (written before checkpoints carried one)",
                        path=folder, field=field,
                        fix="pretrain again with this version, or export the encoder with its config.json")
    return run_config


def load_safetensors(path, field: str | None = None) -> dict[str, torch.Tensor]:
    """safetensors.torch.load_file, with a truncated or non-safetensors file reported as a DataError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise DataError(f"not a readable safetensors file ({' '.join(str(e).split())[:160]})", path=path,
                        field=field, fix="copy or export the file again; a cut-off copy is the usual cause") from None


def check_torch_file(path, field: str, fix: str) -> None:
    """Refuse a file that torch.load could only misread: torch.save writes a zip archive (or, before torch
    1.6, a pickle); anything else, e.g. a text file, fails inside the unpickler with a meaningless IndexError."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise DataError(f"not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle; it starts "
                        f"with {head!r})", path=path, field=field, fix=fix)


def read_state(source, field: str = "model.encoder") -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """Encoder tensors and the model config stored beside them; errors name `field` (the setting or option that
    gave `source`)."""
    path = resolve_model(source, field)  # a Hub id: its snapshot in the local Hub cache
    if not path.exists():
        raise DataError("encoder weights not found", path=path, field=field,
                        fix="pass an existing checkpoint folder or safetensors file, or null for scratch")
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"
    if path.suffix == ".safetensors":
        config_json = path.parent / "config.json"
        if not config_json.is_file():
            raise DataError("no config.json beside the weights", path=path, field=field,
                            fix="save encoders with finetune.encoder.load.save_encoder (weights + config.json)")
        return encoder_state(load_safetensors(path, field), path), model_config_from_json(config_json)
    states = find_checkpoint_states(path) if path.is_dir() else path
    fix = "pass a pretraining run folder, a checkpoint_* folder, or an encoder folder / .safetensors file"
    check_torch_file(states, field, fix)
    try:
        with torch.serialization.safe_globals(numpy_data_types()):
            raw = torch.load(states, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors come in many types; say which file and why
        raise DataError(f"cannot read checkpoint safely ({type(e).__name__}: {str(e)[:200]})", path=states,
                        field=field, fix="export the encoder to safetensors") from None
    state = raw.get("module", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        raise DataError("checkpoint holds no state dict", path=states, field=field)
    log.info("encoder weights from %s", states)
    return encoder_state(state, states), checkpoint_run_config(states, field).model


def check_model_name(name: str | None, cfg: ModelConfig, source) -> None:
    """A model name the user gave must be the one the checkpoint was made with."""
    if name is not None and name != cfg.name:
        raise ConfigError(f"model.name {name!r} contradicts the checkpoint's model config {cfg.name!r}",
                          path=source, field="model.name",
                          fix=f"leave model.name null (the checkpoint's config is used) or set it to {cfg.name!r}")


def load_encoder(source, model_name: str | None = None, seed: int = 0, field: str | None = "model.encoder",
                 drop_path: float | None = None) -> LGIEncoder:
    """An LGIEncoder with weights and config from `source` (see module doc); None = a fresh `model_name` encoder
    (SCRATCH_MODEL when None) seeded by `seed`. Errors name `field`, the setting that gave `source`. `drop_path`
    (fine-tuning's stochastic depth) replaces the config's."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if source is None:
            state, cfg = None, named_config(model_name or SCRATCH_MODEL)
        else:
            state, cfg = read_state(source, field)
            check_model_name(model_name, cfg, source)
        if drop_path is not None:
            cfg = dataclasses.replace(cfg, drop_path=drop_path)
        encoder = LGIEncoder(cfg)
    if state is None:
        return encoder
    try:
        missing, unexpected = encoder.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        missing, unexpected = [str(e).splitlines()[-1].strip()[:160]], []
    if missing or unexpected:
        raise DataError(f"weights do not fit their own model config {cfg.name!r}: missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}", path=source, field=field,
                        fix="the checkpoint's weights and config disagree: re-export or re-train it")
    return encoder


def save_safetensors(module: torch.nn.Module, path, metadata: dict | None = None) -> Path:
    """Write a module's tensors as safetensors, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return Path(path)


def save_encoder(encoder: LGIEncoder, folder) -> Path:
    """folder/model.safetensors + folder/config.json (the ModelConfig), loadable by load_encoder."""
    folder = Path(folder)
    save_safetensors(encoder, folder / "model.safetensors")
    write_json(folder / "config.json", to_dict(encoder.cfg))
    return folder


# ModelConfig fields added after the prototype's caches were written, at the value those caches were made with:
# left out of the digest while at that value, so the caches stay valid (the weights are hashed in full).
_LATE_MODEL_FIELDS = {"layer_norm_eps": 1e-5, "drop_path": 0.0, **LATE_FIELDS}


def encoder_digest(encoder) -> str:
    """A short hash of the encoder's config and weights: what every cache of encoder outputs is keyed by (the
    research prototype's hash, see _LATE_MODEL_FIELDS, so its caches stay valid)."""
    h = hashlib.sha1(digest_text(encoder.cfg, _LATE_MODEL_FIELDS).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]

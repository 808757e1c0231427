"""Loading the pretrained LGI-Former encoder for fine-tuning, and saving spotter weights.

An encoder source is one of:
  - None: a freshly initialised encoder (the "from scratch" ablation);
  - a safetensors file, or a folder holding model.safetensors (+ config.json with ModelConfig fields, and
    optionally `layer_norm_eps`, which a release folder carries: peer-weight releases use 1e-6);
  - a pretraining checkpoint folder written by pretrain/train_loop.py: a Ray run folder (checkpoint_* inside), one
    Ray checkpoint_* folder, or a DeepSpeed folder (`latest` + <tag>/mp_rank_00_model_states.pt). The module
    weights come from mp_rank_00_model_states.pt (ZeRO 1/2 keep them whole there; bf16 engines store them in
    bf16 and they are cast to fp32), read with torch.load(weights_only=True) plus numpy scalar types only: no
    arbitrary unpickling. (The fp32 masters live in the optimizer shards, which pickle DeepSpeed objects.)
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch

from data.common.atomic import atomic_path, write_json
from data.common.errors import ConfigError, DataError
from pretrain.checkpoint_commit import problems
from pretrain.lgi_former import LGIEncoder
from pretrain.model_config import ModelConfig, named_config

log = logging.getLogger(__name__)

PREFIXES = ("module.", "_orig_mod.", "encoder.")


def encoder_features(encoder: LGIEncoder, video: torch.Tensor) -> torch.Tensor:
    """Normalised video [B, 3, T, H, W] -> time-ordered features [B, T', H', W', D]."""
    return encoder.forward_all(video)


def model_config_from_json(path) -> ModelConfig:
    raw = json.loads(Path(path).read_text())
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    known = {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items() if k in fields}
    try:
        return ModelConfig(**known)
    except TypeError as e:
        raise ConfigError(f"not a model config: {e}", path=path, fix="write config.json from ModelConfig") from None


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


def layer_norm_eps_from_json(path) -> float | None:
    """`layer_norm_eps` of a release folder's config.json (peer-weight releases use 1e-6), None when absent."""
    eps = json.loads(Path(path).read_text()).get("layer_norm_eps")
    if eps is None:
        return None
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < 1:
        raise ConfigError(f"layer_norm_eps must be a small positive number, got {eps!r}", path=path,
                          field="layer_norm_eps", fix="write e.g. 1e-5 (ours) or 1e-6 (peer weights)")
    return float(eps)


def set_layer_norm_eps(module: torch.nn.Module, eps: float) -> torch.nn.Module:
    """Set every LayerNorm's eps (the encoder builds them with torch's default 1e-5)."""
    for m in module.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = eps
    return module


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


def read_state(source, field: str = "model.encoder") -> tuple[dict[str, torch.Tensor], ModelConfig | None]:
    """Encoder tensors and, when stored beside them, the model config; errors name `field` (the setting or
    option that gave `source`)."""
    path = Path(source)
    if not path.exists():
        raise DataError("encoder weights not found", path=path, field=field,
                        fix="pass an existing checkpoint folder or safetensors file, or null for scratch")
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"
    if path.suffix == ".safetensors":
        config_json = path.parent / "config.json"
        cfg = model_config_from_json(config_json) if config_json.is_file() else None
        return encoder_state(load_safetensors(path, field), path), cfg
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
    return encoder_state(state, states), None


def load_encoder(source, model_name: str = "lgi_tiny", seed: int = 0,
                 field: str | None = "model.encoder") -> LGIEncoder:
    """An LGIEncoder with weights from `source` (see module doc); None = fresh init seeded by `seed`. Errors
    name `field`, the setting that gave `source`."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if source is None:
            return LGIEncoder(named_config(model_name))
        state, cfg = read_state(source, field)
        encoder = LGIEncoder(cfg or named_config(model_name))
    eps = release_layer_norm_eps(source)
    if eps is not None:
        set_layer_norm_eps(encoder, eps)  # weights trained with another eps give other features with ours
    try:
        missing, unexpected = encoder.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        missing, unexpected = [str(e).splitlines()[-1].strip()[:160]], []
    if missing or unexpected:
        raise ConfigError(f"weights do not fit model {encoder.cfg.name!r}: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}", path=source, field="model.name",
                          fix="set model.name to the config the encoder was pretrained with")
    return encoder


def release_layer_norm_eps(source) -> float | None:
    """The eps a safetensors release declares in the config.json beside its weights (None: keep the default).
    Pretraining checkpoints are built by our own code, so they use our default eps."""
    path = Path(source)
    if path.is_dir():
        config_json = path / "config.json" if (path / "model.safetensors").is_file() else None
    else:
        config_json = path.parent / "config.json" if path.suffix == ".safetensors" else None
    return layer_norm_eps_from_json(config_json) if config_json and config_json.is_file() else None


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
    write_json(folder / "config.json", dataclasses.asdict(encoder.cfg))
    return folder

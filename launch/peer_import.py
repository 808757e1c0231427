"""Import a MAE-DFER pretraining checkpoint (the peer LGI-Former) into our encoder, and map ours the other way.

The peer file is a torch pickle {"model": state_dict, "optimizer": ..., "epoch": ..., "scaler": ..., "args":
argparse.Namespace}. It is read with torch.load(weights_only=True), which unpickles tensors and plain
containers only, plus an explicit allow-list of exactly one class, argparse.Namespace (the run's arguments:
strings, numbers, tuples). Any other class in the pickle is refused with a DataError naming it: a checkpoint
is data, and unpickling arbitrary classes runs arbitrary code.

Peer encoder names -> ours (pretrain/lgi_former.py); one LGI block N:
  encoder.blocks.N.first_attn_norm0  -> blocks.N.norm_local     first_attn  (self, region + its tokens) -> local_attn
  encoder.blocks.N.second_attn_norm0 -> blocks.N.norm_region    second_attn (among region tokens)      -> region_attn
  encoder.blocks.N.third_attn_norm0  -> blocks.N.norm_query     third_attn  (local -> region tokens)   -> cross_attn
  encoder.blocks.N.third_attn_norm1  -> blocks.N.norm_context
  encoder.blocks.N.norm2, mlp.fc1/fc2 -> blocks.N.norm_mlp, mlp.fc1/fc2
  attention: q.weight [D, D] and kv.weight [2D, D] -> qkv.weight [3D, D] (rows q, k, v); q_bias, v_bias, proj.*
  encoder.patch_embed.proj.* -> patch_embed.*;  encoder.lg_region_tokens -> region_tokens;  encoder.norm -> norm
Both number regions (t, h, w)-major and run the same pre-LN block, so the forward matches when the peer's region
covers the full width (its token grouping assumes that) and LayerNorm eps is the peer's 1e-6. decoder.*,
encoder_to_decoder and mask_token belong to the MAE decoder and are not imported.
"""
from __future__ import annotations

import argparse
import logging
import pickle
import re
from pathlib import Path

import torch

from data.common.errors import ConfigError, DataError
from finetune.encoder.load import check_torch_file
from pretrain.lgi_former import LGIEncoder
from pretrain.model_config import ModelConfig

log = logging.getLogger(__name__)

PEER_LAYER_NORM_EPS = 1e-6   # the peer builds every LayerNorm with eps=1e-6; ours default to 1e-5
SAFE_GLOBALS = [argparse.Namespace]
NORMS = {"norm_local": "first_attn_norm0", "norm_region": "second_attn_norm0", "norm_query": "third_attn_norm0",
         "norm_context": "third_attn_norm1", "norm_mlp": "norm2"}
ATTENTIONS = {"local_attn": "first_attn", "region_attn": "second_attn", "cross_attn": "third_attn"}
TOP = {"patch_embed.weight": "encoder.patch_embed.proj.weight", "patch_embed.bias": "encoder.patch_embed.proj.bias",
       "region_tokens": "encoder.lg_region_tokens", "norm.weight": "encoder.norm.weight",
       "norm.bias": "encoder.norm.bias"}
DECODER_PREFIXES = ("decoder.", "encoder_to_decoder.", "mask_token")
# the peer's defaults for the one block variant we implement (run_mae_pretraining.py arguments)
VARIANT = {"attn_type": "local_global", "lg_first_attn_type": "self", "lg_third_attn_type": "cross",
           "lg_attn_param_sharing_first_third": False, "lg_attn_param_sharing_all": False,
           "lg_no_second": False, "lg_no_third": False}


def read_peer_checkpoint(path) -> tuple[dict[str, torch.Tensor], dict]:
    """(model state dict, run arguments as a dict) from a peer .pth, unpickling only the allow-list."""
    path = Path(path)
    if not path.is_file():
        raise DataError("peer checkpoint not found", path=path, field="--checkpoint", fix="pass the .pth file")
    check_torch_file(path, "--checkpoint", fix="pass a MAE-DFER checkpoint-*.pth")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = f"class {found.group(1)}" if found else str(e).splitlines()[0][:200]
        raise DataError(f"refused to unpickle {what}: only tensors, plain containers and argparse.Namespace are "
                        f"allowed", path=path, field="pickle",
                        fix="re-save the checkpoint as {'model': state_dict, 'args': Namespace} or as safetensors "
                            "from a trusted environment") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise DataError(f"not a readable torch checkpoint ({type(e).__name__}: {str(e)[:200]})", path=path,
                        fix="pass a MAE-DFER checkpoint-*.pth") from None
    state = raw.get("model", raw.get("module", raw)) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError("no state dict in the checkpoint (looked under 'model', 'module' and the top level)",
                        path=path, field="model")
    args = raw.get("args") if isinstance(raw, dict) else None
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, vars(args) if args is not None else {}


def block_count(state: dict, prefix: str) -> int:
    ids = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    if ids and ids != set(range(len(ids))):
        raise DataError(f"block numbers under {prefix!r} are not 0..{len(ids) - 1}: {sorted(ids)}", field=prefix)
    return len(ids)


def _name_pairs(depth: int) -> list[tuple[str, str]]:
    """(our name, peer name) for every tensor except the fused/split attention weights."""
    pairs = list(TOP.items())
    for n in range(depth):
        ours, peer = f"blocks.{n}.", f"encoder.blocks.{n}."
        for our_norm, peer_norm in NORMS.items():
            pairs += [(f"{ours}{our_norm}.{p}", f"{peer}{peer_norm}.{p}") for p in ("weight", "bias")]
        for our_attn, peer_attn in ATTENTIONS.items():
            pairs += [(f"{ours}{our_attn}.{p}", f"{peer}{peer_attn}.{p}")
                      for p in ("q_bias", "v_bias", "proj.weight", "proj.bias")]
        pairs += [(f"{ours}mlp.{p}", f"{peer}mlp.{p}") for p in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")]
    return pairs


def peer_to_encoder_state(peer: dict[str, torch.Tensor], source=None) -> dict[str, torch.Tensor]:
    """Our LGIEncoder state dict from the peer's; every peer encoder tensor must be used exactly once."""
    depth = block_count(peer, "encoder.blocks.")
    if depth == 0:
        raise DataError("no encoder.blocks.N.* tensors: not a MAE-DFER LGI-Former checkpoint", path=source,
                        field="encoder.blocks")
    left = dict(peer)
    missing, out = [], {}
    for ours, name in _name_pairs(depth):
        if name in left:
            out[ours] = left.pop(name)
        else:
            missing.append(name)
    for n in range(depth):
        for our_attn, peer_attn in ATTENTIONS.items():
            q, kv = f"encoder.blocks.{n}.{peer_attn}.q.weight", f"encoder.blocks.{n}.{peer_attn}.kv.weight"
            if q in left and kv in left:
                out[f"blocks.{n}.{our_attn}.qkv.weight"] = torch.cat([left.pop(q), left.pop(kv)], dim=0)
            else:
                missing += [k for k in (q, kv) if k not in left]
    if missing:
        raise DataError(f"{len(missing)} encoder tensors missing, e.g. {missing[:4]} (a variant without q/v "
                        f"biases or with a skipped attention is not supported)", path=source, field=missing[0])
    extra = [k for k in left if not k.startswith(DECODER_PREFIXES)]
    if extra:
        raise DataError(f"tensors this importer does not understand: {extra[:4]} (e.g. learnable positions, "
                        f"layer scale, a cross-type first attention)", path=source, field=extra[0],
                        fix="only the default LGI-Former pretraining variant can be imported")
    log.info("imported %d peer encoder tensors (%d blocks); ignored %d MAE decoder tensors",
             len(peer) - len(left), depth, len(left))
    return out


def encoder_to_peer_state(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse mapping: our LGIEncoder state dict in the peer's encoder.* names."""
    depth = block_count(ours, "blocks.")
    out = {peer: ours[name] for name, peer in _name_pairs(depth)}
    for n in range(depth):
        for our_attn, peer_attn in ATTENTIONS.items():
            qkv = ours[f"blocks.{n}.{our_attn}.qkv.weight"]
            dim = qkv.shape[1]
            out[f"encoder.blocks.{n}.{peer_attn}.q.weight"] = qkv[:dim].clone()
            out[f"encoder.blocks.{n}.{peer_attn}.kv.weight"] = qkv[dim:].clone()
    return out


def check_variant(args: dict, source=None) -> None:
    """Refuse run arguments that select a block variant our encoder does not implement."""
    for key, want in VARIANT.items():
        if key in args and args[key] != want:
            raise ConfigError(f"peer run used {key}={args[key]!r}; only {want!r} is supported", path=source,
                              field=f"args.{key}", fix="import a checkpoint of the default LGI-Former variant")


def peer_model_config(peer: dict, args: dict, heads: int | None = None, source=None) -> ModelConfig:
    """Our ModelConfig for the peer weights: sizes from tensor shapes, geometry from the run arguments."""
    tokens = peer["encoder.lg_region_tokens"]
    embed = peer["encoder.patch_embed.proj.weight"]  # [D, C, tubelet, patch, patch]
    dim = tokens.shape[1]
    hidden = peer["encoder.blocks.0.mlp.fc1.weight"].shape[0]
    region = tuple(int(r) for r in args.get("lg_region_size", (2, 5, 10)))
    frames, size = int(args.get("num_frames", 16)), int(args.get("input_size", 160))
    per_region = region[0] * region[1] * region[2]
    visible = max(region[0], round(per_region * (1.0 - float(args.get("mask_ratio", 0.9))) / region[0]) * region[0])
    decoder_dim = peer["decoder.norm.weight"].shape[0] if "decoder.norm.weight" in peer else 384
    changes = dict(name="mae_dfer_import", frames=frames, img_size=size, patch=int(embed.shape[3]),
                   tubelet=int(embed.shape[2]), in_chans=int(embed.shape[1]), region=region,
                   visible_per_region=visible, dim=dim, depth=block_count(peer, "encoder.blocks."),
                   heads=heads or max(1, dim // 64), mlp_ratio=hidden / dim, decoder_dim=decoder_dim,
                   decoder_depth=max(1, block_count(peer, "decoder.blocks.")), decoder_heads=max(1, decoder_dim // 64),
                   target="frame_diff" if args.get("use_frame_diff_as_target") else "pixel",
                   layer_norm_eps=PEER_LAYER_NORM_EPS)
    try:
        cfg = ModelConfig(**changes)  # the base config's (lgi_base) defaults for anything not set here
    except ConfigError as e:
        raise ConfigError(f"peer geometry does not fit our model: {e}", path=source, field=e.field) from None
    if region[2] != size // cfg.patch:
        raise ConfigError(f"peer region width {region[2]} is not the full token width {size // cfg.patch}: the "
                          f"peer groups tokens by raster runs, which equals a region only at full width",
                          path=source, field="args.lg_region_size")
    if tokens.shape[0] != cfg.num_regions:
        raise DataError(f"lg_region_tokens has {tokens.shape[0]} regions, the geometry gives {cfg.num_regions}",
                        path=source, field="encoder.lg_region_tokens", fix="check args.lg_region_size/input_size")
    return cfg


def load_peer_encoder(path, heads: int | None = None) -> LGIEncoder:
    """Our LGIEncoder (eval mode, LayerNorm eps 1e-6 as in the peer) with a peer checkpoint's weights."""
    peer, args = read_peer_checkpoint(path)
    check_variant(args, path)
    state = peer_to_encoder_state(peer, path)
    cfg = peer_model_config(peer, args, heads, path)
    with torch.random.fork_rng():
        encoder = LGIEncoder(cfg)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise DataError(f"peer weights do not fit: {str(e).splitlines()[-1].strip()[:200]}", path=path,
                        field="state_dict") from None
    return encoder.eval()

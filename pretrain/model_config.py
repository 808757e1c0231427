"""ModelConfig: the geometry and sizes of the LGI-Former VideoMAE; the named configs are timm models.

The named configs are registered with timm's model registry by pretrain/lgi_former.py (`timm.create_model("lgi_tiny")`
builds one); `named_config(name)` reads a config from there: "lgi_base" is the seed (16 x 160 x 160 input, dim 512,
depth 16, decoder 4 x 384: the dataclass defaults), "lgi_tiny" trains in minutes on a CPU. In YAML a model section
starts from the named config it names and changes what it lists: `model: {name: lgi_tiny, depth: 3}`. Sizes and
geometry are checked whenever a config is built. Checkpoints and encoder folders store the whole config, so nothing
downstream asks for the architecture again.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from timm.models import is_model, list_models, model_entrypoint

from data.clips.geometry import ClipGeometry
from data.clips.masking import check_geometry
from data.common.config import Config, apply_overrides, build, read_yaml, setting
from data.common.errors import ConfigError
from data.clips.targets import CELL, LOADER_TARGETS


@dataclasses.dataclass(frozen=True)
class ModelConfig(Config):
    name: str = "lgi_base"
    # input geometry: frames x img_size x img_size, cut into tubelet x patch x patch tokens
    frames: int = setting(16, ge=1)
    img_size: int = setting(160, ge=1)
    patch: int = setting(16, ge=1)
    tubelet: int = setting(2, ge=1)
    in_chans: int = setting(3, ge=1)
    # regions in token units (t, h, w): local attention runs inside one region
    region: tuple[int, int, int] = setting((2, 5, 10), ge=1)
    visible_per_region: int = setting(10, ge=1)
    mask_mode: Literal["window", "tube", "random"] = "window"
    # encoder
    dim: int = setting(512, ge=1)
    depth: int = setting(16, ge=1)
    heads: int = setting(8, ge=1)
    mlp_ratio: float = setting(4.0, gt=0)
    # every LayerNorm's eps: ours train with torch's 1e-5; imported peer (MAE-DFER) weights need 1e-6
    layer_norm_eps: float = setting(1e-5, gt=0, lt=1)
    # stochastic depth of the last encoder block (0 at the first, linear in between): 0 for pretraining;
    # fine-tuning sets its own (finetune train.drop_path)
    drop_path: float = setting(0.0, ge=0, lt=1)
    # decoder (plain ViT blocks on visible + mask tokens)
    decoder_dim: int = setting(384, ge=1)
    decoder_depth: int = setting(4, ge=1)
    decoder_heads: int = setting(6, ge=1)
    # what the encoder is fed: "rgb" (ImageNet-normalised colour clips) or "motion" (the temporal-contrast view of
    # stabilised grey faces that the spotter's encoder channels show it: pretrain.motion_input)
    input: Literal["rgb", "motion"] = "rgb"
    # reconstruction target (data.clips.targets): per-tubelet normalised pixels, frame 2 as its difference from
    # frame 1, "view": the input's own values, unnormalised (a static tubelet of the motion view is ~0),
    # "energy": their mean magnitude per 4 x 4 pixel cell, or "flow": the optical flow since the clip's first
    # frame per 4 x 4 cell (masked motion modelling; made by the loader from stabilised grey clips), or
    # "flow_magnitude": that flow's length per cell
    target: Literal["pixel", "frame_diff", "view", "energy", "flow", "flow_magnitude"] = "pixel"

    def check(self) -> None:
        if self.frames % self.tubelet:
            raise ConfigError(f"frames={self.frames} is not divisible by tubelet={self.tubelet}", field="frames",
                              fix="use a multiple of the tubelet length (e.g. 16 with tubelet 2)")
        if self.img_size % self.patch:
            raise ConfigError(f"img_size={self.img_size} is not divisible by patch={self.patch}", field="img_size",
                              fix="use a multiple of the patch size (e.g. 160 with patch 16)")
        for dim_field, heads_field in (("dim", "heads"), ("decoder_dim", "decoder_heads")):
            if getattr(self, dim_field) % getattr(self, heads_field):
                raise ConfigError(f"{dim_field}={getattr(self, dim_field)} is not divisible by "
                                  f"{heads_field}={getattr(self, heads_field)}", field=dim_field)
        if self.target in ("energy", "flow", "flow_magnitude") and self.patch % CELL:
            raise ConfigError(f"the {self.target} target averages {CELL} x {CELL} pixel cells; "
                              f"patch={self.patch} is not a multiple", field="patch",
                              fix=f"use a patch size divisible by {CELL}")
        if self.target in LOADER_TARGETS and self.input != "motion":
            raise ConfigError(f"the {self.target} target is made from stabilised grey clips", field="target",
                              fix="set input=motion (and pack the shards with crop: stabilised)")
        check_geometry(self.token_grid, self.region, self.visible_per_region, self.mask_mode)

    @classmethod
    def preset(cls, raw: dict) -> ModelConfig | None:
        """A partial mapping starts from the named config its `name` gives; a complete one (a checkpoint's) needs
        none, so its name may be anything."""
        if "name" not in raw or {f.name for f in dataclasses.fields(cls)} <= set(raw):
            return None
        return named_config(raw["name"])

    @property
    def geometry(self) -> ClipGeometry:
        """What the shard loader cuts, sizes and masks for this model."""
        return ClipGeometry(self.frames, self.img_size, self.patch, self.tubelet, tuple(self.region),
                            self.visible_per_region, self.mask_mode)

    @property
    def token_grid(self) -> tuple[int, int, int]:
        return self.geometry.token_grid

    @property
    def num_tokens(self) -> int:
        t, h, w = self.token_grid
        return t * h * w

    @property
    def tokens_per_region(self) -> int:
        return self.region[0] * self.region[1] * self.region[2]

    @property
    def num_regions(self) -> int:
        return self.num_tokens // self.tokens_per_region

    @property
    def num_visible(self) -> int:
        return self.num_regions * self.visible_per_region

    @property
    def num_masked(self) -> int:
        return self.num_tokens - self.num_visible

    @property
    def patch_values(self) -> int:
        """Values predicted per token: channels x tubelet x patch x patch (1536 for the seed); "energy": one per
        4 x 4 pixel cell of each frame; "flow": two (dx, dy) per cell of each frame."""
        cells = self.tubelet * (self.patch // CELL) ** 2
        if self.target in ("energy", "flow", "flow_magnitude"):
            return cells * (2 if self.target == "flow" else 1)
        return self.in_chans * self.tubelet * self.patch * self.patch


# Fields added after feature caches were written: left out of cache digests while at these values, so the
# caches of encoders that do not use them stay valid (finetune.heads.features, finetune.encoder.features).
LATE_FIELDS = {"input": "rgb"}


def digest_text(cfg: ModelConfig, late: dict = LATE_FIELDS) -> str:
    """The config's repr without the `late` fields that are at their listed value (what cache digests hash)."""
    kept = [f for f in dataclasses.fields(cfg) if not (f.name in late and getattr(cfg, f.name) == late[f.name])]
    return f"{type(cfg).__name__}(" + ", ".join(f"{f.name}={getattr(cfg, f.name)!r}" for f in kept) + ")"


def named_configs() -> list[str]:
    """The names of the models pretrain/lgi_former.py registers with timm."""
    return list_models(module="lgi_former")


def named_config(name: str, **changes) -> ModelConfig:
    """The config of a named model in timm's registry, optionally with fields changed (checked again):
    named_config("lgi_tiny", frames=8). The registered entrypoint is what defines it: it is built on the meta
    device (no memory, no random numbers drawn) and its config read back."""
    if not is_model(name) or name not in named_configs():
        raise ConfigError(f"unknown model config {name!r}; known: {named_configs()}", field="name",
                          fix="use one of the named configs or load a YAML file")
    with torch.device("meta"):
        return model_entrypoint(name)(**changes).cfg


def load_model_config(path=None, name: str = "lgi_base", overrides=()) -> ModelConfig:
    """A model config from YAML (the file itself, or its `model:` section for a pretraining YAML), or else
    the named config; then `key=value` overrides. Types and geometry are checked."""
    raw, source = ({"name": name}, f"<named config {name}>") if path is None else (read_yaml(path), str(path))
    if isinstance(raw.get("model"), dict):
        raw = raw["model"]
    raw = dict(raw)
    apply_overrides(raw, overrides)
    return build(ModelConfig, raw, source)

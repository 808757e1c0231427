"""ModelConfig: the geometry and sizes of the LGI-Former VideoMAE, plus the named configs.

`named_config("lgi_base")` is the seed (16 x 160 x 160 input, dim 512, depth 16, decoder 4 x 384);
`named_config("lgi_tiny")` trains in minutes on a CPU. A YAML file loads with
`data.common.config.load_config(path, ModelConfig, overrides)`; geometry is checked on construction.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from data.clips.masking import check_geometry
from data.common.config import apply_overrides, build, read_yaml
from data.common.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "lgi_base"
    # input geometry: frames x img_size x img_size, cut into tubelet x patch x patch tokens
    frames: int = 16
    img_size: int = 160
    patch: int = 16
    tubelet: int = 2
    in_chans: int = 3
    # regions in token units (t, h, w): local attention runs inside one region
    region: tuple[int, int, int] = (2, 5, 10)
    visible_per_region: int = 10
    mask_mode: Literal["window", "tube", "random"] = "window"
    # encoder
    dim: int = 512
    depth: int = 16
    heads: int = 8
    mlp_ratio: float = 4.0
    # decoder (plain ViT blocks on visible + mask tokens)
    decoder_dim: int = 384
    decoder_depth: int = 4
    decoder_heads: int = 6
    # reconstruction target: per-tubelet normalised pixels, or frame 2 as its difference from frame 1
    target: Literal["pixel", "frame_diff"] = "pixel"

    def __post_init__(self):
        self.validate()

    def validate(self, source=None) -> None:
        """Raise ConfigError naming the field when sizes do not fit together."""
        for field in ("frames", "img_size", "patch", "tubelet", "in_chans", "dim", "depth", "heads",
                      "decoder_dim", "decoder_depth", "decoder_heads"):
            if getattr(self, field) < 1:
                raise ConfigError(f"must be a positive integer, got {getattr(self, field)}", path=source,
                                  field=field)
        if self.frames % self.tubelet:
            raise ConfigError(f"frames={self.frames} is not divisible by tubelet={self.tubelet}", path=source,
                              field="frames", fix="use a multiple of the tubelet length (e.g. 16 with tubelet 2)")
        if self.img_size % self.patch:
            raise ConfigError(f"img_size={self.img_size} is not divisible by patch={self.patch}", path=source,
                              field="img_size", fix="use a multiple of the patch size (e.g. 160 with patch 16)")
        for dim_field, heads_field in (("dim", "heads"), ("decoder_dim", "decoder_heads")):
            if getattr(self, dim_field) % getattr(self, heads_field):
                raise ConfigError(f"{dim_field}={getattr(self, dim_field)} is not divisible by "
                                  f"{heads_field}={getattr(self, heads_field)}", path=source, field=dim_field)
        if self.mlp_ratio <= 0:
            raise ConfigError(f"must be positive, got {self.mlp_ratio}", path=source, field="mlp_ratio")
        check_geometry(self.token_grid, self.region, self.visible_per_region, self.mask_mode, source)

    @property
    def token_grid(self) -> tuple[int, int, int]:
        side = self.img_size // self.patch
        return (self.frames // self.tubelet, side, side)

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
        """Values predicted per token: channels x tubelet x patch x patch (1536 for the seed)."""
        return self.in_chans * self.tubelet * self.patch * self.patch


NAMED = {
    "lgi_base": ModelConfig(),
    "lgi_tiny": ModelConfig(name="lgi_tiny", dim=128, depth=2, heads=4, decoder_dim=96, decoder_depth=1,
                            decoder_heads=3),
}


def named_config(name: str, **changes) -> ModelConfig:
    """A named config, optionally with fields changed (checked again): named_config("lgi_tiny", frames=8)."""
    if name not in NAMED:
        raise ConfigError(f"unknown model config {name!r}; known: {sorted(NAMED)}", field="name",
                          fix="use one of the named configs or load a YAML file")
    try:
        return dataclasses.replace(NAMED[name], **changes)
    except TypeError as e:
        raise ConfigError(str(e), field="name", fix=f"fields are {[f.name for f in dataclasses.fields(ModelConfig)]}")


def load_model_config(path=None, name: str = "lgi_base", overrides=()) -> ModelConfig:
    """A model config from YAML (the file itself, or its `model:` section for a pretraining YAML), or else
    the named config; then `key=value` overrides. Types and geometry are checked."""
    if path is None:
        raw, source = dataclasses.asdict(named_config(name)), f"<named config {name}>"
    else:
        raw, source = read_yaml(path), str(path)
        if isinstance(raw.get("model"), dict):
            raw = raw["model"]
    raw = dict(raw)
    apply_overrides(raw, overrides)
    return build(ModelConfig, raw, source)

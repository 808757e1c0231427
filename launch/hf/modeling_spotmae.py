"""SpotMAE LGI-Former in Hugging Face transformers conventions (config + models in this one file).

This file is copied verbatim into every released folder. `trust_remote_code=True` imports it from that folder,
where nothing of the SpotMAE project exists, so it imports only torch and transformers: a release loads with
`pip install torch transformers safetensors` and no SpotMAE checkout. The price is a second copy of the
encoder's parts. As in transformers, each copied part is marked `# Copied from <module>.<name>` (with `A->B` for
a renamed name) and tests/test_copies.py fails when it no longer equals its source; the parts adapted to
transformers (the encoder's tables, the models) are proved by tests/test_release.py to compute the same numbers
as pretrain/lgi_former.py (parameter names are identical, so state dicts move between the two without renaming).

    from transformers import AutoModel, AutoProcessor
    processor = AutoProcessor.from_pretrained("path/or/repo", trust_remote_code=True)
    model = AutoModel.from_pretrained("path/or/repo", trust_remote_code=True)
    inputs = processor(frames)                      # processing_spotmae.py: the model input of each window
    out = model(**inputs)                           # pixel_values [B, frames, 3, img_size, img_size], as VideoMAE
    out.last_hidden_state                           # [B, T' * H' * W', dim], tokens in time/raster order
    model(**inputs, output_hidden_states=True).hidden_states  # the embedding and every block's tokens

Loading is strict: a checkpoint with missing, unexpected or wrongly shaped weights raises SpotMAELoadError
instead of transformers' default of initialising what is missing at random (which once silently zeroed
attention biases).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import ModelOutput

# per-frame outputs of a spotting head (finetune.windows.CHANNELS)
SPOTTING_CHANNELS = ["macro_present", "micro_present", "macro_apex", "micro_apex"]


class SpotMAELoadError(ValueError):
    """Weights on disk do not fit the model built from config.json."""


class SpotMAEConfig(PretrainedConfig):
    """Every value that shapes the computation is stored explicitly (no library defaults are relied on).

    Field names follow pretrain.model_config.ModelConfig so the project can rebuild its own config from
    config.json; the usual transformers names (hidden_size, ...) are aliases.
    """

    model_type = "spotmae_lgi"
    attribute_map = {"hidden_size": "dim", "num_hidden_layers": "depth", "num_attention_heads": "heads",
                     "num_channels": "in_chans", "image_size": "img_size", "patch_size": "patch",
                     "tubelet_size": "tubelet", "num_frames": "frames"}

    def __init__(self, name="lgi_base", frames=16, img_size=160, patch=16, tubelet=2, in_chans=3,
                 region=(2, 5, 10), visible_per_region=10, mask_mode="window", dim=512, depth=16, heads=8,
                 mlp_ratio=4.0, decoder_dim=384, decoder_depth=4, decoder_heads=6, target="pixel", input="rgb",
                 layer_norm_eps=1e-5, hidden_act="gelu", position_embedding="sinusoid_raster",
                 image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225),
                 granularities=(), head_rows=2, head_hidden=64, head_kernel=3, head_channels=SPOTTING_CHANNELS,
                 **kwargs):
        self.name = name
        self.frames, self.img_size, self.patch, self.tubelet, self.in_chans = frames, img_size, patch, tubelet, in_chans
        self.region = list(region)
        self.visible_per_region, self.mask_mode = visible_per_region, mask_mode
        self.dim, self.depth, self.heads, self.mlp_ratio = dim, depth, heads, float(mlp_ratio)
        # the MAE decoder is not released; its sizes document the pretraining run
        self.decoder_dim, self.decoder_depth, self.decoder_heads, self.target = (decoder_dim, decoder_depth,
                                                                                 decoder_heads, target)
        self.layer_norm_eps = float(layer_norm_eps)
        # what pixel_values hold: "rgb" (ImageNet-normalised colour) or "motion" (the temporal-contrast view of
        # stabilised grey faces); the release's processor (processing_spotmae.py) makes either
        self.input = input
        self.hidden_act = hidden_act
        self.position_embedding = position_embedding
        self.image_mean, self.image_std = list(image_mean), list(image_std)
        # spotting heads (SpotMAEForSpotting only): one head per granularity
        self.granularities = list(granularities)
        self.head_rows, self.head_hidden, self.head_kernel = head_rows, head_hidden, head_kernel
        self.head_channels = list(head_channels)
        super().__init__(**kwargs)
        self._check()

    def _check(self) -> None:
        if self.hidden_act != "gelu" or self.position_embedding != "sinusoid_raster":
            raise ValueError(f"unsupported hidden_act={self.hidden_act!r} / position_embedding="
                             f"{self.position_embedding!r}: this code implements 'gelu' and 'sinusoid_raster'")
        grid = self.token_grid
        if self.frames % self.tubelet or self.img_size % self.patch or self.dim % self.heads:
            raise ValueError("frames % tubelet, img_size % patch and dim % heads must all be 0")
        if any(g % r for g, r in zip(grid, self.region)):
            raise ValueError(f"region {self.region} does not divide the token grid {grid}")

    @property
    def token_grid(self) -> tuple[int, int, int]:
        side = self.img_size // self.patch
        return (self.frames // self.tubelet, side, side)


class SpotMAESpottingConfig(SpotMAEConfig):
    """The same fields; its own class (and model_type) because transformers' Auto classes map one config class
    to one model class per process: sharing SpotMAEConfig would let an encoder release loaded first decide
    which class a spotter release loads as."""

    model_type = "spotmae_lgi_spotting"

    def __init__(self, **kwargs):  # explicit: transformers builds its own __init__ for subclasses without one
        super().__init__(**kwargs)

    def _check(self) -> None:
        super()._check()
        if not self.granularities:
            raise ValueError("granularities is empty: a spotting model needs at least one head")


def video_layout(pixel_values: torch.Tensor, config: SpotMAEConfig) -> torch.Tensor:
    """pixel_values [B, frames, channels, size, size] (transformers' video layout, as VideoMAE's) -> the
    [B, channels, frames, size, size] the 3-d patch embedding convolves. The layout of pretrain's LGIEncoder (and
    of releases before this convention), [B, channels, frames, ...], is refused by name rather than misread."""
    c, t, s = config.in_chans, config.frames, config.img_size
    if pixel_values.dim() == 5 and tuple(pixel_values.shape[1:]) == (t, c, s, s):
        return pixel_values.transpose(1, 2)
    if pixel_values.dim() == 5 and tuple(pixel_values.shape[1:]) == (c, t, s, s):
        raise ValueError(f"pixel_values {list(pixel_values.shape)} is [batch, channels, frames, height, width]; this "
                         f"model takes transformers' video layout [batch, frames, channels, height, width] = "
                         f"[B, {t}, {c}, {s}, {s}], as VideoMAE does: pass pixel_values.transpose(1, 2)")
    raise ValueError(f"pixel_values must be [batch, frames, channels, height, width] = [B, {t}, {c}, {s}, {s}], "
                     f"got {list(pixel_values.shape)}")


# Copied from pretrain.lgi_former.sinusoid_positions
def sinusoid_positions(n: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sinusoidal table [n, dim] over the raster token index (as in VideoMAE)."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    rate = torch.pow(10000.0, -2.0 * (torch.arange(dim) // 2).double() / dim)
    angle = pos * rate[None, :]
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


# Adapted from data.clips.masking.region_order (numpy there): the same order, in torch
def region_order(grid, region) -> torch.Tensor:
    """Raster indices sorted by region (regions numbered in raster order), raster order inside a region."""
    (gt, gh, gw), (rt, rh, rw) = grid, region
    t, h, w = torch.meshgrid(torch.arange(gt) // rt, torch.arange(gh) // rh, torch.arange(gw) // rw, indexing="ij")
    region_id = ((t * (gh // rh) + h) * (gw // rw) + w).reshape(-1)
    return torch.argsort(region_id, stable=True)


# Copied from pretrain.lgi_former.Attention
class Attention(nn.Module):
    """Multi-head attention with VideoMAE's bias style: q and v biases, no k bias.

    Self-attention uses the fused qkv weight; cross-attention takes q from the queries and k, v from the
    context with the same weights, so both kinds have the same parameters.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        *lead, n, dim = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        if context is None:
            q, k, v = F.linear(x, self.qkv.weight, bias).chunk(3, dim=-1)
        else:
            q = F.linear(x, self.qkv.weight[:dim], self.q_bias)
            k, v = F.linear(context, self.qkv.weight[dim:], bias[dim:]).chunk(2, dim=-1)
        q, k, v = (self._split_heads(t) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(-3, -2).reshape(*lead, n, dim))

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        *lead, n, dim = t.shape
        return t.reshape(*lead, n, self.heads, dim // self.heads).transpose(-3, -2)


class Mlp(nn.Module):
    """timm.layers.Mlp as pretrain.lgi_former builds it: fc1, exact GELU, fc2 (no dropout, no norm)."""

    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def stochastic_depth(rate: float) -> nn.Module:
    """Residual branches whole: stochastic depth is a training device (pretrain.lgi_former uses timm's DropPath,
    the identity in eval mode) and a release is built without it."""
    if rate:
        raise ValueError(f"drop_path {rate}: a release runs its blocks without stochastic depth")
    return nn.Identity()


# Copied from pretrain.lgi_former.LGIBlock
class LGIBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float, drop_path: float = 0.0):
        super().__init__()
        self.norm_local = nn.LayerNorm(dim, eps=eps)
        self.local_attn = Attention(dim, heads)
        self.norm_region = nn.LayerNorm(dim, eps=eps)
        self.region_attn = Attention(dim, heads)
        self.norm_query = nn.LayerNorm(dim, eps=eps)
        self.norm_context = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = Attention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = stochastic_depth(drop_path)

    def forward(self, local: torch.Tensor, regions: torch.Tensor):
        """local [B, R, V, D], regions [B, R, D] -> the same shapes."""
        b, r, v, d = local.shape
        seq = torch.cat([regions[:, :, None], local], dim=2)
        seq = seq + self.drop_path(self.local_attn(self.norm_local(seq)))
        regions, local = seq[:, :, 0], seq[:, :, 1:].reshape(b, r * v, d)
        regions = regions + self.drop_path(self.region_attn(self.norm_region(regions)))
        local = local + self.drop_path(self.cross_attn(self.norm_query(local), self.norm_context(regions)))
        tokens = torch.cat([regions, local], dim=1)
        tokens = tokens + self.drop_path(self.mlp(self.norm_mlp(tokens)))
        return tokens[:, r:].reshape(b, r, v, d), tokens[:, :r]


# Adapted from pretrain.lgi_former.LGIEncoder (forward_all): the same parameters and numbers; its fixed tables are
# built per call (see `tables`) and it can return every block's tokens (transformers' hidden_states)
class LGIEncoder(nn.Module):
    """pixel_values [B, T, C, H, W] -> every token's features [B, T', H', W', D] in time/raster order."""

    def __init__(self, config: SpotMAEConfig):
        super().__init__()
        self.config = config
        kernel = (config.tubelet, config.patch, config.patch)
        self.patch_embed = nn.Conv3d(config.in_chans, config.dim, kernel_size=kernel, stride=kernel)
        grid = config.token_grid
        num_regions = (grid[0] // config.region[0]) * (grid[1] // config.region[1]) * (grid[2] // config.region[2])
        self.region_tokens = nn.Parameter(torch.zeros(num_regions, config.dim))
        self.blocks = nn.ModuleList(LGIBlock(config.dim, config.heads, config.mlp_ratio, config.layer_norm_eps)
                                    for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)

    def tables(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(position table [N, D], region order [R, P]), rebuilt from the config: fixed, never in checkpoints.

        Built on demand rather than as buffers: from_pretrained creates the model on the meta device and only
        fills tensors found in the checkpoint, so a non-persistent buffer computed in __init__ comes back as
        uninitialised memory (seen with transformers 5.23).
        """
        grid = self.config.token_grid
        n = grid[0] * grid[1] * grid[2]
        order = region_order(grid, self.config.region).to(device)
        # in the weights' dtype, as the training model's buffer is once the model is cast (e.g. to bf16)
        pos = sinusoid_positions(n, self.config.dim).to(device, self.patch_embed.weight.dtype)
        return pos, order.view(self.region_tokens.shape[0], -1)

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False):
        """(features [B, T', H', W', D] after the final norm, and with output_hidden_states the tokens [B, N, D]
        in raster order after the embedding and after each block, before the norm; else None)."""
        pos, order = self.tables(pixel_values.device)
        video = video_layout(pixel_values, self.config)
        tokens = self.patch_embed(video).flatten(2).transpose(1, 2) + pos
        b, d = tokens.shape[0], tokens.shape[-1]
        raster = torch.argsort(order.flatten())
        hidden = [tokens] if output_hidden_states else None
        local = tokens[:, order]  # [B, R, P, D], region by region
        regions = self.region_tokens.to(local.dtype).expand(b, -1, -1)
        for block in self.blocks:
            local, regions = block(local, regions)
            if hidden is not None:
                hidden.append(local.reshape(b, -1, d)[:, raster])
        local = self.norm(local)
        features = local.reshape(b, -1, d)[:, raster].view(b, *self.config.token_grid, d)
        return features, None if hidden is None else tuple(hidden)


# Copied from finetune.heads.model.pool_features
def pool_features(features: torch.Tensor, rows: int) -> torch.Tensor:
    """[B, T', H', W', D] -> [B, T', rows, D]: mean over width and over `rows` bands of height."""
    b, t, h, w, d = features.shape
    x = features.mean(dim=3)  # [B, T', H', D]
    x = F.adaptive_avg_pool1d(x.permute(0, 1, 3, 2).reshape(b * t, d, h), rows)  # [B*T', D, rows]
    return x.reshape(b, t, d, rows).permute(0, 1, 3, 2).contiguous()


# Copied from finetune.heads.model.SpottingHead with CHANNELS->SPOTTING_CHANNELS
class SpottingHead(nn.Module):
    def __init__(self, dim: int, rows: int = 2, hidden: int = 64, kernel: int = 3, tubelet: int = 2,
                 eps: float = 1e-5):
        super().__init__()
        self.rows, self.tubelet = rows, tubelet
        self.norm = nn.LayerNorm(rows * dim, eps=eps)  # the encoder's eps: a release builds both with one value
        self.temporal = nn.Conv1d(rows * dim, hidden, kernel, padding=kernel // 2)
        self.out = nn.Linear(hidden, len(SPOTTING_CHANNELS))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Time-ordered encoder features [B, T', H', W', D] -> logits [B, T' * tubelet, 4]."""
        return self.forward_pooled(pool_features(features, self.rows))

    def forward_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled features [B, T', rows, D] (cacheable for a frozen encoder) -> logits [B, T' * tubelet, 4]."""
        b, t = pooled.shape[:2]
        x = self.norm(pooled.reshape(b, t, -1))
        x = F.gelu(self.temporal(x.transpose(1, 2))).transpose(1, 2)  # [B, T', hidden]
        logits = self.out(x)
        return logits.repeat_interleave(self.tubelet, dim=1)


class SpotMAEPreTrainedModel(PreTrainedModel):
    config_class = SpotMAEConfig
    main_input_name = "pixel_values"
    base_model_prefix = "spotmae"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Fresh-model init (xavier linears, unit norms, small region tokens); loading replaces all of it."""
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, Attention):
            nn.init.zeros_(module.q_bias)
            nn.init.zeros_(module.v_bias)
        elif isinstance(module, LGIEncoder):
            nn.init.trunc_normal_(module.region_tokens, std=0.02)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' loading, then a hard error if any weight was missing, unexpected or misshapen."""
        wants_info = kwargs.pop("output_loading_info", False)
        # transformers raises on a shape mismatch without naming the tensor; let it collect them instead
        kwargs["ignore_mismatched_sizes"] = True
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        problems = {key: sorted(map(str, info.get(key) or ())) for key in
                    ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs", "conversion_errors")}
        problems = {key: names for key, names in problems.items() if names}
        if problems:
            where = args[0] if args else kwargs.get("pretrained_model_name_or_path")
            detail = "; ".join(f"{key}: {names[:5]}{' ...' if len(names) > 5 else ''}"
                               for key, names in problems.items())
            raise SpotMAELoadError(f"{where}: weights do not match {cls.__name__} built from config.json ({detail}); "
                                   f"re-export the release instead of loading partially initialised weights")
        return (model, info) if wants_info else model

    def _output_flags(self, output_hidden_states: bool | None, return_dict: bool | None) -> tuple[bool, bool]:
        """The call's choices, else the config's (transformers' convention)."""
        hidden = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return bool(hidden), bool(self.config.return_dict if return_dict is None else return_dict)


class SpotMAEModel(SpotMAEPreTrainedModel):
    """The pretrained LGI-Former encoder."""

    def __init__(self, config: SpotMAEConfig):
        super().__init__(config)
        self.encoder = LGIEncoder(config)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs):
        """pixel_values [B, frames, channels, size, size] -> last_hidden_state [B, T' * H' * W', dim] (after the
        final norm) and, with output_hidden_states, hidden_states: depth + 1 tensors [B, T' * H' * W', dim]."""
        output_hidden_states, return_dict = self._output_flags(output_hidden_states, return_dict)
        grid, hidden = self.encoder(pixel_values, output_hidden_states)
        last = grid.flatten(1, 3)
        if not return_dict:
            return (last,) if hidden is None else (last, hidden)
        return BaseModelOutput(last_hidden_state=last, hidden_states=hidden)


@dataclass
class SpottingOutput(ModelOutput):
    """logits [B, frames, channels] of one granularity's head; features [B, T', H', W', D]; hidden_states as
    SpotMAEModel's."""

    logits: torch.Tensor | None = None
    features: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class SpotMAEForSpotting(SpotMAEPreTrainedModel):
    """The encoder and one spotting head per granularity (config.granularities)."""

    config_class = SpotMAESpottingConfig

    def __init__(self, config: SpotMAESpottingConfig):
        super().__init__(config)
        self.encoder = LGIEncoder(config)
        self.heads = nn.ModuleDict({name: SpottingHead(config.dim, config.head_rows, config.head_hidden,
                                                       config.head_kernel, config.tubelet, config.layer_norm_eps)
                                    for name in config.granularities})
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, granularity: str | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None, **kwargs):
        if granularity is None:
            if len(self.heads) != 1:
                raise ValueError(f"pass granularity=one of {list(self.heads)}")
            granularity = next(iter(self.heads))
        if granularity not in self.heads:
            raise ValueError(f"unknown granularity {granularity!r}; this model has {list(self.heads)}")
        output_hidden_states, return_dict = self._output_flags(output_hidden_states, return_dict)
        features, hidden = self.encoder(pixel_values, output_hidden_states)
        logits = self.heads[granularity](features)
        if not return_dict:
            return (logits, features) if hidden is None else (logits, features, hidden)
        return SpottingOutput(logits=logits, features=features, hidden_states=hidden)

"""SpotMAE LGI-Former in Hugging Face transformers conventions (config + models in this one file).

This file is copied verbatim into every released folder. `trust_remote_code=True` imports it from that folder,
where nothing of the SpotMAE project exists, so it imports only torch and transformers: a release loads with
`pip install torch transformers safetensors` and no SpotMAE checkout. The price is a second copy of the
encoder's forward; tests/test_release.py proves it computes the same numbers as pretrain/lgi_former.py
(parameter names are identical, so state dicts move between the two without renaming).

    from transformers import AutoModel
    model = AutoModel.from_pretrained("path/or/repo", trust_remote_code=True)
    out = model(pixel_values)           # [B, 3, frames, img_size, img_size], ImageNet-normalised
    out.last_hidden_state               # [B, T' * H' * W', dim], tokens in time/raster order

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
        # stabilised grey faces, see the model card)
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


def sinusoid_positions(n: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal table [n, dim] over the raster token index; computed in float64, stored float32."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    rate = torch.pow(10000.0, -2.0 * (torch.arange(dim) // 2).double() / dim)
    angle = pos * rate[None, :]
    return torch.where(torch.arange(dim) % 2 == 0, torch.sin(angle), torch.cos(angle)).float()


def region_order(grid, region) -> torch.Tensor:
    """Raster indices sorted by region (regions numbered in raster order), raster order inside a region."""
    (gt, gh, gw), (rt, rh, rw) = grid, region
    t, h, w = torch.meshgrid(torch.arange(gt) // rt, torch.arange(gh) // rh, torch.arange(gw) // rw, indexing="ij")
    region_id = ((t * (gh // rh) + h) * (gw // rw) + w).reshape(-1)
    return torch.argsort(region_id, stable=True)


class Attention(nn.Module):
    """Multi-head attention with q and v biases and no k bias; cross-attention reuses the same weights."""

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
        q, k, v = (t.reshape(*t.shape[:-1], self.heads, dim // self.heads).transpose(-3, -2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(-3, -2).reshape(*lead, n, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, int(dim * ratio))
        self.fc2 = nn.Linear(int(dim * ratio), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LGIBlock(nn.Module):
    """Pre-LN: attention inside each region, among region tokens, local->region cross-attention, then MLP."""

    def __init__(self, config: SpotMAEConfig):
        super().__init__()
        dim, eps = config.dim, config.layer_norm_eps
        self.norm_local = nn.LayerNorm(dim, eps=eps)
        self.local_attn = Attention(dim, config.heads)
        self.norm_region = nn.LayerNorm(dim, eps=eps)
        self.region_attn = Attention(dim, config.heads)
        self.norm_query = nn.LayerNorm(dim, eps=eps)
        self.norm_context = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = Attention(dim, config.heads)
        self.norm_mlp = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, config.mlp_ratio)

    def forward(self, local: torch.Tensor, regions: torch.Tensor):
        """local [B, R, V, D], regions [B, R, D] -> the same shapes."""
        b, r, v, d = local.shape
        seq = torch.cat([regions[:, :, None], local], dim=2)
        seq = seq + self.local_attn(self.norm_local(seq))
        regions, local = seq[:, :, 0], seq[:, :, 1:].reshape(b, r * v, d)
        regions = regions + self.region_attn(self.norm_region(regions))
        local = local + self.cross_attn(self.norm_query(local), self.norm_context(regions))
        tokens = torch.cat([regions, local], dim=1)
        tokens = tokens + self.mlp(self.norm_mlp(tokens))
        return tokens[:, r:].reshape(b, r, v, d), tokens[:, :r]


class LGIEncoder(nn.Module):
    """Video [B, C, T, H, W] -> every token's features [B, T', H', W', D] in time/raster order."""

    def __init__(self, config: SpotMAEConfig):
        super().__init__()
        self.config = config
        kernel = (config.tubelet, config.patch, config.patch)
        self.patch_embed = nn.Conv3d(config.in_chans, config.dim, kernel_size=kernel, stride=kernel)
        grid = config.token_grid
        num_regions = (grid[0] // config.region[0]) * (grid[1] // config.region[1]) * (grid[2] // config.region[2])
        self.region_tokens = nn.Parameter(torch.zeros(num_regions, config.dim))
        self.blocks = nn.ModuleList(LGIBlock(config) for _ in range(config.depth))
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

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        expected = (cfg.in_chans, cfg.frames, cfg.img_size, cfg.img_size)
        if pixel_values.dim() != 5 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(f"pixel_values must be [B, {', '.join(map(str, expected))}], "
                             f"got {list(pixel_values.shape)}")
        pos, order = self.tables(pixel_values.device)
        tokens = self.patch_embed(pixel_values).flatten(2).transpose(1, 2) + pos
        b, d = tokens.shape[0], tokens.shape[-1]
        local = tokens[:, order]  # [B, R, P, D], region by region
        regions = self.region_tokens.to(local.dtype).expand(b, -1, -1)
        for block in self.blocks:
            local, regions = block(local, regions)
        local = self.norm(local)
        raster = local.reshape(b, -1, d)[:, torch.argsort(order.flatten())]
        return raster.view(b, *cfg.token_grid, d)


class SpottingHead(nn.Module):
    """Features [B, T', H', W', D] -> per-frame logits [B, T' * tubelet, channels].

    Mean over width and over `rows` bands of height, LayerNorm, a temporal convolution over tubelets, GELU, a
    linear layer; each tubelet's logits are repeated for its frames.
    """

    def __init__(self, config: SpotMAEConfig):
        super().__init__()
        self.rows, self.tubelet = config.head_rows, config.tubelet
        width = config.head_rows * config.dim
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.temporal = nn.Conv1d(width, config.head_hidden, config.head_kernel, padding=config.head_kernel // 2)
        self.out = nn.Linear(config.head_hidden, len(config.head_channels))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, t, h, w, d = features.shape
        x = features.mean(dim=3).permute(0, 1, 3, 2).reshape(b * t, d, h)
        x = F.adaptive_avg_pool1d(x, self.rows).reshape(b, t, d, self.rows).permute(0, 1, 3, 2)
        x = self.norm(x.reshape(b, t, -1))
        x = F.gelu(self.temporal(x.transpose(1, 2))).transpose(1, 2)
        return self.out(x).repeat_interleave(self.tubelet, dim=1)


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


class SpotMAEModel(SpotMAEPreTrainedModel):
    """The pretrained LGI-Former encoder."""

    def __init__(self, config: SpotMAEConfig):
        super().__init__(config)
        self.encoder = LGIEncoder(config)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, return_dict: bool | None = None, **kwargs):
        grid = self.encoder(pixel_values)
        hidden = grid.flatten(1, 3)
        if return_dict is False:
            return (hidden,)
        return BaseModelOutput(last_hidden_state=hidden)


@dataclass
class SpottingOutput(ModelOutput):
    """logits [B, frames, channels] of one granularity's head; features [B, T', H', W', D]."""

    logits: torch.Tensor | None = None
    features: torch.Tensor | None = None


class SpotMAEForSpotting(SpotMAEPreTrainedModel):
    """The encoder and one spotting head per granularity (config.granularities)."""

    config_class = SpotMAESpottingConfig

    def __init__(self, config: SpotMAESpottingConfig):
        super().__init__(config)
        self.encoder = LGIEncoder(config)
        self.heads = nn.ModuleDict({name: SpottingHead(config) for name in config.granularities})
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, granularity: str | None = None,
                return_dict: bool | None = None, **kwargs):
        if granularity is None:
            if len(self.heads) != 1:
                raise ValueError(f"pass granularity=one of {list(self.heads)}")
            granularity = next(iter(self.heads))
        if granularity not in self.heads:
            raise ValueError(f"unknown granularity {granularity!r}; this model has {list(self.heads)}")
        features = self.encoder(pixel_values)
        logits = self.heads[granularity](features)
        if return_dict is False:
            return (logits, features)
        return SpottingOutput(logits=logits, features=features)

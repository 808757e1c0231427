"""LGI-Former encoder: tubelet embedding, fixed sinusoidal positions, one region token per region, LGI blocks.

Tokens are handled region by region as [B, R, V, D] (R regions, V tokens kept per region). Because masks keep
the same number of visible tokens in every region, the visible tokens are gathered with fixed-size index
tensors (argsort of the mask), never with boolean indexing, so a training step has static shapes and no
host-device sync.

One LGI block (pre-LN, residual around each step, each residual branch with stochastic depth):
  1. self-attention inside each region over [region token, its tokens]
  2. self-attention among the R region tokens of a clip
  3. cross-attention from every local token (query) to the clip's region tokens (keys/values)
  4. one MLP over all tokens (region tokens included)

The named configs are timm models (as VideoMAE registers its own): `timm.create_model("lgi_base")` builds the
encoder, `timm.list_models("lgi_*")` lists them, and pretrain.model_config.named_config reads their configs from
timm's registry. The encoder has timm's hooks for trainers (`no_weight_decay`, `group_matcher` for layer-wise lr
decay, `set_grad_checkpointing`) and uses timm's Mlp and DropPath. Attention stays ours: its q/v-bias layout is
what the release and peer-import formats hold.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import DropPath, Mlp
from timm.models import register_model
from torch import nn

from data.clips.masking import check_mask, region_order
from data.common.errors import ConfigError, DataError
from pretrain.model_config import ModelConfig


def sinusoid_positions(n: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sinusoidal table [n, dim] over the raster token index (as in VideoMAE)."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    rate = torch.pow(10000.0, -2.0 * (torch.arange(dim) // 2).double() / dim)
    angle = pos * rate[None, :]
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


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


def stochastic_depth(rate: float) -> nn.Module:
    """timm's DropPath for a residual branch (identity at rate 0, and in eval mode)."""
    return DropPath(rate) if rate > 0 else nn.Identity()


def block_rates(cfg: ModelConfig) -> list[float]:
    """Drop-path rate per block, rising linearly from 0 to cfg.drop_path (the VideoMAE / timm schedule)."""
    return [cfg.drop_path * i / max(1, cfg.depth - 1) for i in range(cfg.depth)]


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


class LGIEncoder(nn.Module):
    """Video [B, C, T, H, W] -> token features; visible-only (MAE) or all tokens (fine-tuning)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Conv3d(cfg.in_chans, cfg.dim, kernel_size=(cfg.tubelet, cfg.patch, cfg.patch),
                                     stride=(cfg.tubelet, cfg.patch, cfg.patch))
        self.region_tokens = nn.Parameter(torch.zeros(cfg.num_regions, cfg.dim))
        self.blocks = nn.ModuleList(LGIBlock(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.layer_norm_eps, rate)
                                    for rate in block_rates(cfg))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.layer_norm_eps)
        self.grad_checkpointing = False
        # fixed tables are rebuilt from the config, so they stay out of checkpoints
        self.register_buffer("pos", sinusoid_positions(cfg.num_tokens, cfg.dim), persistent=False)
        order = torch.from_numpy(region_order(cfg.token_grid, cfg.region))
        self.register_buffer("region_order", order.view(cfg.num_regions, cfg.tokens_per_region), persistent=False)
        self.register_buffer("raster_from_region", torch.argsort(order), persistent=False)
        # torch's trunc_normal_, not timm's: the two draw different numbers from one seed (torch 2.14), and
        # torch's is what every encoder so far was initialised with
        nn.init.trunc_normal_(self.region_tokens, std=0.02)
        self.apply(init_linear)

    # ---- timm's model hooks (vision_transformer.py style), for trainers

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters kept out of weight decay besides biases and norms: the learned region tokens."""
        return {"region_tokens"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer groups for layer-wise lr decay: the embedding, each block, then the final norm as a layer of its
        own (as VideoMAE's layer decay counts it; timm's ViT folds it into the last block). Coarse or not, one
        group per block."""
        return dict(stem=r"^region_tokens|^patch_embed", blocks=r"^blocks\.(\d+)", norm=r"^norm")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in backward instead of keeping its activations (less memory, more compute)."""
        self.grad_checkpointing = enable

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        """[B, C, T, H, W] -> tokens with positions [B, N, D] in raster order (t, h, w)."""
        cfg = self.cfg
        expected = (cfg.in_chans, cfg.frames, cfg.img_size, cfg.img_size)
        if video.dim() != 5 or tuple(video.shape[1:]) != expected:
            raise DataError(f"video must be [B, {', '.join(map(str, expected))}], got {list(video.shape)}",
                            field="video", fix="resize/crop clips to the model config's frames and img_size")
        tokens = self.patch_embed(video).flatten(2).transpose(1, 2)
        # no cast: under autocast the fp32 table keeps the residual stream in fp32 (as timm/VideoMAE do);
        # a model converted to bf16 (DeepSpeed bf16) has a bf16 table and stays bf16
        return tokens + self.pos

    def split_mask(self, mask: torch.Tensor, validate: bool = False):
        """mask bool [B, N] (True = masked) -> (visible raster index [B, R, V], masked raster index [B, M]).

        Shapes depend only on the config. The per-region count is checked on the device without a host sync
        (torch._assert_async); `validate=True` checks on the host with a readable error (debug path).
        """
        cfg = self.cfg
        if mask.dtype != torch.bool or mask.dim() != 2 or mask.shape[1] != cfg.num_tokens:
            raise DataError(f"mask must be bool [B, {cfg.num_tokens}], got {mask.dtype} {list(mask.shape)}",
                            field="mask", fix="build masks with data.clips.masking.RegionMaskGenerator")
        by_region = mask[:, self.region_order]  # [B, R, P]
        if validate:
            check_mask(mask.cpu().numpy(), cfg.token_grid, cfg.region, cfg.visible_per_region)
        kept = cfg.tokens_per_region - by_region.sum(-1)
        torch._assert_async((kept == cfg.visible_per_region).all(),
                            "every region must keep visible_per_region visible tokens")
        # stable sort puts visible (0) before masked (1) and keeps raster order within each group
        local = torch.argsort(by_region.to(torch.uint8), dim=-1, stable=True)[..., :cfg.visible_per_region]
        visible = self.region_order.expand(mask.shape[0], -1, -1).gather(2, local)
        masked = torch.argsort((~mask).to(torch.uint8), dim=-1, stable=True)[:, :cfg.num_masked]
        return visible, masked

    def forward(self, video: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Encode only the visible tokens: visible raster index [B, R, V] -> features [B, R, V, D]."""
        tokens = self.embed(video)
        b, r, v = visible.shape
        local = tokens.gather(1, visible.reshape(b, r * v, 1).expand(-1, -1, tokens.shape[-1]))
        return self._run(local.view(b, r, v, -1))

    def forward_all(self, video: torch.Tensor) -> torch.Tensor:
        """Encode every token (no mask) -> features [B, T', H', W', D] in time/raster order."""
        tokens = self.embed(video)
        b, d = tokens.shape[0], tokens.shape[-1]
        local = self._run(tokens[:, self.region_order])  # [B, R, P, D] region order
        raster = local.reshape(b, -1, d)[:, self.raster_from_region]
        return raster.view(b, *self.cfg.token_grid, d)

    def _run(self, local: torch.Tensor) -> torch.Tensor:
        regions = self.region_tokens.to(local.dtype).expand(local.shape[0], -1, -1)
        for block in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                # the RNG state is replayed when the block is recomputed: the same paths are dropped
                local, regions = torch.utils.checkpoint.checkpoint(block, local, regions, use_reentrant=False)
            else:
                local, regions = block(local, regions)
        return self.norm(local)


def init_linear(module: nn.Module) -> None:
    """VideoMAE's init: xavier-uniform linear weights, zero biases, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["LGIEncoder", "LGIBlock", "Attention", "sinusoid_positions", "init_linear", "count_params"]


# ---- the named configs, registered with timm (register_model adds each name to __all__) ------------------

TIMM_ARGUMENTS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")  # what timm.create_model always passes


def create_encoder(cfg: ModelConfig, pretrained: bool = False, **changes) -> LGIEncoder:
    """An encoder of `cfg` with fields changed (`drop_path_rate`, timm's name, is `drop_path`)."""
    if pretrained:
        raise ConfigError("no pretrained weights are hosted for the lgi_* models", field="pretrained",
                          fix="load a checkpoint or release with finetune.encoder.load.load_encoder")
    changes = {k: v for k, v in changes.items() if k not in TIMM_ARGUMENTS}
    if "drop_path_rate" in changes:
        changes["drop_path"] = changes.pop("drop_path_rate")
    try:
        return LGIEncoder(dataclasses.replace(cfg, **changes))
    except TypeError as e:  # a keyword that is no ModelConfig field
        raise ConfigError(str(e), field="name", fix=f"fields are {[f.name for f in dataclasses.fields(cfg)]}") from None


@register_model
def lgi_base(pretrained: bool = False, **kwargs) -> LGIEncoder:
    """The seed (the ModelConfig defaults): 16 x 160 x 160 clips, dim 512, depth 16, 8 heads; decoder 4 x 384."""
    return create_encoder(ModelConfig(name="lgi_base"), pretrained, **kwargs)


@register_model
def lgi_tiny(pretrained: bool = False, **kwargs) -> LGIEncoder:
    """dim 128, depth 2, 4 heads; decoder 1 x 96: pretrains in minutes on a CPU."""
    return create_encoder(ModelConfig(name="lgi_tiny", dim=128, depth=2, heads=4, decoder_dim=96, decoder_depth=1,
                                      decoder_heads=3), pretrained, **kwargs)

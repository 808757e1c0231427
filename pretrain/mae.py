"""VideoMAE with the LGI-Former encoder: encode visible tokens, decode, predict masked tokens, MSE loss.

    model = VideoMAE(named_config("lgi_tiny"))
    out = model(video, mask)   # video [B, 3, T, H, W] ImageNet-normalised (cfg.input "rgb") or the motion view
                               # (data.faces.motion_view); mask bool [B, N], True = masked; a loader-made
                               # target [B, N, patch_values] may be passed as `target`
    out["loss"]                # scalar float32: MSE over masked tokens
    out["floor"]               # scalar float32: the MSE of the best constant prediction for them (each
                               # value's batch mean: the trivial floor, ~1 for the normalised targets)
    out["pred"]                # [B, M, patch_values], masked tokens in raster order
    out["masked_index"]        # [B, M] raster index of each predicted token

The decoder input is [encoded visible tokens, mask tokens]; every token gets the decoder position of its own
raster index (the encoder returns visible tokens region by region, so raster positions by sequence slot
would be wrong for half of them).

Parameter accounting (the base config, lgi_base), following VideoMAE's module split:
  encoder  = patch embed + region tokens + 16 LGI blocks + final norm      = 84,874,752 (84.9 M)
  decoder  = 4 ViT blocks + norm + head (384 -> 1536)                     =  7,688,448 (7.7 M)
             without the head                                             =  7,097,088 (7.1 M)
  wrapper  = encoder_to_decoder (512 -> 384, no bias) + mask token        =    196,992
An LGI block holds three attentions (qkv weight, q and v biases, output projection: 4 d^2 + 3 d each),
an MLP with ratio 4 and five LayerNorms.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from pretrain.lgi_former import Attention, LGIEncoder, init_linear, sinusoid_positions
from pretrain.model_config import ModelConfig
from data.clips.targets import make_target


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MAEDecoder(nn.Module):
    """Plain ViT blocks over all tokens; predicts pixel values for the last `num_masked` tokens only."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.blocks = nn.ModuleList(ViTBlock(cfg.decoder_dim, cfg.decoder_heads, cfg.mlp_ratio, cfg.layer_norm_eps)
                                    for _ in range(cfg.decoder_depth))
        self.norm = nn.LayerNorm(cfg.decoder_dim, eps=cfg.layer_norm_eps)
        self.head = nn.Linear(cfg.decoder_dim, cfg.patch_values)

    def forward(self, x: torch.Tensor, num_masked: int) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, -num_masked:]))


class VideoMAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = LGIEncoder(cfg)
        self.encoder_to_decoder = nn.Linear(cfg.dim, cfg.decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))
        self.decoder = MAEDecoder(cfg)
        self.register_buffer("decoder_pos", sinusoid_positions(cfg.num_tokens, cfg.decoder_dim), persistent=False)
        self.encoder_to_decoder.apply(init_linear)
        self.decoder.apply(init_linear)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """timm's hook: the encoder's learned tokens and the mask token stay out of weight decay."""
        return {f"encoder.{name}" for name in self.encoder.no_weight_decay()} | {"mask_token"}

    def forward(self, video: torch.Tensor, mask: torch.Tensor, target: torch.Tensor | None = None,
                validate: bool = False) -> dict:
        """`target`: every token's target [B, N, patch_values] when the loader made it (the "flow" target; the
        motion input's others), else it is made here from `video`. `validate=True` checks the mask on the host
        with a readable error (slow; debug only)."""
        visible, masked = self.encoder.split_mask(mask, validate=validate)
        encoded = self.encoder(video, visible)  # [B, R, V, D], region order
        pred = self.decode(encoded, visible.flatten(1), masked)
        if target is None:
            target = make_target(video, self.cfg.target, self.cfg.tubelet, self.cfg.patch, self.cfg.input)
        target = target.float().gather(1, masked[..., None].expand(-1, -1, target.shape[-1]))
        loss = F.mse_loss(pred.float(), target)
        # the best constant prediction (each value's batch mean): ~1 for the normalised targets
        floor = (target - target.mean((0, 1), keepdim=True)).square().mean()
        return {"loss": loss, "floor": floor, "pred": pred, "masked_index": masked}

    def decode(self, encoded: torch.Tensor, visible: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """encoded [B, R, V, D] with raster index visible [B, R*V]; masked [B, M] -> predictions [B, M, values]."""
        x_vis = self.encoder_to_decoder(encoded.flatten(1, 2)) + self.decoder_pos[visible]
        x_mask = (self.mask_token + self.decoder_pos[masked]).to(x_vis.dtype)
        return self.decoder(torch.cat([x_vis, x_mask], dim=1), masked.shape[1])

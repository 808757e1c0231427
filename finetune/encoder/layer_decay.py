"""Which encoder layers learn when an encoder is fine-tuned, and at which learning rate: the VideoMAE / MAE-DFER
recipe of layer-wise lr decay, through timm's hooks (group_matcher, no_weight_decay) and param groups. Shared by
the spotting heads' partial / full modes (finetune.heads.train) and encoder tuning (finetune.encoder.tuning).
"""
from __future__ import annotations

from timm.models import group_parameters
from timm.optim import param_groups_layer_decay


def freeze_early_layers(encoder, cfg) -> None:
    """partial: only the last `trainable_blocks` blocks and the final norm learn; full: the whole encoder.
    Layers are the encoder's group_matcher groups (0 = embedding, i + 1 = block i, then the final norm)."""
    layers = group_parameters(encoder, encoder.group_matcher(), reverse=True)
    first = 0 if cfg.mode == "full" else max(layers.values()) - cfg.trainable_blocks
    for name, param in encoder.named_parameters():
        param.requires_grad_(layers[name] >= first)


def encoder_param_groups(encoder, cfg) -> list[dict]:
    """Layer-wise lr decay over the encoder's group_matcher layers, lr * layer_decay ** (last layer - layer), no
    weight decay on biases, norms and its no_weight_decay() tensors (timm's hooks and param groups). Layers that
    `cfg` (mode, trainable_blocks, lr, layer_decay, weight_decay) freezes are left out."""
    freeze_early_layers(encoder, cfg)
    groups = param_groups_layer_decay(encoder, cfg.weight_decay, encoder.no_weight_decay(),
                                      layer_decay=cfg.layer_decay)
    for group in groups:
        group["lr"] = cfg.lr * group.pop("lr_scale", 1.0)
    return groups

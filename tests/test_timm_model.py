"""The LGI-Former encoder as a timm model: the registry, stochastic depth, gradient checkpointing, trainer hooks."""
from __future__ import annotations

import pytest
import timm
import torch
from timm.models import group_parameters

from data.common.config import load_config
from data.common.errors import ConfigError
from pretrain.lgi_former import LGIEncoder, count_params
from pretrain.mae import VideoMAE
from pretrain.model_config import ModelConfig, named_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 8 frames of 64 x 64: token grid 4 x 4 x 4, regions (2, 2, 4) -> 4 regions of 16 tokens
SMALL = dict(frames=8, img_size=64, region=(2, 2, 4), visible_per_region=4)


def clip(cfg: ModelConfig, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, cfg.frames, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(seed))


def test_named_configs_are_timm_models():
    assert timm.list_models("lgi_*") == ["lgi_base", "lgi_tiny"]
    base = timm.create_model("lgi_base", pretrained=False)
    assert isinstance(base, LGIEncoder) and base.cfg == ModelConfig() == named_config("lgi_base")
    assert count_params(base) == 84_874_752
    deeper = timm.create_model("lgi_tiny", depth=3, drop_path_rate=0.1)  # config fields, and timm's name
    assert deeper.cfg == named_config("lgi_tiny", depth=3, drop_path=0.1)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        timm.create_model("lgi_tiny", pretrained=True)
    with pytest.raises(ConfigError, match="unknown model config 'resnet50'"):  # a timm model, but not ours
        named_config("resnet50")


def test_timm_built_encoder_equals_the_project_built_one():
    cfg = named_config("lgi_tiny", **SMALL)
    torch.manual_seed(0)
    ours = LGIEncoder(cfg).eval()
    torch.manual_seed(0)
    theirs = timm.create_model("lgi_tiny", **SMALL).eval()
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.state_dict().items())
    x = clip(cfg)
    with torch.no_grad():
        diff = (ours.forward_all(x) - theirs.forward_all(x)).abs().max().item()
    assert diff == 0.0


def test_reading_a_named_config_draws_no_random_numbers():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    named_config("lgi_base")
    load_config(None, ModelConfig, ["name=lgi_tiny", "depth=3"])
    assert torch.equal(torch.get_rng_state(), before)


def test_drop_path_rises_over_depth_and_acts_only_in_training():
    cfg = named_config("lgi_tiny", **SMALL, depth=3, drop_path=0.2)
    torch.manual_seed(0)
    encoder = LGIEncoder(cfg)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in encoder.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2])
    plain = LGIEncoder(named_config("lgi_tiny", **SMALL, depth=3))
    plain.load_state_dict(encoder.state_dict())  # drop path adds no weights
    x = clip(cfg)
    with torch.no_grad():
        assert torch.equal(encoder.eval().forward_all(x), plain.eval().forward_all(x))
        encoder.train()
        torch.manual_seed(1)
        first = encoder.forward_all(x)
        torch.manual_seed(2)
        assert not torch.equal(first, encoder.forward_all(x))  # other samples' branches dropped
    with pytest.raises(ConfigError, match="drop_path"):
        named_config("lgi_tiny", drop_path=1.0)


@pytest.mark.parametrize("drop_path", [0.0, 0.3])
def test_gradient_checkpointing_gives_the_same_gradients(drop_path):
    cfg = named_config("lgi_tiny", **SMALL, drop_path=drop_path)
    torch.manual_seed(0)
    encoder = LGIEncoder(cfg).train()
    x = clip(cfg)
    grads = []
    for enable in (False, True):
        encoder.set_grad_checkpointing(enable)
        encoder.zero_grad(set_to_none=True)
        torch.manual_seed(3)  # the same drop-path draws; checkpointing replays them when it recomputes
        encoder.forward_all(x).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in encoder.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.equal(g, grads[1][n]) for n, g in grads[0].items())


def test_trainer_hooks_group_layers_and_name_tokens():
    encoder = LGIEncoder(named_config("lgi_tiny", **SMALL))
    layers = group_parameters(encoder, encoder.group_matcher(), reverse=True)
    assert layers["patch_embed.weight"] == layers["region_tokens"] == 0
    assert layers["blocks.0.mlp.fc1.weight"] == 1 and layers["blocks.1.norm_local.bias"] == 2
    assert layers["norm.weight"] == 3
    assert encoder.no_weight_decay() == {"region_tokens"}
    assert VideoMAE(encoder.cfg).no_weight_decay() == {"encoder.region_tokens", "mask_token"}

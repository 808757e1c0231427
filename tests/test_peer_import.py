"""MAE-DFER checkpoint import: the name mapping both ways, the peer's forward semantics, the pickle allow-list."""
from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
import torch.nn.functional as F

from data.common.errors import ConfigError, DataError
from launch import peer_import
from pretrain.lgi_former import sinusoid_positions
from pretrain.mae import VideoMAE
from pretrain.model_config import named_config

CFG = named_config("lgi_tiny", heads=2)  # dim 128 / 2 heads = head dim 64, what the importer infers
PEER_ARGS = dict(attn_type="local_global", lg_region_size=[2, 5, 10], lg_first_attn_type="self",
                 lg_third_attn_type="cross", num_frames=16, input_size=160, mask_ratio=0.9,
                 use_frame_diff_as_target=True, model="pretrain_videomae_base_dim512_local_global_attn_depth16")


@pytest.fixture(scope="module")
def trained():
    """A VideoMAE with non-trivial weights everywhere (biases and norms too), so a mix-up cannot hide."""
    torch.manual_seed(0)
    model = VideoMAE(CFG)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def peer_file(tmp_path, model, args=None, extra=None, name="checkpoint-99.pth"):
    """A checkpoint in the peer's layout: encoder.* in its names, its decoder, optimizer, epoch and Namespace args."""
    state = peer_import.encoder_to_peer_state(model.encoder.state_dict())
    state.update({k: v for k, v in model.state_dict().items() if not k.startswith("encoder.")})
    state.update(extra or {})
    path = tmp_path / name
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}, "epoch": 99,
                "scaler": {"scale": 65536.0}, "args": argparse.Namespace(**(args or PEER_ARGS))}, path)
    return path


def test_schema_and_round_trip(trained):
    ours = trained.encoder.state_dict()
    peer = peer_import.encoder_to_peer_state(ours)
    d = CFG.dim
    assert peer["encoder.lg_region_tokens"].shape == (8, d)
    assert peer["encoder.patch_embed.proj.weight"].shape == (d, 3, 2, 16, 16)
    for n in range(CFG.depth):
        for attn in ("first_attn", "second_attn", "third_attn"):
            assert peer[f"encoder.blocks.{n}.{attn}.q.weight"].shape == (d, d)
            assert peer[f"encoder.blocks.{n}.{attn}.kv.weight"].shape == (2 * d, d)
            for p in ("q_bias", "v_bias", "proj.weight", "proj.bias"):
                assert f"encoder.blocks.{n}.{attn}.{p}" in peer
        for norm in ("first_attn_norm0", "second_attn_norm0", "third_attn_norm0", "third_attn_norm1", "norm2"):
            assert f"encoder.blocks.{n}.{norm}.weight" in peer
    assert len(peer) == len(ours) + 3 * CFG.depth  # each fused qkv became q + kv
    back = peer_import.peer_to_encoder_state(peer)
    assert back.keys() == ours.keys()
    assert all(torch.equal(back[k], ours[k]) for k in ours)


def peer_attention(x, context, w, prefix, heads):
    """The peer's GeneralAttention: q from x, k/v from context, q and v biases, explicit softmax."""
    b, n, c = x.shape
    q = F.linear(x, w[prefix + "q.weight"], w[prefix + "q_bias"])
    kv_bias = torch.cat([torch.zeros_like(w[prefix + "v_bias"]), w[prefix + "v_bias"]])
    k, v = F.linear(context, w[prefix + "kv.weight"], kv_bias).chunk(2, dim=-1)
    split = lambda t: t.reshape(b, -1, heads, c // heads).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    attn = (q * (c // heads) ** -0.5 @ k.transpose(-2, -1)).softmax(-1)
    return F.linear((attn @ v).transpose(1, 2).reshape(b, n, c), w[prefix + "proj.weight"], w[prefix + "proj.bias"])


def peer_forward(w, video, heads, eps=1e-6):
    """The peer's unmasked LGI-Former encoder written from its description, on peer-named weights.

    Output order is the peer's: region by region, (time, raster) inside a region.
    """
    norm = lambda x, name: F.layer_norm(x, x.shape[-1:], w[name + ".weight"], w[name + ".bias"], eps)  # noqa: E731
    x = F.conv3d(video, w["encoder.patch_embed.proj.weight"], w["encoder.patch_embed.proj.bias"], stride=(2, 16, 16))
    x = x.flatten(2).transpose(1, 2)
    b, _, c = x.shape
    x = x + sinusoid_positions(x.shape[1], c)
    # 'b (nt t nhw hw) c -> b (nt nhw) (t hw) c' with regions (2, 5, 10) on the 8 x 10 x 10 grid
    x = x.view(b, 4, 2, 2, 50, c).permute(0, 1, 3, 2, 4, 5).reshape(b, 8, 100, c)
    tokens = w["encoder.lg_region_tokens"].expand(b, -1, -1)[:, :, None]
    x = torch.cat([tokens, x], dim=2).reshape(b * 8, 101, c)
    for n in range(len({k.split(".")[2] for k in w if k.startswith("encoder.blocks.")})):
        p = f"encoder.blocks.{n}."
        h = norm(x, p + "first_attn_norm0")
        x = x + peer_attention(h, h, w, p + "first_attn.", heads)
        m = x[:, 0].reshape(b, 8, c)
        h = norm(m, p + "second_attn_norm0")
        m = m + peer_attention(h, h, w, p + "second_attn.", heads)
        local = x[:, 1:].reshape(b, 800, c)
        local = local + peer_attention(norm(local, p + "third_attn_norm0"), norm(m, p + "third_attn_norm1"), w,
                                       p + "third_attn.", heads)
        x = torch.cat([m.reshape(b * 8, 1, c), local.reshape(b * 8, 100, c)], dim=1)
        h = norm(x, p + "norm2")
        x = x + F.linear(F.gelu(F.linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"])),
                         w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"])
    return norm(x[:, 1:].reshape(b, 800, c), "encoder.norm")


def test_imported_encoder_computes_the_peer_forward(trained, tmp_path):
    path = peer_file(tmp_path, trained)
    encoder = peer_import.load_peer_encoder(path)
    cfg = encoder.cfg
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.region, cfg.target) == (128, 2, 2, (2, 5, 10), "frame_diff")
    assert cfg.visible_per_region == 10 and cfg.decoder_dim == CFG.decoder_dim
    assert {m.eps for m in encoder.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}
    peer, _ = peer_import.read_peer_checkpoint(path)
    video = torch.randn(1, 3, 16, 160, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = encoder.forward_all(video)  # [B, 8, 10, 10, D], time order
        want = peer_forward(peer, video, heads=2)
    ours_peer_order = ours.reshape(1, 4, 2, 2, 50, -1).permute(0, 1, 3, 2, 4, 5).reshape(1, 800, -1)
    assert torch.allclose(ours_peer_order, want, atol=1e-5, rtol=0)
    # the comparison can tell a mix-up: swapping the two cross-attention norms changes the output
    swapped = dict(peer)
    for p in ("weight", "bias"):
        swapped[f"encoder.blocks.0.third_attn_norm0.{p}"] = peer[f"encoder.blocks.0.third_attn_norm1.{p}"]
        swapped[f"encoder.blocks.0.third_attn_norm1.{p}"] = peer[f"encoder.blocks.0.third_attn_norm0.{p}"]
    with torch.no_grad():
        assert not torch.allclose(peer_forward(swapped, video, heads=2), want, atol=1e-3)


class Payload:
    """A class outside the allow-list; unpickling it would create a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_with_other_class_is_refused(trained, tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"model": peer_import.encoder_to_peer_state(trained.encoder.state_dict()), "args": Payload(marker)},
               path)
    with pytest.raises(DataError) as err:
        peer_import.read_peer_checkpoint(path)
    text = str(err.value)
    assert str(path) in text and "refused to unpickle" in text and "argparse.Namespace" in text
    assert "open" in text  # names the global it refused
    assert not marker.exists()


def test_variant_and_schema_errors_name_the_field(trained, tmp_path):
    args = dict(PEER_ARGS, lg_third_attn_type="self")
    with pytest.raises(ConfigError, match="args.lg_third_attn_type"):
        peer_import.load_peer_encoder(peer_file(tmp_path, trained, args=args, name="a.pth"))
    extra = {"encoder.blocks.0.gamma_1": torch.ones(CFG.dim)}
    with pytest.raises(DataError, match="encoder.blocks.0.gamma_1"):
        peer_import.load_peer_encoder(peer_file(tmp_path, trained, extra=extra, name="b.pth"))
    peer = peer_import.encoder_to_peer_state(trained.encoder.state_dict())
    del peer["encoder.blocks.1.second_attn.v_bias"]
    with pytest.raises(DataError, match="encoder.blocks.1.second_attn.v_bias"):
        peer_import.peer_to_encoder_state(peer)
    narrow = dict(PEER_ARGS, lg_region_size=[2, 5, 5])
    with pytest.raises((ConfigError, DataError), match="lg_region"):
        peer_import.load_peer_encoder(peer_file(tmp_path, trained, args=narrow, name="c.pth"))


def test_release_of_a_peer_checkpoint_keeps_its_layer_norm_eps(trained, tmp_path):
    from launch import release

    path = peer_file(tmp_path, trained)
    out = tmp_path / "release"
    assert release.main(["--checkpoint", str(path), "--out", str(out), "--peer"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert math.isclose(config["layer_norm_eps"], 1e-6) and config["heads"] == 2
    model = release.load_release(out)
    video = torch.randn(1, 3, 16, 160, 160, generator=torch.Generator().manual_seed(2))
    encoder = peer_import.load_peer_encoder(path)
    with torch.no_grad():
        assert torch.equal(model(video.transpose(1, 2)).last_hidden_state, encoder.forward_all(video).flatten(1, 3))

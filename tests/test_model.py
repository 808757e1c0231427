import numpy as np
import pytest
import torch

from data.clips.masking import RegionMaskGenerator, region_of_token
from data.clips.targets import make_target
from data.common.config import load_config
from data.common.errors import ConfigError, DataError
from pretrain.lgi_former import count_params
from pretrain.mae import VideoMAE
from pretrain.model_config import ModelConfig, named_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 8 frames of 64 x 64: token grid 4 x 4 x 4, regions (2, 2, 4) -> 4 regions of 16 tokens, 4 visible each
SMALL = dict(frames=8, img_size=64, region=(2, 2, 4), visible_per_region=4)


def small_cfg(**changes) -> ModelConfig:
    return named_config("lgi_tiny", **{**SMALL, **changes})


def masks(cfg: ModelConfig, batch: int, seed: int = 0, mode: str | None = None) -> torch.Tensor:
    gen = RegionMaskGenerator(cfg.token_grid, cfg.region, cfg.visible_per_region, mode or cfg.mask_mode)
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([gen(rng) for _ in range(batch)]))


def smooth_video(cfg: ModelConfig, batch: int, seed: int = 0) -> torch.Tensor:
    """Moving sinusoidal gratings: learnable structure, unlike white noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(cfg.frames).view(-1, 1, 1).float()
    y = torch.arange(cfg.img_size).view(1, -1, 1).float()
    x = torch.arange(cfg.img_size).view(1, 1, -1).float()
    clips = []
    for _ in range(batch):
        f, phase, speed = torch.rand(3, 3, generator=g)
        chans = [torch.sin(0.05 + 0.3 * f[c] * x + 0.2 * phase[c] * y + speed[c] * t) for c in range(3)]
        clips.append(torch.stack(chans))
    return torch.stack(clips)


def make_transparent(model: VideoMAE) -> None:
    """Turn every block into the identity (zero residual branches) so only embeddings and positions remain."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in ("attn.proj", "mlp.fc2")):
                p.zero_()


def nearest(rows: torch.Tensor, table: torch.Tensor):
    """Index of the nearest table row for each row, and the distance to it (table rows are far apart)."""
    spread = torch.cdist(table.double(), table.double()) + torch.eye(len(table)) * 1e9
    assert spread.min() > 0.05  # so a 1e-3 match identifies one row
    best = torch.cdist(rows.double(), table.double()).min(dim=1)
    return best.indices, best.values


def test_seed_parameter_counts_match_the_design():
    model = VideoMAE(named_config("lgi_base"))
    encoder, decoder = count_params(model.encoder), count_params(model.decoder)
    head = count_params(model.decoder.head)
    assert abs(encoder / 1e6 - 84.9) <= 0.1, encoder
    assert abs(decoder / 1e6 - 7.7) <= 0.1, decoder  # VideoMAE's decoder module: blocks + norm + head
    assert encoder == 84_874_752 and decoder == 7_688_448 and decoder - head == 7_097_088
    assert count_params(model) - encoder - decoder == 512 * 384 + 384  # encoder_to_decoder + mask token


def test_every_visible_token_gets_its_own_position_in_encoder_and_decoder():
    torch.manual_seed(0)
    cfg = small_cfg()
    model = VideoMAE(cfg).eval()
    make_transparent(model)
    n = cfg.num_tokens
    # every tubelet is a constant c_r and the patch embedding maps it to c_r * u: content names the token
    u = torch.randn(cfg.dim)
    with torch.no_grad():
        model.encoder.patch_embed.weight.copy_(u.view(-1, 1, 1, 1, 1).expand_as(model.encoder.patch_embed.weight)
                                               / (3 * cfg.tubelet * cfg.patch ** 2))
        model.encoder.patch_embed.bias.zero_()
        model.mask_token.normal_()
    c = torch.linspace(-2, 2, n)
    video = c.view(1, 1, *cfg.token_grid, 1, 1, 1)
    video = video.expand(2, 3, -1, -1, -1, cfg.tubelet, cfg.patch, cfg.patch)  # b c t h w ft ph pw
    video = video.permute(0, 1, 2, 5, 3, 6, 4, 7).reshape(2, 3, cfg.frames, cfg.img_size, cfg.img_size)
    mask = masks(cfg, 2, seed=3)

    captured = {}
    model.decoder.blocks[0].register_forward_pre_hook(lambda mod, args: captured.update(x=args[0]))
    with torch.no_grad():
        visible, _ = model.encoder.split_mask(mask)
        encoded = model.encoder(video, visible)  # [B, R, V, D]
        out = model(video, mask)

    ln = torch.nn.functional.layer_norm
    enc_table = ln(c[:, None] * u + model.encoder.pos, (cfg.dim,))
    dec_vis_table = enc_table @ model.encoder_to_decoder.weight.T + model.decoder_pos
    dec_mask_table = model.mask_token[0] + model.decoder_pos
    regions = region_of_token(cfg.token_grid, cfg.region)
    for b in range(2):
        want_visible = np.flatnonzero(~mask[b].numpy())
        idx, dist = nearest(encoded[b].reshape(-1, cfg.dim), enc_table)
        assert dist.max() < 1e-3  # content and position belong to the same token
        assert sorted(idx.tolist()) == want_visible.tolist()
        # rows come region by region
        assert np.array_equal(regions[idx.numpy()], np.repeat(np.arange(cfg.num_regions), cfg.visible_per_region))

        dec_in = captured["x"][b]
        idx, dist = nearest(dec_in[:cfg.num_visible], dec_vis_table)
        assert dist.max() < 1e-3 and sorted(idx.tolist()) == want_visible.tolist()
        want_masked = np.flatnonzero(mask[b].numpy())
        idx, dist = nearest(dec_in[cfg.num_visible:], dec_mask_table)
        assert dist.max() < 1e-3 and idx.tolist() == want_masked.tolist()
        assert out["masked_index"][b].tolist() == want_masked.tolist()
        expected_pred = model.decoder.head(ln(dec_mask_table[want_masked], (cfg.decoder_dim,)))
        torch.testing.assert_close(out["pred"][b], expected_pred, atol=1e-4, rtol=1e-4)


def test_forward_all_puts_each_token_feature_at_its_own_place():
    torch.manual_seed(1)
    cfg = small_cfg()
    model = VideoMAE(cfg).eval()
    make_transparent(model)
    video = torch.randn(2, 3, cfg.frames, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        feats = model.encoder.forward_all(video)
        conv = torch.nn.functional.conv3d(video, model.encoder.patch_embed.weight, model.encoder.patch_embed.bias,
                                          stride=(cfg.tubelet, cfg.patch, cfg.patch))  # [B, D, T', H', W']
        pos = model.encoder.pos.T.reshape(cfg.dim, *cfg.token_grid)
        expected = torch.nn.functional.layer_norm((conv + pos).permute(0, 2, 3, 4, 1), (cfg.dim,))
    assert feats.shape == (2, *cfg.token_grid, cfg.dim)
    torch.testing.assert_close(feats, expected, atol=1e-4, rtol=1e-4)


def test_forward_all_agrees_with_the_visible_path_when_nothing_is_masked():
    torch.manual_seed(2)
    cfg = small_cfg(visible_per_region=16, mask_mode="random")
    model = VideoMAE(cfg).eval()
    video = torch.randn(1, 3, cfg.frames, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        visible, _ = model.encoder.split_mask(torch.zeros(1, cfg.num_tokens, dtype=torch.bool))
        by_region = model.encoder(video, visible)
        feats = model.encoder.forward_all(video).reshape(1, -1, cfg.dim)
    torch.testing.assert_close(feats[0, visible.flatten()], by_region.reshape(-1, cfg.dim), atol=1e-5, rtol=1e-5)


def test_masked_content_does_not_reach_the_encoder():
    torch.manual_seed(3)
    cfg = small_cfg()
    model = VideoMAE(cfg).eval()
    video = torch.randn(2, 3, cfg.frames, cfg.img_size, cfg.img_size)
    mask = masks(cfg, 2, seed=5)
    token_mask = mask.view(2, 1, cfg.token_grid[0], 1, cfg.token_grid[1], 1, cfg.token_grid[2], 1)
    token_mask = token_mask.expand(-1, 3, -1, cfg.tubelet, -1, cfg.patch, -1, cfg.patch).reshape(video.shape)
    noisy = torch.where(token_mask, torch.randn_like(video) * 5, video)
    changed_visible = video.clone()
    changed_visible[~token_mask] += 1.0
    with torch.no_grad():
        visible, _ = model.encoder.split_mask(mask)
        base = model.encoder(video, visible)
        torch.testing.assert_close(model.encoder(noisy, visible), base, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(model.encoder(changed_visible, visible), base, atol=1e-3)


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(4)
    cfg = small_cfg()
    model = VideoMAE(cfg)
    video, mask = smooth_video(cfg, 2), masks(cfg, 2, seed=6)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = model(video, mask)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.75 * losses[0], losses


def test_bf16_autocast_forward_and_backward_on_cpu():
    cfg = small_cfg(target="frame_diff")
    model = VideoMAE(cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(smooth_video(cfg, 2), masks(cfg, 2))
    assert out["pred"].dtype == torch.bfloat16 and out["loss"].dtype == torch.float32
    assert out["pred"].shape == (2, cfg.num_masked, cfg.patch_values)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.encoder.patch_embed.weight.grad.abs().sum() > 0
    # a model converted to bf16 (as DeepSpeed's bf16 mode does) runs without autocast
    model.to(torch.bfloat16)
    out = model(smooth_video(cfg, 2).to(torch.bfloat16), masks(cfg, 2))
    assert out["pred"].dtype == torch.bfloat16 and torch.isfinite(out["loss"])


def test_pixel_target_normalises_each_tubelet_per_channel():
    cfg = small_cfg()
    video = torch.randn(1, 3, cfg.frames, cfg.img_size, cfg.img_size)
    target = make_target(video, "pixel", cfg.tubelet, cfg.patch)
    assert target.shape == (1, cfg.num_tokens, cfg.patch_values)
    t, h, w = 1, 2, 3  # a token away from the origin checks the raster layout
    raster = (t * cfg.token_grid[1] + h) * cfg.token_grid[2] + w
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)
    cube = (video[0] * std + mean)[:, 2 * t:2 * t + 2, 16 * h:16 * h + 16, 16 * w:16 * w + 16]
    flat = cube.reshape(3, -1)
    norm = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-6)
    torch.testing.assert_close(target[0, raster], norm.T.reshape(-1), atol=1e-4, rtol=1e-4)


def test_frame_difference_target_is_half_appearance_half_motion():
    cfg = small_cfg()
    still = torch.randn(1, 3, 1, cfg.img_size, cfg.img_size).expand(-1, -1, cfg.frames, -1, -1)
    target = make_target(still, "frame_diff", cfg.tubelet, cfg.patch)
    assert target.shape == (1, cfg.num_tokens, cfg.patch_values)
    halves = target.view(1, cfg.num_tokens, 2, -1)  # (frame, row, col, channel): frame 0 first
    assert halves[:, :, 1].abs().max() == 0  # nothing moves
    pixel = make_target(still, "pixel", cfg.tubelet, cfg.patch).view(1, cfg.num_tokens, 2, -1)
    # appearance half: frame 0 normalised over its own pixels; same mean as the 2-frame pixel target
    appearance = halves[:, :, 0].reshape(1, cfg.num_tokens, -1, 3)
    torch.testing.assert_close(appearance.mean(2), torch.zeros(1, cfg.num_tokens, 3), atol=1e-5, rtol=0)
    assert torch.corrcoef(torch.stack([halves[0, :, 0].flatten(), pixel[0, :, 0].flatten()]))[0, 1] > 0.999
    ramp = still + torch.linspace(0, 1, cfg.img_size).view(1, 1, 1, 1, -1) * (torch.arange(cfg.frames) % 2).view(
        1, 1, -1, 1, 1)
    motion = make_target(ramp, "frame_diff", cfg.tubelet, cfg.patch).view(1, cfg.num_tokens, 2, 16, 16, 3)[:, :, 1]
    # the difference is a horizontal ramp: rising along columns, the same on every row and channel
    assert (motion[..., 1:, :] - motion[..., :-1, :] > 0).all()
    torch.testing.assert_close(motion, motion[:, :, :1].expand_as(motion))


@pytest.mark.parametrize("changes, field, text", [
    (dict(frames=15), "frames", "not divisible by tubelet"),
    (dict(img_size=150), "img_size", "not divisible by patch"),
    (dict(region=(3, 5, 10)), "region", "does not divide the token grid"),
    (dict(region=(2, 4, 10)), "region", "does not divide the token grid"),
    (dict(heads=3), "dim", "not divisible by heads"),
    (dict(visible_per_region=7), "visible_per_region", "multiple of 2"),
])
def test_bad_geometry_raises_config_error(changes, field, text):
    with pytest.raises(ConfigError, match=text) as err:
        named_config("lgi_base", **changes)
    assert err.value.field == field


def test_configs_load_from_yaml_and_reject_unknown_names(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("frames: 8\nimg_size: 64\nregion: [2, 2, 4]\nvisible_per_region: 4\n")
    cfg = load_config(path, ModelConfig, ["dim=128", "depth=2"])
    assert cfg.token_grid == (4, 4, 4) and cfg.num_regions == 4 and cfg.num_masked == 48 and cfg.depth == 2
    assert cfg.heads == named_config("lgi_base").heads  # keys left out come from the default model
    tiny = load_config(path, ModelConfig, ["name=lgi_tiny", "depth=3"])  # ... or from the named config given
    assert tiny == named_config("lgi_tiny", **SMALL, depth=3)
    with pytest.raises(ConfigError, match="unknown model config 'lgi_huge'"):
        named_config("lgi_huge")
    with pytest.raises(ConfigError, match="name: unknown model config 'small'") as err:
        load_config(path, ModelConfig, ["name=small"])
    assert "lgi_tiny" in str(err.value)  # the known names are listed
    with pytest.raises(ConfigError, match="does not divide"):
        load_config(path, ModelConfig, ["region=[3, 2, 4]"])


def test_a_pretraining_yaml_model_section_starts_from_its_named_config():
    from pretrain.config import load_pretrain_config

    cfg = load_pretrain_config("configs/pretrain/lgi_tiny.yaml", ["model.depth=3"])
    assert cfg.model == named_config("lgi_tiny", depth=3)  # `model: {name: lgi_tiny}` + one change
    assert cfg.model.geometry.token_grid == (8, 10, 10)  # what the loader cuts: the model's own geometry


def test_bad_masks_and_videos_are_refused():
    cfg = small_cfg()
    model = VideoMAE(cfg)
    video = smooth_video(cfg, 1)
    mask = masks(cfg, 1)
    unbalanced = mask.clone()
    unbalanced[0, torch.nonzero(~mask[0])[0, 0]] = True  # region 0 now keeps 3
    with pytest.raises(DataError, match="region 0 has 3 visible tokens"):
        model(video, unbalanced, validate=True)
    with pytest.raises(RuntimeError, match="visible_per_region"):  # the device-side check (sync on CPU)
        model(video, unbalanced)
    with pytest.raises(DataError, match="mask must be bool"):
        model(video, mask.float())
    with pytest.raises(DataError, match="video must be"):
        model(video[:, :, :6], mask)


def analytic_forward_flops(cfg: ModelConfig) -> int:
    """Matmul/conv/attention FLOPs of one clip's MAE forward, from the architecture (multiply-add = 2)."""
    d, dd, r, v, n, m = cfg.dim, cfg.decoder_dim, cfg.num_regions, cfg.visible_per_region, cfg.num_tokens, \
        cfg.num_masked
    hid, dhid, s = int(d * cfg.mlp_ratio), int(dd * cfg.mlp_ratio), 1 + v

    def attention(queries: int, keys: int, dim: int) -> int:  # projections + QK^T + AV
        return 2 * queries * dim * dim * 2 + 2 * keys * dim * dim * 2 + 4 * queries * keys * dim

    block = (r * attention(s, s, d)                       # 1. inside each region (region token + visible)
             + attention(r, r, d)                         # 2. among region tokens
             + attention(r * v, r, d)                     # 3. local queries -> region tokens
             + 2 * (r + r * v) * d * hid * 2)             # 4. MLP over all tokens
    encoder = 2 * n * d * cfg.patch_values + cfg.depth * block
    decoder = (2 * r * v * d * dd + cfg.decoder_depth * (attention(n, n, dd) + 2 * n * dd * dhid * 2)
               + 2 * m * dd * cfg.patch_values)
    return encoder + decoder


def test_flop_count_matches_the_architecture():
    from pretrain.flops import count_flops, example_batch, param_report

    for cfg in (small_cfg(), small_cfg(region=(2, 4, 4), visible_per_region=8, decoder_depth=2)):
        model = VideoMAE(cfg)
        video, mask = example_batch(cfg, 2)
        counted = count_flops(model, video, mask)
        assert counted["gflop_per_clip_forward"] * 1e9 == pytest.approx(analytic_forward_flops(cfg), rel=1e-9)
        assert counted["gflop_per_clip_backward"] > counted["gflop_per_clip_forward"]
        params = param_report(model)
        assert params["total_params"] == sum(p.numel() for p in model.parameters())


def test_flops_cli_prints_one_json_line_and_refuses_bad_geometry(tmp_path, capsys):
    import json

    from data.common.cli import run_main
    from pretrain.flops import main

    small = ["frames=8", "img_size=64", "region=[2, 2, 4]", "visible_per_region=4"]
    assert run_main(main, ["--name", "lgi_tiny", *small]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    cfg = small_cfg()
    assert row["config"] == "lgi_tiny" and row["visible_tokens"] == cfg.num_visible
    assert row["gflop_per_clip_forward"] * 1e9 == pytest.approx(analytic_forward_flops(cfg), rel=1e-9)
    path = tmp_path / "pretrain.yaml"
    path.write_text("model:\n  frames: 15\n")
    assert run_main(main, ["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "frames" in err and "not divisible by tubelet" in err

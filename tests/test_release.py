"""`python -m launch release`: transformers export (VideoMAE's input layout, BaseModelOutput, a processor that a
torch + transformers client loads), strict loading, model card, fine-tuning from a release, push."""
from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from data.common.cli import run_main
from data.common.errors import ConfigError, DataError
from finetune.encoder.load import load_encoder, save_encoder
from launch import release
from pretrain.lgi_former import LGIEncoder
from pretrain.model_config import named_config

RESULTS = {"metrics": {"step": 37, "loss": 0.6125},
           "ablation": {"pretrained, frozen": {"megc": {
               "macro": {"tp": 3, "fp": 1, "fn": 1, "precision": 0.75, "recall": 0.75, "f1": 0.75},
               "micro": {"tp": 1, "fp": 3, "fn": 2, "precision": 0.25, "recall": 0.3333, "f1": 0.2857},
               "overall": {"tp": 4, "fp": 4, "fn": 3, "precision": 0.5, "recall": 0.5714, "f1": 0.5333}}}}}
TOKEN = "hf_spotmaeTestSecret0123456789"


def perturbed_encoder(seed: int = 0) -> LGIEncoder:
    """A tiny encoder whose biases and norms are far from their init: a weight dropped or zeroed shows."""
    torch.manual_seed(seed)
    encoder = LGIEncoder(named_config("lgi_tiny"))
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return encoder.eval()


def video(seed: int, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 160, 160, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(training encoder, its checkpoint folder with results.json, the release folder)."""
    root = tmp_path_factory.mktemp("release")
    encoder = perturbed_encoder()
    source = save_encoder(encoder, root / "encoder")
    (source / "results.json").write_text(json.dumps(RESULTS))
    out = root / "release"
    assert release.main(["--checkpoint", str(source), "--out", str(out)]) == 0
    return encoder, source, out


def test_export_round_trip_is_exact(exported):
    encoder, _, out = exported
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                     "modeling_spotmae.py", "preprocessor_config.json",
                                                     "processing_spotmae.py", "release.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "spotmae_lgi"
    assert config["auto_map"]["AutoModel"] == "modeling_spotmae.SpotMAEModel"
    assert config["layer_norm_eps"] == encoder.norm.eps == 1e-5
    assert (config["dim"], config["depth"], config["heads"], config["region"]) == (128, 2, 4, [2, 5, 10])
    model = release.load_release(out)
    assert type(model).__name__ == "SpotMAEModel" and "transformers_modules" in type(model).__module__
    x = video(7, batch=2)
    with torch.no_grad():
        assert torch.equal(model(x.transpose(1, 2)).last_hidden_state, encoder.forward_all(x).flatten(1, 3))
    assert release.is_complete(out)


def test_model_card_reports_run_and_ablation(exported):
    card = (exported[2] / "README.md").read_text()
    assert "library_name: transformers" in card and "trust_remote_code=True" in card
    assert "Optimizer steps: 37" in card and "0.6125" in card
    assert "| pretrained, frozen | 0.7500 | 0.2857 | 0.5333 | 0.5000 | 0.5714 |" in card
    assert "| `layer_norm_eps` | `1e-05` |" in card


def tampered_copy(out, tmp_path, change) -> Path:
    folder = tmp_path / "tampered"
    shutil.copytree(out, folder)
    weights = load_file(str(folder / "model.safetensors"))
    change(weights)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize("what, change", [
    ("missing", lambda w: w.pop("encoder.blocks.0.local_attn.q_bias")),
    ("unexpected", lambda w: w.__setitem__("encoder.blocks.0.extra_bias", torch.zeros(128))),
    ("mismatched", lambda w: w.__setitem__("encoder.blocks.1.cross_attn.v_bias", torch.zeros(64))),
])
def test_tampered_weights_fail_loudly(exported, tmp_path, what, change):
    folder = tampered_copy(exported[2], tmp_path, change)
    with pytest.raises(ValueError) as err:
        release.load_release(folder)
    assert type(err.value).__name__ == "SpotMAELoadError"
    assert f"{what}_keys" in str(err.value) and str(folder) in str(err.value)


def test_finetune_accepts_a_release_folder(exported):
    encoder, _, out = exported
    loaded = load_encoder(out)  # the config comes from the release
    x = video(3)
    with torch.no_grad():
        assert torch.equal(loaded.forward_all(x), encoder.forward_all(x))


def test_spotter_release_matches_the_spotter(tmp_path):
    from finetune import store
    from finetune.heads.config import FinetuneConfig
    from finetune.heads.train import build_heads

    cfg = FinetuneConfig()
    spotter = build_heads(perturbed_encoder(1), cfg).eval()
    folder = store.save_spotter(spotter, cfg, tmp_path / "spotter")
    out = tmp_path / "release"
    assert release.main(["--checkpoint", str(folder), "--out", str(out)]) == 0
    model = release.load_release(out)
    assert type(model).__name__ == "SpotMAEForSpotting" and list(model.heads) == ["micro", "macro"]
    x = video(5)
    with torch.no_grad():
        for g in ("micro", "macro"):
            assert torch.equal(model(x.transpose(1, 2), granularity=g).logits, spotter(x, g))
    assert "spotting heads for micro, macro" in (out / "README.md").read_text()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_push_without_network_fails_after_a_complete_export(exported, tmp_path, monkeypatch, capsys):
    _, source, _ = exported
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "pushed"
    argv = ["--checkpoint", str(source), "--out", str(out), "--push", "someone/spotmae-tiny",
            "--endpoint", f"http://127.0.0.1:{closed_port()}"]
    assert run_main(release.main, argv) == 2
    first = capsys.readouterr()
    assert release.is_complete(out)
    digest = json.loads((out / "release.json").read_text())["sha256"]
    assert run_main(release.main, argv) == 2  # retry: the finished export is kept, only the push runs
    second = capsys.readouterr()
    lines = second.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "push to someone/spotmae-tiny" in lines[0]
    assert "failed" in lines[0] and "re-run" in lines[0]
    assert [line for line in first.err.splitlines() if line.startswith("error: ")] == lines
    assert TOKEN not in first.out + first.err + second.out + second.err
    assert json.loads((out / "release.json").read_text())["sha256"] == digest
    assert not any(TOKEN.encode() in p.read_bytes() for p in out.iterdir())


def test_push_needs_a_token_and_honours_hf_endpoint(exported, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="HF_TOKEN"):
        release.push_folder(exported[2], "someone/spotmae-tiny")
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(DataError) as err:
        release.push_folder(exported[2], "someone/spotmae-tiny")
    assert endpoint in str(err.value) and TOKEN not in str(err.value)


def test_outputs_that_differ_are_refused():
    same = {"features": torch.zeros(1, 4)}
    assert release.check_same(same, {"features": torch.zeros(1, 4)}, "probe", "x") == 0.0
    with pytest.raises(DataError, match="outputs differ by 0.001"):
        release.check_same(same, {"features": torch.full((1, 4), 1e-3)}, "probe", "x")


def test_pretraining_data_summary_from_the_run_config(exported, ramp_shards, tmp_path):
    raw = yaml.safe_load((Path(__file__).parents[1] / "configs/pretrain/lgi_tiny.yaml").read_text())
    raw["data"]["shards"] = str(ramp_shards)
    config = tmp_path / "pretrain.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "release"
    argv = ["--checkpoint", str(exported[1]), "--out", str(out), "--pretrain-config", str(config),
            "--results", str(tmp_path / "none.json")]
    with pytest.raises(DataError, match="--results|none.json"):
        release.main(argv)
    assert not out.exists()
    (tmp_path / "none.json").write_text(json.dumps({"ablation": {"broken": {"megc": {"macro": {}}}}}))
    with pytest.raises(DataError, match="ablation.broken"):
        release.main(argv)
    (tmp_path / "none.json").write_text(json.dumps({"pretraining": {"steps": 12, "final_loss": 0.5}}))
    assert release.main(argv) == 0
    card = (out / "README.md").read_text()
    assert "clips 12, shards 6" in card and "source videos 4" in card and "Optimizer steps: 12" in card
    assert "source subjects 2" in card and "crop center" in card
    assert "global batch 4" in card


def test_bad_paths_name_the_flag(exported, tmp_path):
    with pytest.raises(DataError, match="--checkpoint"):
        release.main(["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "todo.txt").write_text("keep me")
    with pytest.raises(DataError, match="--out"):
        release.main(["--checkpoint", str(exported[1]), "--out", str(precious), "--force"])
    assert (precious / "todo.txt").read_text() == "keep me"


def test_motion_encoder_card_states_its_input_probe_and_label_efficiency(tmp_path):
    from data.common.config import replace

    torch.manual_seed(0)
    encoder = LGIEncoder(replace(named_config("lgi_tiny"), {"input": "motion", "target": "energy"})).eval()
    source = save_encoder(encoder, tmp_path / "encoder")
    results = {"metrics": {"step": 12000, "loss": 0.05, "floor": 0.06},
               "pretraining": {"probe": [{"encoder": "random init", "macro AUC": 0.848, "micro AUC": 0.623}],
                               "label_efficiency": [{"train subjects": 2, "overall gain": 0.05}]}}
    (source / "results.json").write_text(json.dumps(results))
    out = tmp_path / "release"
    assert release.main(["--checkpoint", str(source), "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "minus the window's first frame" in card and "ImageNet" not in card.split("## Config")[0]
    assert "Trivial floor of that loss (the best constant prediction): 0.06." in card
    assert "| random init | 0.848 | 0.623 |" in card and "| 2 | 0.05 |" in card
    assert json.loads((out / "config.json").read_text())["input"] == "motion"
    model = release.load_release(out)
    x = video(3)
    with torch.no_grad():
        assert torch.equal(model(x.transpose(1, 2)).last_hidden_state, encoder.forward_all(x).flatten(1, 3))


def test_pixel_values_in_videomae_layout_the_old_one_refused_and_every_block_returned(exported):
    from finetune.encoder.features import layer_tokens

    encoder, _, out = exported
    model = release.load_release(out)
    x = video(4)
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"\[batch, channels, frames, height, width\].*pixel_values.transpose"):
            model(x)  # [B, 3, T, H, W], the training model's layout
        with pytest.raises(ValueError, match=r"\[B, 16, 3, 160, 160\], got \[1, 16, 160, 160\]"):
            model(x[:, 0])
        output = model(x.transpose(1, 2), output_hidden_states=True)
        assert type(output).__name__ == "BaseModelOutput" and len(output.hidden_states) == encoder.cfg.depth + 1
        layers = ["embed", *(f"block{i}" for i in range(encoder.cfg.depth))]
        for hidden, layer in zip(output.hidden_states, layers):  # the layers the encoder channels can read
            assert torch.equal(hidden, layer_tokens(encoder, x, layer).flatten(1, 3)), layer
        assert model(x.transpose(1, 2)).hidden_states is None
        assert torch.equal(model(x.transpose(1, 2), return_dict=False)[0], output.last_hidden_state)


@pytest.fixture(scope="module")
def smiling_face(face_clip_factory, tmp_path_factory):
    """A 3.7 s aligned-face clip with a smile, as the project sees it: (stabilised stream, aligned RGB crops)."""
    from data.faces.face_video import FaceVideo
    from spotting.channels.encoder import EncoderChannelsConfig, stable_video
    from spotting.pipeline import aligned_crops

    path = face_clip_factory(tmp_path_factory.mktemp("smile") / "smile.mp4", 110, events=[(40, 70, "mouth", 3.0)],
                             noise=1.0)
    source = FaceVideo(path)
    return stable_video(source, EncoderChannelsConfig(), 16), aligned_crops(source, 160), source.fps


def project_windows(kind: str, encoder, smiling_face):
    """{granularity: (encoder input [W, 3, T, S, S], every layer's tokens)} as the project makes them: the encoder
    channels' motion view (finetune.encoder.features.encode_video) or the heads' RGB windows (video_curves)."""
    from data.faces.motion_view import stream_windows, view_stream
    from finetune.encoder.features import grid_windows, layer_tokens
    from finetune.heads.predict import window_batch
    from finetune.windows import default_granularities, video_windows
    from spotting.channels.encoder import EncoderChannelsConfig

    sv, crops, fps = smiling_face
    view = EncoderChannelsConfig().view
    out = {}
    for g in default_granularities():
        if kind == "motion":
            x = torch.from_numpy(stream_windows(view_stream(sv, view), grid_windows(len(sv.crops), sv.rate_hz, g, 16),
                                                view))
        else:
            x = window_batch(crops, video_windows("v", len(crops), fps, g.span_s, g.hop_s, 16))
        with torch.no_grad():
            layers = [layer_tokens(encoder, x, name) for name in ("embed", "block0", "block1", "final")]
        out[g.name] = x, layers
    return out


@pytest.mark.parametrize("kind", ["motion", "rgb"])
def test_processor_and_model_in_a_torch_and_transformers_client_give_the_projects_input_and_features(
        kind, smiling_face, tmp_path, one_torch_thread):
    """The release is used as a transformers user would, in an environment holding torch, transformers and their
    requirements only (tests/clean_env.py): AutoProcessor on the stabilised grey face (motion) or the aligned
    crops (rgb), AutoModel on its output. Both equal what the project feeds and gets from the encoder."""
    import numpy as np
    from clean_env import make_site, run

    from data.common.config import replace

    encoder = perturbed_encoder(2)
    if kind == "motion":
        encoder = LGIEncoder(replace(encoder.cfg, {"input": "motion"})).eval()
        encoder.load_state_dict(perturbed_encoder(2).state_dict())
    out = tmp_path / "release"
    assert release.main(["--checkpoint", str(save_encoder(encoder, tmp_path / "encoder")), "--out", str(out)]) == 0
    assert json.loads((out / "release.json").read_text())["processor"] == kind
    sv, crops, fps = smiling_face
    frames = tmp_path / "frames.npy"
    np.save(frames, sv.crops if kind == "motion" else crops)
    site = make_site(tmp_path / "clean" / "site")
    saved = tmp_path / "client.npz"
    proc = run(Path(__file__).with_name("clean_client.py"), site, out, frames, "none" if kind == "motion" else fps,
               saved, env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["importable"] == []  # nothing of SpotMAE, OpenCV, PIL, torchvision, timm, pandas, scipy
    assert report["classes"] == ["SpotMAEProcessor", "SpotMAEModel"] and report["output"] == "BaseModelOutput"
    assert all(m.startswith("transformers_modules.") for m in report["modules"])
    client = np.load(saved)
    for name, (x, layers) in project_windows(kind, encoder, smiling_face).items():
        assert np.array_equal(client[f"{name}.pixel_values"], x.numpy().transpose(0, 2, 1, 3, 4)), name
        assert np.array_equal(client[f"{name}.last_hidden_state"], layers[-1].flatten(1, 3).numpy()), name
        for hidden, tokens in zip(client[f"{name}.hidden_states"], layers[:-1]):
            assert np.array_equal(hidden, tokens.flatten(1, 3).numpy()), name

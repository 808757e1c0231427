"""`python -m launch release`: transformers export, strict loading, model card, fine-tuning from a release, push."""
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
                                                     "modeling_spotmae.py", "release.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "spotmae_lgi"
    assert config["auto_map"]["AutoModel"] == "modeling_spotmae.SpotMAEModel"
    assert config["layer_norm_eps"] == encoder.norm.eps == 1e-5
    assert (config["dim"], config["depth"], config["heads"], config["region"]) == (128, 2, 4, [2, 5, 10])
    model = release.load_release(out)
    assert type(model).__name__ == "SpotMAEModel" and "transformers_modules" in type(model).__module__
    x = video(7, batch=2)
    with torch.no_grad():
        assert torch.equal(model(x).last_hidden_state, encoder.forward_all(x).flatten(1, 3))
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
            assert torch.equal(model(x, granularity=g).logits, spotter(x, g))
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
        assert torch.equal(model(x).last_hidden_state, encoder.forward_all(x).flatten(1, 3))

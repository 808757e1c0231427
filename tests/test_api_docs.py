"""docs/api.md runs as written: every ```python block, in order, in one interpreter, in a folder laid out as the
page's table says: the tiny LOSO run as runs/loso_synthetic, the tiny synthetic set as runs/synthetic_ft, a face
video, its spotter released into a local Hub cache (offline), and a motion-view encoder release."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hub_cache import add_to_cache

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "api.md"
RUNNER = """import json, sys
namespace = {"__name__": "__main__"}
for i, code in enumerate(json.load(open(sys.argv[1]))):
    print(f"--- block {i}", flush=True)
    exec(compile(code, f"docs/api.md python block {i}", "exec"), namespace)
print("--- done", flush=True)
"""


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.fixture(scope="module")
def workspace(tiny_loso_run, tiny_spotting_set, tmp_path_factory) -> Path:
    import torch

    from data.common.assets import carphone_video
    from data.common.config import replace
    from data.common.video_io import read_frames, write_mp4
    from finetune.encoder.load import save_encoder
    from launch import release
    from pretrain.lgi_former import LGIEncoder
    from pretrain.model_config import named_config

    run, loso_out = tiny_loso_run
    assert run.returncode == 0, run.stderr[-3000:]
    root = tmp_path_factory.mktemp("docs")
    (root / "runs" / "release").mkdir(parents=True)
    (root / "runs" / "loso_synthetic").symlink_to(loso_out)
    (root / "runs" / "synthetic_ft").symlink_to(tiny_spotting_set)
    (root / "configs").symlink_to(REPO / "configs")
    write_mp4(root / "my_video.mp4", read_frames(carphone_video(), range(60)), 29.97)
    assert release.main(["--spotter", str(loso_out / "model"), "--out", str(root / "spotter_release")]) == 0
    add_to_cache(root / "hub", "spotmae/spotter-synthetic", root / "spotter_release")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        encoder = LGIEncoder(replace(named_config("lgi_tiny"), {"input": "motion"}))
    save_encoder(encoder, root / "motion_encoder")
    assert release.main(["--checkpoint", str(root / "motion_encoder"), "--out",
                         str(root / "runs" / "release" / "encoder")]) == 0
    return root


def test_the_page_names_only_what_the_workspace_holds(workspace):
    table = re.findall(r"^\| `([^`]+)` \|", PAGE.read_text(), flags=re.M)
    assert table and all((workspace / p).exists() or p == "spotmae/spotter-synthetic" for p in table), table
    assert len(python_blocks(PAGE.read_text())) >= 5


def test_every_python_block_of_the_page_runs(workspace):
    blocks = python_blocks(PAGE.read_text())
    (workspace / "blocks.json").write_text(json.dumps(blocks))
    (workspace / "run_blocks.py").write_text(RUNNER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_CACHE": str(workspace / "hub"), "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(workspace / "hf"), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "run_blocks.py", "blocks.json"], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=1500, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert [line for line in proc.stdout.splitlines() if line.startswith("--- ")] == \
        [f"--- block {i}" for i in range(len(blocks))] + ["--- done"]
    assert (workspace / "runs" / "loso_api" / "model" / "spotter.json").is_file()  # the LOSO example's spotter

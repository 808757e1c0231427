"""Pretraining: 2 Ray Train workers x DeepSpeed ZeRO-2 (gloo, CPU) on real synthetic shards, tiny LGI model.

One local Ray instance and one shard set serve the whole module; the uninterrupted run is shared by the
loss-falls test and the resume test. The `ray job submit` test starts its own head (slow).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from data.common.errors import ConfigError
from pretrain.config import load_pretrain_config
from pretrain.train_loop import WarmupCosine

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs/pretrain/lgi_tiny.yaml"
STEPS = 8
SPLIT = 6  # the interrupted run stops here (in epoch 1: each rank reads 5 batches per epoch), then resumes

# 2 videos x 6 s at 30 fps, 32-frame clips every 16 frames -> 20 clips in 10 shards of 2
SYNTH_YAML = """subjects: 1
videos_per_subject: 2
duration_s: 6.0
events:
  macro_per_video: [1, 1]
  micro_per_video: [1, 1]
  macro_duration_s: [0.6, 1.0]
"""


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from data.shards.pack import PackConfig, pack
    from data.synthetic.config import load_synthetic_config
    from data.synthetic.generate import generate

    root = tmp_path_factory.mktemp("pretrain_shards")
    (root / "synth.yaml").write_text(SYNTH_YAML)
    videos = generate(load_synthetic_config(root / "synth.yaml"), root / "videos", progress=False)
    cfg = PackConfig(source="list", source_path=str(videos / "videos.csv"), out_dir=str(root / "shards"),
                     clip_frames=32, clip_stride=16, clips_per_shard=2, workers=1)
    return pack(cfg, progress=False)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    # a short temp dir: Ray's socket paths must stay under the Unix limit of 107 characters
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir)
    yield
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def _extensions_dir() -> str:
    return os.environ.get("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))


def tiny_overrides(shards, storage, name) -> list[str]:
    return [f"data.shards={shards}", "data.frame_stride=2", f"checkpoint.storage_path={storage}",
            f"checkpoint.name={name}", f"schedule.total_steps={STEPS}", "schedule.warmup_steps=2",
            "checkpoint.log_every=1", "checkpoint.every_steps=4"]


def tiny_config(shards, storage, name, *extra):
    return load_pretrain_config(TINY, tiny_overrides(shards, storage, name) + list(extra))


def tensorboard_losses(run_dir) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(run_dir) / "tensorboard"))
    events.Reload()
    return {e.step: e.value for e in events.Scalars("pretrain/loss")}


@pytest.fixture(scope="module")
def full_run(local_ray, shards, tmp_path_factory):
    from pretrain.trainer import fit

    cfg = tiny_config(shards, tmp_path_factory.mktemp("runs"), "full")
    start = time.perf_counter()
    result = fit(cfg)
    seconds = time.perf_counter() - start
    run_dir = Path(cfg.checkpoint.storage_path) / "full"
    print(f"\nfull run: {STEPS} steps in {seconds:.1f} s (incl. worker start), last metrics {result.metrics}")
    return cfg, result, tensorboard_losses(run_dir)


def test_loss_falls_two_workers_zero2(full_run):
    cfg, result, losses = full_run
    assert sorted(losses) == list(range(1, STEPS + 1))
    first, last = losses[1], sum(losses[s] for s in range(STEPS - 2, STEPS + 1)) / 3
    print(f"loss curve: {[round(losses[s], 4) for s in sorted(losses)]}")
    assert last < first - 0.02, f"loss did not fall: step 1 {first:.4f}, last 3 steps {last:.4f}"
    assert result.metrics["step"] == STEPS and result.metrics["corrupt"] == 0
    assert result.metrics["clips_per_s"] > 0
    # Ray merged both ranks' DeepSpeed shards into one checkpoint folder
    tag = Path(result.checkpoint.path) / f"step_{STEPS:08d}"
    names = sorted(p.name for p in tag.iterdir())
    assert "mp_rank_00_model_states.pt" in names
    assert sum("zero_pp_rank_" in n and "optim_states" in n for n in names) == 2, names


def test_resume_continues_bit_exact(full_run, shards, tmp_path):
    from pretrain.trainer import fit

    _, _, full = full_run
    first = fit(tiny_config(shards, tmp_path, "split", f"checkpoint.stop_after_steps={SPLIT}"))
    assert first.metrics["step"] == SPLIT
    assert Path(first.checkpoint.path).name == f"checkpoint_step_{SPLIT:08d}"
    second = fit(tiny_config(shards, tmp_path, "split"))  # same storage + name: resumes at SPLIT
    assert second.metrics["step"] == STEPS
    resumed = tensorboard_losses(tmp_path / "split")
    assert sorted(resumed) == list(range(1, STEPS + 1))
    diffs = {step: abs(resumed[step] - full[step]) for step in range(1, STEPS + 1)}
    print(f"\nresumed at step {SPLIT}: max |loss - uninterrupted loss| over steps = {max(diffs.values()):.2e}")
    for step, diff in diffs.items():
        assert diff <= 1e-6, (step, resumed[step], full[step])


def test_resume_with_one_worker_continues_the_loss_curve(full_run, shards, tmp_path):
    """A 2-worker run stopped at SPLIT resumes on 1 worker (a node that does not come back): DeepSpeed's universal
    checkpoint re-partitions the weights and the Adam moments; grad_accum 2 keeps the global batch at 4 clips.
    The data order after the change differs (each rank's shard slice depends on the world size), so the curve
    continues rather than repeating the uninterrupted run bit for bit."""
    from pretrain.trainer import fit

    _, _, full = full_run
    first = fit(tiny_config(shards, tmp_path, "shrink", f"checkpoint.stop_after_steps={SPLIT}"))
    assert first.metrics["step"] == SPLIT
    second = fit(tiny_config(shards, tmp_path, "shrink", "scaling.num_workers=1", "deepspeed.grad_accum=2"))
    assert second.metrics["step"] == STEPS and second.metrics["start_step"] == SPLIT
    resumed = tensorboard_losses(tmp_path / "shrink")
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert all(abs(resumed[s] - full[s]) <= 1e-6 for s in range(1, SPLIT + 1))  # 2 workers up to the split
    after = range(SPLIT + 1, STEPS + 1)
    gap = max(abs(resumed[s] - full[s]) for s in after)
    print(f"\n2 -> 1 worker at step {SPLIT}: losses after {[round(resumed[s], 4) for s in after]}, uninterrupted "
          f"{[round(full[s], 4) for s in after]}, first step {resumed[1]:.4f}")
    # a fresh start (weights or Adam state lost) would begin again near the first step's loss
    assert gap < 0.5 * (resumed[1] - full[SPLIT]), (gap, resumed, full)


def test_a_checkpoint_deepspeed_cannot_convert_is_one_clear_error(tmp_path):
    from data.common.errors import DataError
    from pretrain.world_change import universal_copy

    with pytest.raises(DataError, match="no DeepSpeed 'latest' tag.*scaling.num_workers the run was saved with"):
        universal_copy(tmp_path, tmp_path / "out")
    (tmp_path / "latest").write_text("step_00000004")
    (tmp_path / "step_00000004").mkdir()
    with pytest.raises(DataError, match="could not convert.*ds_to_universal --input_folder") as err:
        universal_copy(tmp_path, tmp_path / "out")
    assert err.value.field == "scaling.num_workers"


def test_warmup_cosine_schedule():
    f = WarmupCosine(warmup=4, total=20, min_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    values = [f(s) for s in range(4, 21)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(0.1) and f(100) == pytest.approx(0.1)


def test_config_errors_name_the_field(shards, tmp_path):
    with pytest.raises(ConfigError, match="model.region"):  # a 128-pixel clip is 8 x 8 tokens: 5 rows do not fit
        tiny_config(shards, tmp_path, "x", "model.img_size=128")
    with pytest.raises(ConfigError, match="data.size.*unknown key"):  # clip geometry is the model's alone
        tiny_config(shards, tmp_path, "x", "data.size=128")
    with pytest.raises(ConfigError, match="zero_stage"):
        tiny_config(shards, tmp_path, "x", "deepspeed.zero_stage=3")
    with pytest.raises(ConfigError, match="stop_after_steps"):
        tiny_config(shards, tmp_path, "x", f"checkpoint.stop_after_steps={STEPS + 1}")
    cfg = tiny_config(shards, tmp_path, "x")
    assert cfg.peak_lr() == pytest.approx(cfg.optim.base_lr * 4 / 256)  # 2 workers x batch 2


def test_cli_reports_missing_shards(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pretrain", "--config", str(TINY),
                           f"data.shards={tmp_path / 'none'}"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "no manifest.json" in proc.stderr and str(tmp_path / "none") in proc.stderr


ENGINE_SCRIPT = """
import json, os, sys
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
import torch, torch.distributed as dist
dist.init_process_group("gloo")
from data.shards.loader import CorruptTally
from pretrain.config import load_pretrain_config
from pretrain.train_loop import Meter, batch_stream, build_engine, optimizer_step
out = {}
for precision in ("bf16", "autocast_bf16", "fp32"):
    cfg = load_pretrain_config(sys.argv[3], [f"data.shards={sys.argv[1]}", "data.frame_stride=2",
                               f"deepspeed.precision={precision}", "scaling.num_workers=1"])
    engine = build_engine(cfg, 1)
    meter = Meter(engine.device)
    optimizer_step(cfg, engine, batch_stream(cfg, 0, 1, 0, 0), 0, 0, meter, CorruptTally())
    out[precision] = {"loss": meter.global_metrics(0)["loss"],
                      "params": sorted({str(p.dtype) for p in engine.module.parameters()}),
                      "buffers": sorted({str(b.dtype) for b in engine.module.buffers() if b.is_floating_point()})}
print(json.dumps(out))
"""


def test_precision_modes_one_step(shards):
    """One optimizer step per precision mode in a fresh single-rank process group (no Ray)."""
    port = str(_free_ports(1)[0])
    proc = subprocess.run([sys.executable, "-c", ENGINE_SCRIPT, str(shards), port, str(TINY)], cwd=REPO,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["bf16"]["params"] == ["torch.bfloat16"] and out["bf16"]["buffers"] == ["torch.bfloat16"]
    for mode in ("autocast_bf16", "fp32"):
        assert out[mode]["params"] == ["torch.float32"] and out[mode]["buffers"] == ["torch.float32"]
    losses = [out[m]["loss"] for m in out]
    # same weights, data and masks: the three precisions agree to bf16 rounding on the first loss
    assert max(losses) - min(losses) < 0.01 and all(0.5 < x < 2.0 for x in losses), out


# ---- ray job submit against a head started here ---------------------------------------------------------

def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_ray_job_submit_end_to_end(shards, tmp_path):
    ray_bin = Path(sys.executable).parent / "ray"
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    gcs, dash, client, agent, agent_grpc, env_agent, metrics, nm, om = _free_ports(9)
    env = dict(os.environ, RAY_AUTH_MODE="disabled", TORCH_EXTENSIONS_DIR=_extensions_dir(),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("RAY_ADDRESS", None)
    # --block keeps the head's processes children of this one process: stopping it by its pid stops exactly
    # this head (`ray stop` would stop every Ray instance on the machine, other people's included).
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dash}",
         "--dashboard-host=127.0.0.1", f"--ray-client-server-port={client}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}",
         f"--node-manager-port={nm}", f"--object-manager-port={om}", "--num-cpus=2",
         f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        overrides = tiny_overrides(shards, tmp_path, "job") + ["schedule.total_steps=3", "checkpoint.every_steps=3"]
        submit = [str(ray_bin), "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", ".",
                  "--", "python", "-m", "pretrain", "--config", "configs/pretrain/lgi_tiny.yaml", *overrides]
        start = time.perf_counter()
        proc = _submit_when_ready(submit, env)
        print(f"\nray job submit: rc {proc.returncode} after {time.perf_counter() - start:.1f} s")
        print("\n".join(proc.stdout.splitlines()[-15:]))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        summary = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith('{"run"')))
        assert summary["metrics"]["step"] == 3
        assert Path(summary["checkpoint"]).name == "checkpoint_step_00000003"
        assert (tmp_path / "job" / "tensorboard").is_dir()
        # a relative shard path would point into the job's temporary copy of the working directory: refused
        relative = submit + ["data.shards=runs/shards/synthetic"]  # the README default, as a new user runs it
        proc = _submit_when_ready(relative, env)
        print("\n".join(proc.stdout.splitlines()[-3:]))
        assert proc.returncode != 0 and "error: " in proc.stdout
        assert "data.shards: relative path" in proc.stdout and "use an absolute path" in proc.stdout
    finally:
        start = time.perf_counter()
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        print(f"head stopped in {time.perf_counter() - start:.1f} s")
        shutil.rmtree(temp_dir, ignore_errors=True)


def _submit_when_ready(cmd, env, wait_s: float = 90.0):
    """`ray job submit`, retried while the head's dashboard is still coming up."""
    deadline = time.monotonic() + wait_s
    while True:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
        not_up = proc.returncode != 0 and "Connection refused" in proc.stdout + proc.stderr
        if not not_up or time.monotonic() > deadline:
            return proc
        time.sleep(3)

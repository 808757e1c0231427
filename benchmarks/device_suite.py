"""Everything that needs a GPU, in one run: the pretraining step, the loader against it, spotting's model half,
and what held the step back. One JSON line per measurement into OUT/suite.jsonl (each also printed, flushed as
it is made, so a run cut short keeps what it measured); the verdict also as text in OUT/verdict.txt.

    python benchmarks/device_suite.py --out runs/device_suite            # one GPU: within --budget-s (450 s)
    python benchmarks/device_suite.py --dry-run --out /tmp/device_suite  # CPU, tiny sizes: the same code paths

Parts, in the order they run; what each needs beyond torch, timm, einops, numpy, pyyaml (the GPU image has
those and transformers, not deepspeed, ray, webdataset or decord); GPU budget. A part whose packages are missing
writes one line saying what it needs and the suite goes on; a part that runs past its budget is stopped.
  env       versions, device, dense bf16 peak (table or --peak-tflops), which optional packages are here
  step      lgi_base (--name) at batch 64/128/256, bf16 autocast + fused AdamW: eager and cuda_graph at each;
            eager_nan_check and eager_host_input at 128; the 128 ones first (benchmarks/device/step.py)  120 s
  syncs     host synchronisations of one train-loop step (torch's CUDA sync debug mode + ops that
            need a host value), with pretrain.train_loop's own helpers where it imports (cv2)       15 s
  profile   the profiler's top kernels of the eager and CUDA-graph steps at 128                     30 s
  spotting  encoder windows/s over spotting windows, as video frames/s and x real time
            (window counts need pandas, the pooling cv2: benchmarks/device/spotting.py)             25 s
  loader    decode-free collation on all host cores (cv2); the real loader on all cores
            (webdataset, decord; av to write synthetic shards, or --shards) (device/feed.py)        80 s
  compile   torch.compile at 128 with its profile, then 256, 64, then mode=reduce-overhead at 128,
            each only while the time the last one took still fits in the budget                      rest
  verdict   what held the step back, ranked by the share of step time each finding costs
            (benchmarks/device/verdict.py)
Budgets add up to 450 s of the 8 minutes an H100 session allows, leaving room for start-up.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = ("timm", "einops", "transformers", "cv2", "pandas", "webdataset", "decord", "av", "deepspeed", "ray")
# GPU: budgets (s) add up to 450 with the compile part's share; `seconds`: per loader / spotting measurement
GPU = {"name": "lgi_base", "changes": {}, "batches": (64, 128, 256), "anchor": 128, "warmup": 5, "steps": 20,
       "seconds": 8.0, "budget": 450, "parts": {"step": 120, "syncs": 15, "profile": 30, "spotting": 25, "loader": 80},
       "compile_backend": "inductor", "compile_batches": (128, 256, 64), "audit_batch": 8, "clips": 64,
       "spotting_batches": (16, 64)}
# The dry run checks code paths, not speed: generous limits, so a busy machine does not cut a part short.
DRY = {"name": "lgi_tiny", "changes": {"frames": 4}, "batches": (1, 2), "anchor": 2, "warmup": 1, "steps": 1,
       "seconds": 0.5, "budget": 900, "parts": {"step": 180, "syncs": 60, "profile": 60, "spotting": 60,
                                                "loader": 120},
       "compile_backend": "aot_eager", "compile_batches": (2,), "audit_batch": 1, "clips": 16,
       "spotting_batches": (1, 2)}


class PartTimeout(BaseException):
    """A part's time is up (a BaseException: the per-measurement `except Exception` must not swallow it)."""


class Suite:
    """JSON lines out, the clock and each part's time limit (SIGALRM in the main thread)."""

    def __init__(self, out: Path, budget_s: float, dry_run: bool):
        self.out, self.dry_run = out, dry_run
        out.mkdir(parents=True, exist_ok=True)
        self.file = open(out / "suite.jsonl", "w")  # noqa: SIM115 - open for the whole run; main() closes it
        self.start = time.perf_counter()
        self.deadline = self.start + budget_s

    def emit(self, part: str, row: dict) -> dict:
        row = {"part": part, **row, "t": round(time.perf_counter() - self.start, 1)}
        line = json.dumps(row)
        self.file.write(line + "\n")
        self.file.flush()
        print(line, flush=True)
        return row

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    @contextlib.contextmanager
    def limit(self, part: str, seconds: float):
        """Run a part for at most `seconds` (and never past the deadline); an error is a line, not the end."""
        seconds = min(seconds, self.left())
        if seconds < 1:
            self.emit(part, {"skipped": "no time left in the budget"})
            yield False
            return

        def stop(*_):
            raise PartTimeout(f"ran past its {seconds:.0f} s budget")

        previous = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield True
        except PartTimeout as e:
            self.emit(part, {"stopped": str(e)})
        except Exception as e:  # noqa: BLE001 - one failing part must not cost the others their numbers
            self.emit(part, {"error": f"{type(e).__name__}: {str(e)[:500]}"})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def have_packages() -> dict[str, bool]:
    return {name: importlib.util.find_spec(name) is not None for name in OPTIONAL}


def env_row(device, peak, peak_from: str, have: dict) -> dict:
    import torch

    row = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
           "cpu_cores": os.cpu_count(), "peak_tflops_bf16_dense": peak, "peak_from": peak_from,
           "packages": {name: ok for name, ok in have.items()}}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        row.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return row


def step_part(suite: Suite, plan: dict, cfg, device, flops: float, peak) -> tuple[list, dict]:
    from benchmarks.device import step

    rows, made = [], {}
    anchor = plan["anchor"]
    # the anchor batch first: what the verdict compares, kept when the part runs out of time
    todo = [(v, anchor) for v in ("eager", "cuda_graph", "eager_nan_check", "eager_host_input")]
    todo += [(v, b) for v in ("eager", "cuda_graph") for b in plan["batches"] if b != anchor]
    for variant, batch in todo:
        rows.append(measure(suite, plan, step, variant, batch, cfg, device, flops, peak, made))
    return rows, made


PROFILED = ("eager", "cuda_graph", "compiled")  # kept alive after measuring (at the anchor batch) for the profile


def measure(suite, plan, step, variant, batch, cfg, device, flops, peak, made, part: str = "step") -> dict:
    """One variant at one batch: its row (an error row when it fails; the other variants go on)."""
    import torch

    try:
        row, runnable = step.measure(variant, cfg, batch, device, flops, peak, plan["warmup"], plan["steps"],
                                     plan["compile_backend"])
        if batch == plan["anchor"] and variant in PROFILED:
            made[variant] = (runnable, row["step_ms"])
    except torch.cuda.OutOfMemoryError:
        row = {"variant": variant, "batch": batch, "error": "out of memory"}
    except Exception as e:  # noqa: BLE001 - e.g. a capture that fails: the row says so
        row = {"variant": variant, "batch": batch, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    runnable = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return suite.emit(part, row)


def profile_part(suite: Suite, plan: dict, device, made: dict, profiles: dict, variants) -> None:
    from benchmarks.device import step

    for variant in variants:
        if variant in made:
            (runnable, inputs), step_ms = made.pop(variant)
            result = step.profile(runnable, inputs, device, step_ms)
            profiles[f"{variant}@{plan['anchor']}"] = result
            suite.emit("profile", {"variant": variant, "batch": plan["anchor"], **result})


def compile_part(suite: Suite, plan: dict, cfg, device, flops, peak, rows: list, profiles: dict) -> None:
    """Compiled variants while the budget lasts; each starts only when the last one's time fits again."""
    from benchmarks.device import step

    todo = [("compiled", b) for b in plan["compile_batches"]]
    if device.type == "cuda":
        todo.append(("compiled_cuda_graph", plan["anchor"]))
    cost = 0.0
    for variant, batch in todo:
        if suite.left() < 1.2 * cost + 10:
            suite.emit("compile", {"variant": variant, "batch": batch, "skipped": "budget"})
            continue
        start = time.perf_counter()
        made = {}
        with suite.limit("compile", suite.left() - 5) as ok:
            if ok:
                rows.append(measure(suite, plan, step, variant, batch, cfg, device, flops, peak, made, "compile"))
                if variant == "compiled" and made and suite.left() > 30:
                    profile_part(suite, plan, device, made, profiles, ["compiled"])
        cost = time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for suite.jsonl and verdict.txt")
    parser.add_argument("--dry-run", action="store_true", help="CPU, lgi_tiny, tiny batches: seconds, not numbers")
    parser.add_argument("--name", help="named model config (default lgi_base; dry run lgi_tiny)")
    parser.add_argument("--batches", help="comma-separated batch sizes (default 64,128,256; the middle one is the "
                                          "anchor of the profile and the variants)")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, when the table lacks it")
    parser.add_argument("--budget-s", type=float, help="the whole suite's time (default 450; dry run 900)")
    parser.add_argument("--shards", help="a real shard set for the loader part (default: synthetic shards)")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out")
    parser.add_argument("--site", help="a folder of extra packages to put first on sys.path (e.g. webdataset)")
    args = parser.parse_args(argv)
    if args.site:
        sys.path.insert(0, str(Path(args.site).resolve()))
    sys.path.insert(0, str(REPO))
    import torch

    from benchmarks.device import feed, spotting, step, verdict
    from pretrain.model_config import named_config

    plan = dict(DRY if args.dry_run else GPU)
    if args.batches:
        plan["batches"] = tuple(int(b) for b in args.batches.split(","))
        plan["anchor"] = plan["batches"][len(plan["batches"]) // 2]
        plan["compile_batches"] = (plan["anchor"],)
    plan["name"] = args.name or plan["name"]
    skip = set(filter(None, args.skip.split(",")))
    device = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(1 if args.dry_run else (os.cpu_count() or 1))
    suite = Suite(Path(args.out), args.budget_s or plan["budget"], args.dry_run)
    have = have_packages()
    if have["cv2"]:
        import cv2

        # before any part uses OpenCV here: once its thread pool (pthreads) runs in this process, a forked child
        # (the loader's workers) hangs in cv2.setNumThreads. The loader parts measure the children, not this one.
        cv2.setNumThreads(1)
    peak, peak_from = step.peak_tflops(device, args.peak_tflops)
    suite.emit("env", {**env_row(device, peak, peak_from, have), "dry_run": args.dry_run, "plan": plan})
    cfg = named_config(plan["name"], **plan["changes"])
    flops = step.flops_per_clip(cfg, device)
    suite.emit("env", {"config": cfg.name, "gflop_per_clip_train": round(flops / 1e9, 2)})

    steps, made, profiles, spots, feeds = [], {}, {}, [], []
    if "step" not in skip:
        with suite.limit("step", plan["parts"]["step"]) as ok:
            if ok:
                steps, made = step_part(suite, plan, cfg, device, flops, peak)
    if "syncs" not in skip:
        with suite.limit("syncs", plan["parts"]["syncs"]) as ok:
            if ok:
                suite.emit("syncs", step.audit_step(cfg, plan["audit_batch"], device))
    if "profile" not in skip:
        with suite.limit("profile", plan["parts"]["profile"]) as ok:
            if ok:
                profile_part(suite, plan, device, made, profiles, ["eager", "cuda_graph"])
    made.clear()
    if "spotting" not in skip:
        with suite.limit("spotting", plan["parts"]["spotting"]) as ok:
            if ok:
                spots = [suite.emit("spotting", row) for row in
                         spotting.run(cfg, device, plan["seconds"], plan["spotting_batches"])]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if "loader" not in skip:
        with suite.limit("loader", plan["parts"]["loader"]) as ok:
            if ok:
                appetite = max((r["clips_per_s"] for r in steps if "clips_per_s" in r), default=None)
                feeds = feed.run(cfg.geometry, plan["anchor"], plan["seconds"], have, args.shards, plan["clips"],
                                 appetite, lambda row: suite.emit("loader", row))
    if "compile" not in skip:
        compile_part(suite, plan, cfg, device, flops, peak, steps, profiles)
    result = verdict.summary(steps, profiles, feeds, spots, plan["anchor"])
    suite.emit("verdict", result)
    suite.file.close()
    report = verdict.text(result, args.dry_run)
    (suite.out / "verdict.txt").write_text(report + "\n")
    print(report, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The pretraining step on one device: eager, compiled and CUDA-graphed variants, their clips/s, MFU and peak
memory, the profiler's top kernels, and the host synchronisations left in the train loop's step.

A step is what pretrain.train_loop does per micro-batch, without DeepSpeed (not on the GPU image): forward
under bf16 autocast (fp32 weights), MSE loss, backward, fused AdamW, gradients set to None. Variants:
  eager              the batch already on the device
  eager_host_input   the batch arrives as pinned uint8 on the host and is copied + normalised in the step, as
                     the train loop does with data.output=uint8 (the copy runs on the compute stream)
  eager_nan_check    plus the train loop's NaN check (pretrain.stability.finite_on_all_ranks: one .item())
  compiled           torch.compile of the model (inductor on CUDA; the dry run traces with aot_eager)
  cuda_graph         the whole step (forward, backward, optimizer) captured once and replayed: the step has
                     static shapes (region-balanced masks, index gathers, no boolean indexing); the dry run on
                     CPU runs the same static-buffer path without a capture
"""
from __future__ import annotations

import re
import time
import traceback
from pathlib import Path

import torch

from data.clips.augment import normalise
from pretrain.flops import count_flops, example_batch
from pretrain.mae import VideoMAE
from pretrain.stability import finite_on_all_ranks

REPO = Path(__file__).resolve().parents[2]

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by a piece of torch.cuda.get_device_name; the first match
# wins, so the specific names come first. H200 is the H100 SXM chip with more memory.
PEAK_BF16_DENSE_TFLOPS = (("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H200", 989.4), ("GH200", 989.4),
                          ("H100", 989.4), ("A100", 312.0), ("L40S", 362.0))

# Profiler kernel (CUDA) or op (CPU) names -> what kind of work; the first pattern that matches wins.
CATEGORIES = (("attention", r"flash|fmha|attention|sdpa|scaled_dot_product|softmax"),
              ("matmul", r"gemm|cutlass|xmma|nvjet|cublas|triton_tem|(::|_)mm\b|addmm|bmm|linear|conv"),
              ("optimizer", r"adam|multi_tensor|foreach"),
              ("norm", r"layer_norm|layernorm"),
              ("memory", r"copy|memcpy|memset|\bcat\b|cat_|gather|scatter|index|transpose|permute|clone"),
              ("fused elementwise", r"^triton_"),
              ("elementwise", r"."))
SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_consecutive", "unique_dim"}


def peak_tflops(device: torch.device, given: float | None) -> tuple[float | None, str]:
    """(dense bf16 peak, where it came from)."""
    if given:
        return given, "--peak-tflops"
    if device.type != "cuda":
        return None, "no peak for a CPU"
    name = torch.cuda.get_device_name(device)
    for piece, tflops in PEAK_BF16_DENSE_TFLOPS:
        if piece in name:
            return tflops, f"table ({piece})"
    return None, f"unknown device {name!r}: pass --peak-tflops"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flops_per_clip(cfg, device: torch.device) -> float:
    """Forward + backward FLOPs of one clip (pretrain.flops, counted on the device)."""
    torch.manual_seed(0)
    model = VideoMAE(cfg).to(device)
    video, mask = example_batch(cfg, 1, device)
    return count_flops(model, video, mask)["gflop_per_clip_train"] * 1e9


# ---- the step variants -------------------------------------------------------------------------------------

def build(cfg, device: torch.device, capturable: bool = False):
    torch.manual_seed(0)
    model = VideoMAE(cfg).to(device)
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05,
                                  fused=cuda, capturable=capturable and cuda)
    return model, optimizer


def forward_backward(model, video, mask, cache: bool = True):
    """`cache=False` inside a CUDA graph capture: autocast's cache of bf16 weight copies must not outlive it."""
    with torch.autocast(video.device.type, dtype=torch.bfloat16, cache_enabled=cache):
        loss = model(video, mask)["loss"]
    loss.backward()
    return loss


def eager_step(model, optimizer, nan_check: bool = False, host_input: bool = False):
    def step(video, mask):
        if host_input:  # pretrain.train_loop.model_input: uint8 copied on the compute stream, normalised there
            device = next(model.parameters()).device
            video = normalise(video.to(device, non_blocking=True))
            mask = mask.to(device, non_blocking=True)
        with torch.autocast(video.device.type, dtype=torch.bfloat16):
            loss = model(video, mask)["loss"]
        if nan_check and not finite_on_all_ranks(loss):
            raise RuntimeError("NaN loss in the benchmark step")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss
    return step


def compiled_step(model, optimizer, backend: str, mode: str | None = None):
    """torch.compile of the model (static shapes: one graph per batch size); the fused optimizer stays eager."""
    compiled = torch.compile(model, dynamic=False, backend=backend, mode=mode)

    def step(video, mask):
        loss = forward_backward(compiled, video, mask)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss
    return step


def graphed_step(model, optimizer, video, mask, warmup: int = 3):
    """The whole step captured in one CUDA graph (PyTorch's whole-network capture: warm up on a side stream,
    capture forward + backward + a capturable optimizer, replay after copying the batch into static buffers).
    On a CPU the same buffers and replay path run the step eagerly (no capture exists there)."""
    static_video, static_mask = video.clone(), mask.clone()

    def body():
        loss = forward_backward(model, static_video, static_mask, cache=False)
        optimizer.step()
        return loss

    if video.device.type != "cuda":
        def step(v, m):
            static_video.copy_(v)
            static_mask.copy_(m)
            loss = body()
            optimizer.zero_grad(set_to_none=True)
            return loss
        return step

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            optimizer.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)  # backward in the capture allocates the grads from the graph's pool
    with torch.cuda.graph(graph):
        static_loss = body()

    def step(v, m):
        static_video.copy_(v, non_blocking=True)
        static_mask.copy_(m, non_blocking=True)
        graph.replay()
        return static_loss
    return step


def make_variant(name: str, cfg, batch: int, device: torch.device, compile_backend: str):
    """(step, its inputs) of a variant, ready to call."""
    video, mask = example_batch(cfg, batch, device)
    model, optimizer = build(cfg, device, capturable=name == "cuda_graph")
    if name == "eager":
        return eager_step(model, optimizer), (video, mask)
    if name == "eager_nan_check":
        return eager_step(model, optimizer, nan_check=True), (video, mask)
    if name == "eager_host_input":
        host = torch.randint(0, 256, video.shape, dtype=torch.uint8)
        host_mask = mask.cpu()
        if device.type == "cuda":
            host, host_mask = host.pin_memory(), host_mask.pin_memory()
        return eager_step(model, optimizer, host_input=True), (host, host_mask)
    if name == "compiled":
        return compiled_step(model, optimizer, compile_backend), (video, mask)
    if name == "compiled_cuda_graph":  # inductor's own CUDA graphs (cudagraph trees) around forward and backward
        return compiled_step(model, optimizer, compile_backend, mode="reduce-overhead"), (video, mask)
    if name == "cuda_graph":
        return graphed_step(model, optimizer, video, mask), (video, mask)
    raise ValueError(f"unknown step variant {name!r}")


def time_steps(step, inputs, warmup: int, steps: int, device: torch.device) -> dict:
    """Seconds of the first call (compilation; a CUDA graph is captured before, in setup), then mean ms per step
    over `steps` after `warmup`."""
    start = time.perf_counter()
    step(*inputs)
    sync(device)
    first = time.perf_counter() - start
    for _ in range(max(0, warmup - 1)):
        step(*inputs)
    sync(device)
    if device.type == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(steps):
            step(*inputs)
        end.record()
        torch.cuda.synchronize(device)
        ms = begin.elapsed_time(end) / steps
    else:
        start = time.perf_counter()
        for _ in range(steps):
            step(*inputs)
        ms = (time.perf_counter() - start) * 1000 / steps
    return {"first_step_s": round(first, 2), "step_ms": round(ms, 3)}


def measure(name: str, cfg, batch: int, device: torch.device, flops: float, peak: float | None, warmup: int,
            steps: int, compile_backend: str) -> tuple[dict, object]:
    """One variant at one batch size: its JSON row, and (step, inputs) for profiling."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)  # what earlier variants still hold (kept for the profile)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    step, inputs = make_variant(name, cfg, batch, device, compile_backend)
    sync(device)
    timing = {"setup_s": round(time.perf_counter() - start, 2), **time_steps(step, inputs, warmup, steps, device)}
    clips = batch * 1000 / timing["step_ms"]
    achieved = flops * clips / 1e12
    row = {"variant": name, "batch": batch, "steps": steps, **timing, "clips_per_s": round(clips, 1),
           "achieved_tflops": round(achieved, 3), "mfu": round(achieved / peak, 4) if peak else None}
    if name == "compiled" and device.type != "cuda":
        row["compile_backend"] = compile_backend
    if name == "cuda_graph" and device.type != "cuda":
        row["note"] = "CPU: the static-buffer path without a capture"
    if device.type == "cuda":
        row["peak_mem_gb"] = round((torch.cuda.max_memory_allocated(device) - before) / 2**30, 2)
    return row, (step, inputs)


# ---- profile -----------------------------------------------------------------------------------------------

def category(name: str) -> str:
    low = name.lower()
    return next(kind for kind, pattern in CATEGORIES if re.search(pattern, low))


def _self_time_us(event, cuda: bool) -> float:
    if cuda:
        return float(getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0))
    return float(event.self_cpu_time_total)


def profile(step, inputs, device: torch.device, step_ms: float, steps: int = 3, top: int = 12) -> dict:
    """The profiler over `steps` steps: the top kernels (CUDA) or ops (CPU) by self time per step, the share of
    each kind of work, and how busy the device was (kernel time over the unprofiled step time)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    step(*inputs)
    sync(device)
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            step(*inputs)
        sync(device)
    events = [e for e in prof.key_averages() if (e.device_type == DeviceType.CUDA) == cuda]
    timed = sorted(((e.key, _self_time_us(e, cuda) / steps / 1000, e.count // steps) for e in events),
                   key=lambda t: -t[1])
    timed = [t for t in timed if t[1] > 0]
    total = sum(ms for _, ms, _ in timed)
    if not total:  # e.g. kernels inside CUDA graph replays, where the profiler cannot see them
        return {"unit": "none recorded", "busy_ms_per_step": None, "device_busy": None, "shares": {}, "top": []}
    shares: dict[str, float] = {}
    for name, ms, _ in timed:
        shares[category(name)] = shares.get(category(name), 0.0) + ms
    return {"unit": "CUDA kernels" if cuda else "CPU ops (self time)",
            "busy_ms_per_step": round(total, 3),
            "device_busy": round(total / step_ms, 3) if cuda else None,
            "shares": {k: round(v / total, 3) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])},
            "top": [{"name": name[:120], "ms_per_step": round(ms, 3), "calls_per_step": calls,
                     "share": round(ms / total, 3), "kind": category(name)} for name, ms, calls in timed[:top]]}


# ---- host synchronisations ---------------------------------------------------------------------------------

def _where() -> str:
    """The innermost frame of the project's own code on the current stack (not this benchmark's), else the
    innermost library frame (e.g. torch's optimizer) that is not the dispatch machinery."""
    frames = [f for f in reversed(traceback.extract_stack()) if "benchmarks" not in Path(f.filename).parts]
    for frame in frames:
        path = Path(frame.filename)
        if REPO in path.parents and "site-packages" not in path.parts:  # a venv inside the clone is a library
            return f"{path.relative_to(REPO)}:{frame.lineno} {frame.name}"
    for frame in frames:
        parts = Path(frame.filename).parts
        inside = "/".join(parts[parts.index("site-packages") + 1:]) if "site-packages" in parts else ""
        if inside and not inside.startswith("torch/_") and not inside.startswith("torch/utils/"):
            return f"{inside}:{frame.lineno} {frame.name} (library)"
    return "unknown"


def _sync_mode():
    from torch.utils._python_dispatch import TorchDispatchMode

    class HostSyncs(TorchDispatchMode):
        """Ops that need a value on the host: .item()/bool()/float() (_local_scalar_dense), nonzero and boolean
        indexing (the output size is data-dependent), unique."""

        def __init__(self):
            super().__init__()
            self.found: list[tuple[str, str]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name in SYNC_OPS:
                self.found.append((name, _where()))
            elif name in ("index", "index_put", "index_put_") and any(
                    isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())):
                self.found.append((f"{name} with a boolean mask", _where()))
            return func(*args, **(kwargs or {}))

    return HostSyncs()


def audit_step(cfg, batch: int, device: torch.device) -> dict:
    """The host synchronisations of one train-loop step (after two warm-up steps): ops that need a host value,
    seen on any device; on CUDA also what torch's sync debug mode reports (blocking copies, stream syncs).
    Uses pretrain.train_loop's own helpers where it imports (it needs the loader's packages)."""
    import warnings

    try:
        from pretrain.train_loop import Meter, model_input, reseed
        helpers = "pretrain.train_loop"
    except ImportError as e:
        Meter = model_input = reseed = None
        helpers = f"inline (pretrain.train_loop does not import here: {e})"
    model, optimizer = build(cfg, device)
    _, mask = example_batch(cfg, batch)
    host = torch.randint(0, 256, (batch, cfg.in_chans, cfg.frames, cfg.img_size, cfg.img_size), dtype=torch.uint8)
    if device.type == "cuda":
        host, mask = host.pin_memory(), mask.pin_memory()
    meter = Meter(device) if Meter else None

    def step(i: int):
        if reseed:
            reseed(0, i, 0, 0)
        video = model_input(host, device, torch.float32) if model_input else normalise(host.to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(video, mask.to(device, non_blocking=True))
        finite_on_all_ranks(out["loss"])
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if meter:
            meter.add(out["loss"], out["floor"], batch)

    for i in range(2):
        step(i)
    sync(device)
    found = []
    mode = _sync_mode()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        original = warnings.showwarning
        if device.type == "cuda":
            warnings.showwarning = lambda message, *a, **k: found.append((str(message)[:80], _where()))
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with mode:
                step(2)
            sync(device)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = original
    return {"helpers": helpers, "host_value_ops": _tally(mode.found),
            "cuda_syncs": _tally(found) if device.type == "cuda" else None}


def _tally(found: list[tuple[str, str]]) -> list[dict]:
    counts: dict[tuple[str, str], int] = {}
    for item in found:
        counts[item] = counts.get(item, 0) + 1
    return [{"op": op, "where": where, "per_step": n} for (op, where), n in sorted(counts.items())]

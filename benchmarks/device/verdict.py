"""What held the step back: the suite's measurements turned into ranked findings, each with its cost (the share
of step time it takes; for `kernels`, the share of kernel time) and the numbers behind it.

Findings (each only when its measurements exist):
  launch      the eager step against the fastest graphed/compiled one at the same batch: host overhead
              (Python, kernel launches) that graphs or compilation remove
  idle        the device's idle share of the eager step (profiler kernel time over step time)
  kernels     kinds of work by share of kernel time in the fastest profiled variant: memory-bound work (norms,
              copies, elementwise) versus matmuls and attention
  sync        the train loop's per-step NaN check (one .item()) against the same step without it
  input       the batch copied from pinned host memory on the compute stream against a batch already on device
  memory      a batch size that ran out of memory
  loader      the real loader (else its decode-free ceiling) against the fastest step, aim 1.2x
DESIGN.md aims: >= 4,000 clips/s and >= 40 % MFU for lgi_base on one H100; loader >= 1.2x the step; spotting
>= 10x real time.
"""
from __future__ import annotations

AIM_CLIPS_PER_S, AIM_MFU, AIM_LOADER_RATIO, AIM_SPOT_X = 4000, 0.40, 1.2, 10.0
MEMORY_BOUND = ("norm", "memory", "elementwise", "fused elementwise")


def _by(rows: list[dict], variant: str, batch: int) -> dict | None:
    return next((r for r in rows if r.get("variant") == variant and r.get("batch") == batch and "step_ms" in r),
                None)


def _cost(slow_ms: float, fast_ms: float) -> float:
    """The share of the slow step that the fast one does without."""
    return max(0.0, (slow_ms - fast_ms) / slow_ms)


def findings(steps: list[dict], profiles: dict[str, dict], loader: list[dict], anchor: int) -> list[dict]:
    timed = [r for r in steps if "step_ms" in r]
    out = []
    eager = _by(timed, "eager", anchor)
    graphed = [r for r in timed if r["batch"] == anchor and r["variant"] in
               ("cuda_graph", "compiled", "compiled_cuda_graph")]
    if eager and graphed:
        fast = min(graphed, key=lambda r: r["step_ms"])
        out.append({"finding": "launch", "cost": _cost(eager["step_ms"], fast["step_ms"]),
                    "text": f"eager step {eager['step_ms']:.1f} ms vs {fast['variant']} {fast['step_ms']:.1f} ms at "
                            f"batch {anchor} (what graphs/compilation save: Python and kernel-launch overhead)"})
    eager_profile = profiles.get(f"eager@{anchor}")
    if eager_profile and eager_profile.get("device_busy") is not None:
        idle = max(0.0, 1.0 - eager_profile["device_busy"])
        out.append({"finding": "idle", "cost": idle,
                    "text": f"the device idled {idle:.0%} of the eager step (kernels "
                            f"{eager_profile['busy_ms_per_step']} ms per step)"})
    profiled = [(name, p) for name, p in profiles.items() if p.get("shares")]
    if profiled:
        name, best = min(profiled, key=lambda item: next((r["step_ms"] for r in timed
                                                          if f"{r['variant']}@{r['batch']}" == item[0]), 1e9))
        shares = best["shares"]
        bound = sum(v for k, v in shares.items() if k in MEMORY_BOUND)
        out.append({"finding": "kernels", "cost": bound,
                    "text": f"{name}: memory-bound kernels (norms, copies, elementwise) take {bound:.0%} of kernel "
                            f"time, matmuls {shares.get('matmul', 0):.0%}, attention {shares.get('attention', 0):.0%}; "
                            f"top: {best['top'][0]['name'][:60]} ({best['top'][0]['share']:.0%})"})
    for variant, finding, what in (("eager_nan_check", "sync", "the NaN check's .item() per step"),
                                   ("eager_host_input", "input", ("copying the uint8 batch from pinned host memory "
                                                                  "on the compute stream"))):
        slow = _by(timed, variant, anchor)
        if eager and slow:
            out.append({"finding": finding, "cost": _cost(slow["step_ms"], eager["step_ms"]),
                        "text": f"{what}: {slow['step_ms']:.1f} ms vs {eager['step_ms']:.1f} ms"})
    for row in steps:
        if row.get("error") == "out of memory":
            out.append({"finding": "memory", "cost": 0.0,
                        "text": f"{row['variant']} at batch {row['batch']} ran out of device memory"})
    best_step = max(timed, key=lambda r: r["clips_per_s"], default=None)
    feeds = [r for r in loader if r.get("mode") == "loader" and "clips_per_s" in r] or \
            [r for r in loader if r.get("mode") == "decode_free" and "clips_per_s" in r]
    if best_step and feeds:
        feed = max(feeds, key=lambda r: r["clips_per_s"])
        ratio = feed["clips_per_s"] / best_step["clips_per_s"]
        out.append({"finding": "loader", "cost": max(0.0, 1.0 - ratio), "ratio": round(ratio, 2),
                    "text": f"{feed['mode']} ({feed.get('repeats', 1)} view(s) per decode, {feed['workers']} workers)"
                            f" {feed['clips_per_s']:.0f} clips/s = {ratio:.2f}x the fastest step's "
                            f"{best_step['clips_per_s']:.0f} (aim {AIM_LOADER_RATIO}x)"})
    for f in out:
        f["cost"] = round(f["cost"], 3)
    return sorted(out, key=lambda f: -f["cost"])


def summary(steps: list[dict], profiles: dict[str, dict], loader: list[dict], spotting: list[dict],
            anchor: int) -> dict:
    timed = [r for r in steps if "step_ms" in r]
    best = max(timed, key=lambda r: r["clips_per_s"], default=None)
    spot = max((r for r in spotting if "x_real_time_30fps" in r), key=lambda r: r["x_real_time_30fps"], default=None)
    aims = {"clips_per_s": {"aim": AIM_CLIPS_PER_S, "best": best and best["clips_per_s"]},
            "mfu": {"aim": AIM_MFU, "best": best and best.get("mfu")},
            "spotting_x_real_time": {"aim": AIM_SPOT_X, "best": spot and spot["x_real_time_30fps"]}}
    return {"best_step": best and {k: best[k] for k in ("variant", "batch", "clips_per_s", "mfu", "step_ms")},
            "aims": aims, "held_back_by": findings(steps, profiles, loader, anchor)}


def text(result: dict, dry_run: bool) -> str:
    lines = ["What held the step back" + (" (dry run on a CPU: the code paths, not the GPU's numbers)" if dry_run
                                          else "") + ":"]
    best = result["best_step"]
    if best:
        mfu = f", MFU {best['mfu']:.1%}" if best.get("mfu") is not None else ""
        lines.append(f"  fastest step: {best['variant']} at batch {best['batch']}: {best['clips_per_s']:.0f} clips/s"
                     f"{mfu} (aim {AIM_CLIPS_PER_S} clips/s, {AIM_MFU:.0%} MFU)")
    costly = [f for f in result["held_back_by"] if f["cost"] >= 0.01]
    for i, f in enumerate(costly, 1):
        lines.append(f"  {i}. [{f['finding']}, {f['cost']:.0%}] {f['text']}")
    for f in result["held_back_by"]:
        if f not in costly:
            lines.append(f"  checked, no cost: [{f['finding']}] {f['text']}")
    if not result["held_back_by"]:
        lines.append("  no finding: the parts that measure them did not run")
    return "\n".join(lines)

"""Live spotting: F1 causal vs offline, the latency of decisions, and real time on 2 CPU cores.

    python benchmarks/live.py f1 --out runs/live_bench [key=value ...]        # e.g. finetune.data.root=runs/bench/data
    python benchmarks/live.py realtime --model DIR --out runs/live_rt [--minutes 10]

f1: two LOSO runs on the same folds and channels (cues + flow, the detector): offline (`spotting loso`) and causal
(`causal=true`: the channels and decisions of `spotting live`). Prints one JSON line per run (F1 per type and
overall, TP/FP/FN) and one for the latency of the causal decisions: decision time minus the interval's offset, in
seconds of video, over every decision and over the true positives (p50, p95, max, histogram).
realtime: a 640x360 30 fps file of `--minutes` (a synthetic 360 px face looped and padded), played by
`python -m spotting live --realtime` while its resident memory is sampled every second; prints the frames read,
dropped and their share, frames/s, latency p50/p95, and the memory at minute 2 and at the end.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.common.config import load_config, replace  # noqa: E402
from data.common.video_io import read_frames, video_info  # noqa: E402
from data.synthetic.config import load_synthetic_config  # noqa: E402
from data.synthetic.generate import generate  # noqa: E402
from spotting.evaluation.loso import LosoConfig, run_loso  # noqa: E402
from spotting.evaluation.metric import match_max  # noqa: E402

RUNS = {"offline": {}, "causal": {"causal": True}}


def f1_row(name: str, metrics: dict) -> dict:
    megc = metrics["megc"]
    return {"benchmark": "live_f1", "run": name,
            **{f"{k}_f1": round(megc[k]["f1"], 4) for k in ("macro", "micro", "overall")},
            "overall_tp_fp_fn": [megc["overall"][k] for k in ("tp", "fp", "fn")]}


def latencies(run: Path, gt_csv: Path) -> dict:
    """Decision time minus offset (s) of every causal decision, and of the ones that hit a ground truth."""
    import pandas as pd

    gt = pd.read_csv(gt_csv)
    every, hits = [], []
    for fold in sorted((run / "folds").iterdir()):
        decisions = json.loads((fold / "live_decisions.json").read_text())["decisions"]
        for video, rows in pd.DataFrame(decisions).groupby("video") if decisions else []:
            late = (rows["decided_s"] - (rows["offset"] + 1) / rows["fps"]).to_numpy()
            every += list(late)
            for kind in ("macro", "micro"):
                mine = rows[rows["type"] == kind]
                truth = gt[(gt["video"] == video) & (gt["type"] == kind)][["onset", "offset"]].to_numpy()
                matched = match_max(truth, mine[["onset", "offset"]].to_numpy())
                hits += [late[rows.index.get_loc(mine.index[j])] for _, j in matched]
    return {name: summary(values) for name, values in (("all", every), ("true_positives", hits))}


def summary(values) -> dict:
    v = np.asarray(values, float)
    if not len(v):
        return {"n": 0}
    return {"n": len(v), "p50_s": round(float(np.median(v)), 3), "p95_s": round(float(np.quantile(v, 0.95)), 3),
            "max_s": round(float(v.max()), 3),
            "histogram_0.25s": np.histogram(v, bins=np.arange(0, max(2.0, v.max()) + 0.25, 0.25))[0].tolist()}


def run_f1(args) -> None:
    out = Path(args.out)
    base = replace(load_config(args.config, LosoConfig, args.overrides),
                   {"channels": ["cues", "flow"], "detector.groups": [], "final_model": args.final_model,
                    "parallel": False})
    for name, changes in RUNS.items():
        cfg = replace(base, {**changes, "out": str((out / name).resolve())})
        t0 = time.perf_counter()
        result = run_loso(cfg)
        print(json.dumps({**f1_row(name, result["spotter"]), "seconds": round(time.perf_counter() - t0, 1)}),
              flush=True)
    lat = latencies(out / "causal", Path(base.finetune.data.root) / "intervals.csv")
    print(json.dumps({"benchmark": "live_latency", "lookahead_s": base.live.lookahead_s,
                      "hop_s": base.live.hop_s, **lat}), flush=True)


def wide_video(folder: Path, minutes: float) -> Path:
    """A 640x360 30 fps H.264 file of `minutes`: one minute of a synthetic 360 px face, looped, padded left and
    right with its edge pixels; encoded in chunks (10 minutes would not fit in memory at once)."""
    import av

    face = generate(load_synthetic_config(None, ["subjects=1", "videos_per_subject=1", "duration_s=60", "size=360"]),
                    folder / "face", progress=False)
    clip = read_frames(next((face / "videos").glob("*.mp4")))
    clip = np.pad(clip, ((0, 0), (0, 0), (140, 140), (0, 0)), mode="edge")
    path = folder / f"wide_640x360_{minutes:g}min.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast", "threads": "1"}
        for i in range(round(minutes * 60 * 30)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(clip[i % len(clip)], format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_realtime(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    video = wide_video(Path(tempfile.mkdtemp(prefix="live_rt_")), args.minutes)
    info = video_info(video)
    log = out / "live_stderr.log"  # a file, not a pipe: nobody reads a pipe while the child runs
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "spotting", "live", str(video), "--model", args.model,
                                 "--realtime", "--out", str(out)], stdout=subprocess.DEVNULL, stderr=err)
    t0, memory = time.monotonic(), []
    while proc.poll() is None:
        mb = rss_mb(proc.pid)
        if mb is not None:
            memory.append((round(time.monotonic() - t0, 1), round(mb, 1)))
        time.sleep(1.0)
    summary = json.loads((out / f"{video.stem}.json").read_text())
    after2 = [mb for t, mb in memory if t >= 120]
    print(json.dumps({"benchmark": "live_realtime", "size": f"{info['width']}x{info['height']}", "fps": info["fps"],
                      "minutes": args.minutes, "frames": info["num_frames"], "read": summary["frames_read"],
                      "dropped": summary["frames_dropped"],
                      "dropped_share": round(summary["frames_dropped"] / max(1, summary["frames_read"]), 5),
                      "ticks_repeated": summary["frames_repeated"], "ticks_unseen": summary["ticks_unseen"],
                      "frames_per_second": summary["frames_per_second"], "wall_s": summary["wall_s"],
                      "latency_p50_s": summary["latency_p50_s"], "latency_p95_s": summary["latency_p95_s"],
                      "rss_mb_at_2min": after2[0] if after2 else None,
                      "rss_mb_max_after_2min": max(after2, default=None),
                      "rss_mb_end": memory[-1][1] if memory else None, "returncode": proc.returncode}), flush=True)
    (out / "rss.json").write_text(json.dumps(memory))
    if proc.returncode:
        print(log.read_text()[-2000:], file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    f1 = sub.add_parser("f1")
    f1.add_argument("--out", required=True)
    f1.add_argument("--config", default="configs/spotting/loso.yaml")
    f1.add_argument("--final-model", action="store_true", help="also fit the final causal model (for realtime)")
    f1.add_argument("overrides", nargs="*")
    rt = sub.add_parser("realtime")
    rt.add_argument("--model", required=True, help="a spotter folder trained with causal=true")
    rt.add_argument("--out", required=True)
    rt.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args(argv)
    {"f1": run_f1, "realtime": run_realtime}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

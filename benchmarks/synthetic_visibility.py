"""How visible the synthetic events and distractors are: one JSON line per kind (macro, micro, blink, talking).

Generates a dataset (default: configs/data/synthetic_demo.yaml) or reads an existing one, measures region motion
on the decoded videos (data.synthetic.plot: DIS flow over k = 0.2 s, head motion removed with the nose patch) and
reports each kind's peak motion in its own most-moved region, in px and as a ratio to that region's median motion.
Usage: python benchmarks/synthetic_visibility.py [--config FILE] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np

from data.synthetic.generate import generate, load_synthetic_config, video_ids
from data.synthetic.plot import video_visibility


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/data/synthetic_demo.yaml")
    parser.add_argument("--out", help="dataset folder (generated if missing; default: a temp folder)")
    args = parser.parse_args()
    cfg = load_synthetic_config(args.config)
    out = generate(cfg, args.out or tempfile.mkdtemp(prefix="synth_vis_"), progress=False)
    # k = 0.2 s suits micro-expressions (6 frames at 30 fps), 0.6 s the slower macro ones (18 frames).
    ks = [max(1, round(seconds * cfg.fps)) for seconds in (0.2, 0.6)]
    rows = [r for _, _, vid in video_ids(cfg) for k in ks for r in video_visibility(out, vid, k)]
    for kind, k in ((kind, k) for k in ks for kind in ("macro", "micro", "blink", "talking")):
        picked = [r for r in rows if r["kind"] == kind and r["k"] == k]
        peaks = np.array([r["peak_px"] for r in picked])
        ratios = np.array([r["ratio"] for r in picked])
        print(json.dumps({"bench": "synthetic_visibility", "config": args.config, "kind": kind, "k": k,
                          "count": len(picked), "peak_px_median": round(float(np.median(peaks)), 3),
                          "ratio_median": round(float(np.median(ratios)), 2),
                          "ratio_p10": round(float(np.percentile(ratios, 10)), 2),
                          "ratio_p90": round(float(np.percentile(ratios, 90)), 2)}), flush=True)


if __name__ == "__main__":
    main()

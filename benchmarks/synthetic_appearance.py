"""What optical flow sees of the appearance layers, and what pixels see: one JSON line per (frames, kind).

Each video of the config is rendered twice from one seed, warp-only and with the appearance layers (the same
events, head motion, light and noise: only the layers differ). Per event and distractor, in its own regions (the
flow cues' masks, data/flow/regions.py, from the identity's neutral landmarks), between its onset and apex frames,
each the mean over the region's top 10 % of pixels (as the cues' flow_top, so thin lines are not diluted):
  flow_top_px         DIS flow magnitude, head motion removed (the cues' flow_top)
  pixel_top_grey      |grey(apex) - grey(onset)|
  residual_top_grey   |grey(apex pulled back along the flow) - grey(onset)|: the change the flow does not explain
each warp-only and with layers (medians over the events) and the median of their per-event ratio. "still" is the
event alone on a still, evenly lit, noiseless face; "rendered" the renderer's frames (head motion, light, noise);
"decoded" their H.264 round trip at the config's crf (what every pipeline reads). Talking is measured from its
start to its widest jaw opening.
Usage: python benchmarks/synthetic_appearance.py [--config configs/data/synthetic_appearance.yaml]
         [--videos N] [subjects=2 ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np

from data.common.video_io import encode_mp4, read_frames
from data.flow import regions as flow
from data.synthetic.config import load_synthetic_config
from data.synthetic.faces import build_identity
from data.synthetic.generate import render_video, video_ids
from data.synthetic.motion import talking_curve
from data.synthetic.plot import event_stills

METRICS = ("flow_px", "pixel_grey", "residual_grey")


def _marks(meta: dict) -> list[dict]:
    """Events, and talking segments at their widest jaw opening, each with its regions and (onset, apex) pair."""
    marks = [{"kind": e["type"], "regions": e["regions"], "pair": (e["onset"], e["apex"]), "event": e}
             for e in meta["events"]]
    jaw = talking_curve(meta["talking"], np.arange(meta["num_frames"]) / meta["fps"])
    for s in meta["talking"]:
        peak = s["start"] + int(np.argmax(jaw[s["start"]:s["end"] + 1]))
        marks.append({"kind": "talking", "regions": ["mouth"], "pair": (s["start"], peak), "event": None})
    return marks


LINE_GREY = 1.5   # a pixel is on the layers' lines where they change its grey level at apex by more than this


def _top(values: np.ndarray) -> float:
    """Mean of the largest TOP_FRACTION of the values (the cues' *_top: a thin line is not diluted)."""
    top = max(1, int(len(values) * flow.TOP_FRACTION))
    return float(np.partition(values, len(values) - top)[-top:].mean())


def _maps(a: np.ndarray, b: np.ndarray, geometry, flow_fn) -> dict[str, np.ndarray]:
    """Per pixel, for frames a -> b: flow magnitude (head motion removed), |b - a|, and |b pulled back along the
    flow - a| (the change the flow does not explain)."""
    import cv2

    raw = flow_fn(a, b)
    field = flow.remove_head_motion(raw, geometry.rigid, "affine", geometry.rigid_solver)
    ys, xs = np.mgrid[0:a.shape[0], 0:a.shape[1]].astype(np.float32)
    pulled = cv2.remap(b, xs + raw[..., 0], ys + raw[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return {"flow_px": np.hypot(field[..., 0], field[..., 1]),
            "pixel_grey": np.abs(b.astype(np.float32) - a.astype(np.float32)),
            "residual_grey": np.abs(pulled.astype(np.float32) - a.astype(np.float32))}


def _measure(grey: dict[str, dict], pair, region: np.ndarray, lines: np.ndarray, geometry, flow_fn) -> dict:
    """Metrics of one pair of frames, warp-only ('warp') and with layers ('layers'): over the region's top 10 %
    of pixels, and the mean over the pixels on the layers' lines."""
    out = {"line_fraction": float(lines.sum() / max(region.sum(), 1))}
    for name, frames in grey.items():
        for metric, values in _maps(frames[pair[0]], frames[pair[1]], geometry, flow_fn).items():
            out[f"region_{metric}_{name}"] = _top(values[region])
            out[f"lines_{metric}_{name}"] = float(values[lines].mean()) if lines.any() else float("nan")
    return out


def _lines(warp_apex: np.ndarray, layers_apex: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The region's pixels whose grey level the layers change at apex (the two renders share their noise)."""
    diff = np.abs(flow.to_grey(layers_apex[None])[0].astype(np.float32) - flow.to_grey(warp_apex[None])[0])
    return region & (diff > LINE_GREY)


def _video_rows(cfg_warp, cfg_layers, subject: int, video: int, flow_fn, identities) -> list[dict]:
    frames_warp, meta = render_video(cfg_warp, subject, video, identities["warp"])
    frames_layers, meta_layers = render_video(cfg_layers, subject, video, identities["layers"])
    assert meta_layers["events"] == meta["events"] and meta_layers["head"] == meta["head"]
    geometry = flow.RegionGeometry.from_landmarks(identities["warp"].landmarks, (cfg_warp.size, cfg_warp.size))
    sources = {
        "rendered": {"warp": frames_warp, "layers": frames_layers},
        "decoded": {name: read_frames(encode_mp4(f, cfg_warp.fps, crf=cfg_warp.crf))
                    for name, f in (("warp", frames_warp), ("layers", frames_layers))},
    }
    rows = []
    for mark in _marks(meta):
        region = np.logical_or.reduce([geometry.regions[r] for r in mark["regions"]])
        onset, apex = mark["pair"]
        lines = _lines(frames_warp[apex], frames_layers[apex], region)
        for source, frames in sources.items():
            grey = {name: dict(zip((onset, apex), flow.to_grey(f[[onset, apex]]))) for name, f in frames.items()}
            rows.append({"frames": source, "kind": mark["kind"],
                         **_measure(grey, mark["pair"], region, lines, geometry, flow_fn)})
        if mark["event"] is not None:  # the event alone: neutral (index 0) and apex (index 1) frames
            warp, layers = (f.astype(np.uint8) for f in event_stills(identities["layers"], cfg_layers, mark["event"]))
            grey = {"warp": flow.to_grey(warp), "layers": flow.to_grey(layers)}
            rows.append({"frames": "still", "kind": mark["kind"],
                         **_measure(grey, (0, 1), region, _lines(warp[1], layers[1], region), geometry, flow_fn)})
    return rows


def _summary(rows: list[dict], config: str) -> list[dict]:
    lines = []
    for source in ("still", "rendered", "decoded"):
        for kind in ("macro", "micro", "talking"):
            picked = [r for r in rows if r["frames"] == source and r["kind"] == kind]
            if not picked:
                continue
            fraction = float(np.median([r["line_fraction"] for r in picked]))
            line = {"bench": "synthetic_appearance", "config": config, "frames": source, "kind": kind,
                    "count": len(picked), "line_fraction": round(fraction, 3)}
            for scope in ("region", "lines"):
                for metric in METRICS:
                    warp = np.array([r[f"{scope}_{metric}_warp"] for r in picked])
                    layers = np.array([r[f"{scope}_{metric}_layers"] for r in picked])
                    keep = np.isfinite(warp) & np.isfinite(layers)
                    line[f"{scope}_{metric}"] = [round(float(np.median(warp[keep])), 3),
                                                 round(float(np.median(layers[keep])), 3)]
                    line[f"{scope}_{metric}_ratio"] = round(
                        float(np.median(layers[keep] / np.maximum(warp[keep], 1e-6))), 3)
            lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/data/synthetic_appearance.yaml")
    parser.add_argument("--videos", type=int, help="measure only the first N videos (default: all)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    cfg = load_synthetic_config(args.config, args.overrides)
    cfg_layers = dataclasses.replace(cfg, appearance=dataclasses.replace(cfg.appearance, enabled=True))
    cfg_warp = dataclasses.replace(cfg, appearance=dataclasses.replace(cfg.appearance, enabled=False))
    flow_fn = flow.make_flow("dis")
    rows, identities = [], {}
    for s, v, _ in video_ids(cfg)[:args.videos]:
        if identities.get("subject") != s:
            identities = {"subject": s, "warp": build_identity(cfg_warp, s), "layers": build_identity(cfg_layers, s)}
        rows += _video_rows(cfg_warp, cfg_layers, s, v, flow_fn, identities)
    for line in _summary(rows, args.config):
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

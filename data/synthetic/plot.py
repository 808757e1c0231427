"""See that a synthetic video holds its events: region motion measured on the decoded video, ground truth shaded.

Motion is data.flow.regions's region curves: DIS optical flow from frame i to i+k with head motion removed (affine fit on
the nose and forehead) and the eye openings masked, in the brow, eye and mouth regions of the identity's neutral
landmarks. Plotted is the mean magnitude over each region's most-moving 10 % of pixels ("flow_top"), which a
small local motion is not diluted in. The same curves give each event's visibility: its peak over the region's
median.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from data.common.atomic import atomic_path
from data.flow import regions as flow
from data.synthetic.generate import neutral_landmarks, read_meta

FEATURE = "flow_top"
COLOURS = {"macro": "tab:orange", "micro": "tab:purple", "blink": "tab:blue", "talking": "tab:green"}


def default_k(fps: float) -> int:
    """Frame gap of the motion measure: 0.2 s (6 frames at 30 fps, the published micro k)."""
    return max(1, int(round(0.2 * fps)))


def region_motion(grey: np.ndarray, landmarks: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per region (brows, eyes, mouth): FEATURE at frame i for the motion from frame i to i+k."""
    size = (grey.shape[2], grey.shape[1])
    geometry = flow.RegionGeometry.from_landmarks(landmarks, size)
    curves = flow.region_curves(grey, k, geometry, flow.make_flow("dis"))[flow.FEATURES.index(FEATURE)]
    return {name: curves[:, r] for r, name in enumerate(flow.REGIONS)}


def _video_motion(dataset_dir, video_id: str, k: int | None):
    meta = read_meta(dataset_dir, video_id)
    k = k or default_k(meta["fps"])
    grey, _ = flow.read_grey(Path(dataset_dir) / "videos" / f"{video_id}.mp4")
    return meta, k, region_motion(grey, neutral_landmarks(dataset_dir, video_id), k)


def _marks(meta: dict) -> list[dict]:
    """Every ground-truth event and distractor as (kind, region, onset, offset)."""
    marks = [{"kind": e["type"], "regions": e["regions"], "onset": e["onset"], "offset": e["offset"],
              "label": e["emotion"]} for e in meta["events"]]
    marks += [{"kind": "blink", "regions": ["eyes"], "onset": b["onset"], "offset": b["offset"], "label": ""}
              for b in meta["blinks"]]
    marks += [{"kind": "talking", "regions": ["mouth"], "onset": s["start"], "offset": s["end"], "label": ""}
              for s in meta["talking"]]
    return marks


def visibility(meta: dict, motion: dict[str, np.ndarray], k: int) -> list[dict]:
    """Per event/distractor: peak motion over the pairs (i, i+k) that touch [onset, offset], divided by the
    region's median motion, taking the most-moved of the event's own regions."""
    rows = []
    for mark in _marks(meta):
        best = None
        for region in mark["regions"]:
            curve = motion[region][:-k]  # the last k frames have no pair
            peak = float(curve[max(0, mark["onset"] - k):mark["offset"] + 1].max())
            ratio = peak / max(float(np.median(curve)), 1e-6)
            if best is None or ratio > best["ratio"]:
                best = {"kind": mark["kind"], "region": region, "peak_px": peak, "ratio": ratio, "k": k}
        rows.append(best)
    return rows


def video_visibility(dataset_dir, video_id: str, k: int | None = None) -> list[dict]:
    meta, k, motion = _video_motion(dataset_dir, video_id, k)
    return visibility(meta, motion, k)


def plot_regions(dataset_dir, video_id: str, out_path=None, k: int | None = None) -> Path:
    """Write <dataset>/plots/<video>_regions.png: motion per region with events and distractors marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    meta, k, motion = _video_motion(dataset_dir, video_id, k)
    out_path = Path(out_path or Path(dataset_dir) / "plots" / f"{video_id}_regions.png")
    fig, axes = plt.subplots(len(motion) + 1, 1, figsize=(14, 9), sharex=True)
    frames = np.arange(meta["num_frames"])
    for ax, name in zip(axes, motion):
        # Plotted at i + k: the motion that ends at frame i + k, so peaks sit inside the shaded events.
        ax.plot(frames[k:], motion[name][:-k], color="black", lw=0.8)
        ax.set_ylabel(f"{name}\n{FEATURE} px (k={k})")
        for mark in _marks(meta):
            if mark["kind"] in ("macro", "micro") or name in mark["regions"]:
                ax.axvspan(mark["onset"], mark["offset"] + 1, color=COLOURS[mark["kind"]],
                           alpha=0.35 if name in mark["regions"] else 0.12, lw=0)
    for e in meta["events"]:
        axes[0].annotate(f"{e['type']} {e['emotion']}", (e["apex"], 1.0), xycoords=("data", "axes fraction"),
                         fontsize=7, rotation=30, va="bottom")
    head, light = meta["head"], meta["illumination"]
    axes[-1].plot(frames, head["tx"], label="head tx px")
    axes[-1].plot(frames, head["ty"], label="head ty px")
    axes[-1].plot(frames, head["rot_deg"], label="head rot deg")
    axes[-1].plot(frames, (np.asarray(light["gain"]) - 1) * 100, label="light gain - 1 (%)")
    axes[-1].legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1].set_xlabel(f"frame ({meta['fps']:g} fps)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.5) for c in COLOURS.values()]
    fig.legend(handles, list(COLOURS), loc="upper right", ncol=4, fontsize=8)
    fig.suptitle(f"{video_id}: region motion vs ground truth ({meta['identity']['source']})", x=0.3)
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out_path


def _aligned_crop(image: np.ndarray, landmarks: np.ndarray, size: int = 160) -> np.ndarray:
    import cv2

    from data.faces import landmarks as lm

    return cv2.warpAffine(image, lm.similarity_to_canonical(landmarks, size), (size, size), flags=cv2.INTER_AREA)


def plot_identities(tiles: list[tuple[str, str, list[str]]], out_path, rejected: bool = True,
                    columns: int = 8) -> Path:
    """A contact sheet: one tile per (source, person, sets) as build_identity renders it (default config, the
    output frame without the head-motion margin), then, with `rejected`, every face the setup turned down
    (aligned from the photograph) with its first reason."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from data.synthetic import real_faces
    from data.synthetic.config import IdentityConfig, SyntheticConfig
    from data.synthetic.faces import build_identity

    cells = []
    for source, person, sets in tiles:
        cfg = SyntheticConfig(identity=IdentityConfig(sources=[source]))
        ident = build_identity(cfg, 0)
        m, s = ident.margin, cfg.size
        label = f"{source}: {', '.join(sets) or 'no set'}\n" + "\n".join(textwrap.wrap(person, 30)[:2])
        cells.append((ident.base[m:m + s, m:m + s], label, "black"))
    if rejected:
        for name, entry in real_faces.read_index()["assets"].items():
            for i, face in enumerate(entry["faces"]):
                if face["problems"]:
                    image = real_faces.photograph_file(name)
                    crop = _aligned_crop(image, np.asarray(face["landmarks"], np.float32))
                    reason = "\n".join(textwrap.wrap(face["problems"][0], 30)[:2])
                    cells.append((crop, f"{name}:{i} rejected\n{reason}", "tab:red"))
    rows = -(-len(cells) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.45 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (image, text, colour) in zip(axes.ravel(), cells):
        ax.imshow(image)
        ax.set_title(text, fontsize=6.5, color=colour, loc="left")
    fig.suptitle(f"{len(tiles)} people the synthetic generator can use (source: the sets that use it / who)",
                 fontsize=10, x=0.02, ha="left")
    fig.tight_layout()
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out_path

"""See that a synthetic video holds its events: region motion measured on the decoded video, ground truth shaded;
and what each event changes on the face, with and without the appearance layers (wrinkles, shading).

Motion is data.flow.regions's region curves: DIS optical flow from frame i to i+k with head motion removed (affine fit on
the nose and forehead) and the eye openings masked, in the brow, eye and mouth regions of the identity's neutral
landmarks. Plotted is the mean magnitude over each region's most-moving 10 % of pixels ("flow_top"), which a
small local motion is not diluted in. The same curves give each event's visibility: its peak over the region's
median. The appearance figure renders each event's neutral and apex frames of the video's identity with no head
motion, light change or noise, once warp-only and once with the AU layers, so the difference is the event alone.
"""
from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np

from data.common.atomic import atomic_path
from data.flow import regions as flow
from data.synthetic.config import load_synthetic_config
from data.synthetic.faces import ACTION_UNITS, AU_INDEX, build_identity
from data.synthetic.generate import neutral_landmarks, read_meta
from data.synthetic.motion import appearance_weights, rise_decay
from data.synthetic.render import still_frames

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
    return _save(fig, out_path)


def _save(fig, out_path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out_path


def layered_identity(cfg, subject_index: int):
    """The subject's identity with its appearance layers at the config's strengths, even where the dataset has
    them off (so a figure can show what they would add)."""
    appearance = dataclasses.replace(cfg.appearance, enabled=True)
    return build_identity(dataclasses.replace(cfg, appearance=appearance), subject_index)


def event_curves(event: dict, frames: np.ndarray) -> np.ndarray:
    """AU amplitudes [len(frames), K] of one event alone (motion.au_curves for that event)."""
    course = rise_decay(event["onset"], event["apex"], event["offset"], max(int(frames.max()), event["offset"]) + 1)
    course = course[frames]
    curves = np.zeros((len(frames), len(ACTION_UNITS)), np.float32)
    for name, weight in event["action_units"].items():
        curves[:, AU_INDEX[name]] = event["amplitude_iod"] * weight * course
    return curves


def event_stills(identity, cfg, event: dict) -> tuple[np.ndarray, np.ndarray]:
    """Neutral and apex frames [2, S, S, 3] float32 of one event, warp-only and with the appearance layers, on a
    still, evenly lit, noiseless face."""
    curves = event_curves(event, np.array([event["onset"], event["apex"]]))
    weights = appearance_weights(curves, cfg.appearance.full_at_iod)
    return (still_frames(identity, curves, cfg.size).astype(np.float32),
            still_frames(identity, curves, cfg.size, weights).astype(np.float32))


def _course(ax, cfg, event: dict) -> None:
    """The event's warp course (amplitude over its apex value, the same for all its AUs) and each AU layer's
    weight across it: one shape, the layer's height set by the activation (faint for micro events)."""
    frames = np.arange(max(0, event["onset"] - 3), event["offset"] + 4)
    curves = event_curves(event, frames)
    weights = appearance_weights(curves, cfg.appearance.full_at_iod)
    ax.plot(frames, curves.max(1) / curves.max(), color="black", lw=1, label="warp / apex")
    for name in event["action_units"]:
        if getattr(cfg.appearance, name, 0) > 0:
            ax.plot(frames, weights[:, AU_INDEX[name]], ls="--", lw=1, label=f"{name} layer")
    ax.axvline(event["apex"], color="grey", lw=0.5)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=6, loc="upper right")
    ax.set_xlabel("frame", fontsize=8)


def face_box(landmarks: np.ndarray, size: int) -> tuple[slice, slice]:
    """Rows and columns of a frame from above the forehead lines to the chin, cheek to cheek."""
    iod = float(np.linalg.norm(landmarks[42:48].mean(0) - landmarks[36:42].mean(0)))
    x0, x1 = landmarks[:, 0].min() - 0.2 * iod, landmarks[:, 0].max() + 0.2 * iod
    y0, y1 = landmarks[17:27, 1].min() - 0.65 * iod, landmarks[:, 1].max() + 0.1 * iod
    y0, y1, x0, x1 = (int(np.clip(round(float(v)), 0, size)) for v in (y0, y1, x0, x1))
    return slice(y0, y1), slice(x0, x1)


def plot_appearance(dataset_dir, video_id: str, out_path=None, max_events: int = 6) -> Path:
    """Write <dataset>/plots/<video>_appearance.png: per event (up to `max_events`, macro first) its apex frame
    with the layers, |apex - neutral| warp-only and with layers on one scale, the layers' own change at apex, and
    the warp amplitude and layer weight over the event's frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset_dir = Path(dataset_dir)
    meta = read_meta(dataset_dir, video_id)
    cfg = load_synthetic_config(dataset_dir / "config.yaml")
    identity = layered_identity(cfg, int(meta["subject"][1:]) - 1)
    events = sorted(meta["events"], key=lambda e: (e["type"] != "macro", e["onset"]))[:max_events]
    box = face_box(identity.landmarks, cfg.size)
    out_path = Path(out_path or dataset_dir / "plots" / f"{video_id}_appearance.png")
    fig, axes = plt.subplots(max(1, len(events)), 5, figsize=(15, 3 * max(1, len(events))), squeeze=False)
    for row, event in zip(axes, events):
        warp, layered = (frames[:, box[0], box[1]] for frames in event_stills(identity, cfg, event))
        diffs = {"warp only": np.abs(warp[1] - warp[0]).mean(-1),
                 "warp + layers": np.abs(layered[1] - layered[0]).mean(-1)}
        own = (layered[1] - warp[1]).mean(-1)
        bound = max(float(np.abs(own).max()), 1.0)
        top = 1.5 * bound  # the layers' scale: the warp's moving edges (brows, lids, lips) saturate
        row[0].imshow(layered[1].astype(np.uint8))
        row[0].set_title(f"{event['type']} {event['emotion']}, apex frame {event['apex']}\n"
                         f"amplitude {event['amplitude_iod']:.3f} IOD, with layers", fontsize=8)
        for ax, (title, image) in zip(row[1:3], diffs.items()):
            ax.imshow(image, cmap="magma", vmin=0, vmax=top)
            ax.set_title(f"|apex - neutral|, {title}\nmean {image.mean():.2f}; 0-{top:.0f} grey levels, saturated",
                         fontsize=8)
        row[3].imshow(own, cmap="RdBu_r", vmin=-bound, vmax=bound)
        row[3].set_title(f"layers alone at apex\n(blue darker), +-{bound:.0f} grey levels", fontsize=8)
        for ax in row[:4]:
            ax.axis("off")
        _course(row[4], cfg, event)
    state = "on" if cfg.appearance.enabled else "off in this video, shown at the config's strengths"
    fig.suptitle(f"{video_id}: each event alone on a still, evenly lit, noiseless face (appearance layers {state})",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return _save(fig, out_path)


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

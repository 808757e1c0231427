"""Does every person render a usable synthetic video? One video per person, encoded, decoded and tracked with the
project's own face tracker (data.faces.track: dlib detection and 68 landmarks), as a spotting run would see it.

    python benchmarks/real_identities.py --out runs/real_identities [--config configs/data/synthetic_hard.yaml]
        [--sources fr_obama:0,astronaut] [--min-fraction 0.95] [key=value ...]

Every person gets the same video (the config's seed, subject 0, video 0: the same events, blinks, talking, head
motion and noise), so what differs is the face. The default config is the hard set's: its head motion and noise
are the strongest. One JSON line per person: the fraction of frames with a face, and the tracked landmarks'
median distance from where the generator put them (head pose applied; expressions move some points, so this is
not zero), in inter-ocular distances. Exit status 1 when a person's face fraction is below --min-fraction.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.faces import landmarks as lm  # noqa: E402
from data.faces.track import track_faces  # noqa: E402
from data.synthetic.generate import generate, load_synthetic_config, read_meta  # noqa: E402
from data.synthetic.identities_cli import SETS, all_people, set_people  # noqa: E402
from data.synthetic.real_faces import person  # noqa: E402


def truth_landmarks(meta: dict) -> np.ndarray:
    """[T, 68, 2]: the neutral landmarks moved by the rendered head pose (data.synthetic.render._pose_maps inverted:
    frame point = nose + t + s R(theta) (canonical point - nose))."""
    neutral = np.asarray(meta["identity"]["neutral_landmarks"], np.float64)
    centre = lm.canonical_points(meta["size"])[2].astype(np.float64)
    head = {k: np.asarray(v, np.float64) for k, v in meta["head"].items()}
    theta = np.deg2rad(head["rot_deg"])
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    d = (neutral - centre)[None]
    x = centre[0] + head["tx"][:, None] + head["scale"][:, None] * (cos * d[..., 0] - sin * d[..., 1])
    y = centre[1] + head["ty"][:, None] + head["scale"][:, None] * (sin * d[..., 0] + cos * d[..., 1])
    return np.stack([x, y], -1)


def check(cfg, source: str, out: Path) -> dict:
    cfg = dataclasses.replace(cfg, subjects=1, videos_per_subject=1,
                              identity=dataclasses.replace(cfg.identity, sources=[source]))
    folder = out / source.replace(":", "_").replace("/", "_")
    t0 = time.perf_counter()
    generate(cfg, folder, progress=False)
    track = track_faces(folder / "videos" / "s01_v01.mp4")
    meta = read_meta(folder, "s01_v01")
    truth = truth_landmarks(meta)
    iod = float(np.linalg.norm(truth[:, lm.LEFT_EYE].mean(1) - truth[:, lm.RIGHT_EYE].mean(1), axis=-1).mean())
    found = track.found
    error = np.linalg.norm(track.raw_landmarks[found] - truth[found], axis=-1).mean(1) / iod
    return {"bench": "real_identities", "source": source, "person": person(source),
            "frames": int(track.num_frames), "face_fraction": round(track.face_fraction, 4),
            "landmark_error_iod_median": round(float(np.median(error)), 4) if len(error) else None,
            "landmark_error_iod_p95": round(float(np.percentile(error, 95)), 4) if len(error) else None,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", default=SETS["hard"])
    parser.add_argument("--sources", help="comma-separated sources (default: one per person)")
    parser.add_argument("--min-fraction", type=float, default=0.95)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    cfg = load_synthetic_config(args.config, args.overrides)
    sources = args.sources.split(",") if args.sources else list(all_people().values())
    membership = set_people({k: v for k, v in SETS.items() if Path(v).is_file()})
    failed = []
    for source in sources:
        row = check(cfg, source, Path(args.out))
        row["sets"] = [k for k, v in membership.items() if row["person"] in v]
        print(json.dumps(row), flush=True)
        if row["face_fraction"] < args.min_fraction:
            failed.append(source)
    if failed:
        print(f"face found in fewer than {args.min_fraction:.0%} of the frames: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

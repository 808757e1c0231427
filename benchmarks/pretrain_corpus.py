"""The unlabeled pretraining corpus (issues 15, 27): synthetic subjects of 24 real people (none of the harder
benchmark's), plus the real carphone clip, as one video table for `python -m data pack` (labels are never read).

    python benchmarks/pretrain_corpus.py --out runs/corpus [--config configs/data/synthetic_corpus.yaml]
        [--add runs/bench/data/videos.csv]   # a transductive variant: the benchmark's own videos too
    python -m data pack --config configs/data/pack_stabilised.yaml source_path=runs/corpus/corpus.csv

Writes OUT/synthetic (the generated videos, skipped when complete) and OUT/corpus.csv (subject, video, path, fps,
num_frames; absolute paths).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.common.assets import carphone_video  # noqa: E402
from data.common.atomic import atomic_path  # noqa: E402
from data.common.tables import read_videos  # noqa: E402
from data.common.video_io import video_info  # noqa: E402
from data.synthetic.config import load_synthetic_config  # noqa: E402
from data.synthetic.generate import generate  # noqa: E402


def corpus_table(tables: list[Path]) -> pd.DataFrame:
    """The tables' videos, then carphone. Every table after the first gets its folder's name as a prefix of its
    video and subject names: synthetic sets all name their videos s01_v01, ..., and a video name must stay
    unique (it names the video's stabilised-stream cache)."""
    rows = []
    for i, t in enumerate(tables):
        table = read_videos(t)[["subject", "video", "path", "fps", "num_frames"]].copy()
        if i:
            for column in ("subject", "video"):
                table[column] = [f"{Path(t).parent.name}_{v}" for v in table[column]]
        rows.append(table)
    phone = carphone_video()
    info = video_info(phone)
    rows.append(pd.DataFrame([{"subject": "carphone", "video": "carphone", "path": str(phone), "fps": info["fps"],
                               "num_frames": info["num_frames"]}]))
    table = pd.concat(rows, ignore_index=True)
    table["path"] = [str(Path(p).resolve()) for p in table["path"]]
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", default="configs/data/synthetic_corpus.yaml")
    parser.add_argument("--add", action="append", default=[], help="more video tables to include")
    args = parser.parse_args(argv)
    out = Path(args.out)
    synth = out / "synthetic"
    if not (synth / "videos.csv").is_file():
        generate(load_synthetic_config(args.config, [f"out_dir={synth}"]))
    table = corpus_table([synth / "videos.csv"] + [Path(p) for p in args.add])
    with atomic_path(out / "corpus.csv", suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)
    print(f"{out / 'corpus.csv'}: {len(table)} videos, {int(table['num_frames'].sum())} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m data annotations FILE [--format NAME] --out intervals.csv`: annotation file -> interval table."""
from __future__ import annotations

import argparse

from data.annotations.adapters import FORMATS, load_annotations
from data.common.outputs import output_file
from data.common.tables import write_intervals


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data annotations",
                                description="Convert a dataset's annotation file to the interval table CSV.")
    p.add_argument("file", help="code_final.xlsx, SAMM_LongVideos_*.xlsx, CAS(ME)3 part A .xls, or a CSV")
    p.add_argument("--format", choices=FORMATS, default=None, help="annotation format (default: from the name)")
    p.add_argument("--frames-root", default=None,
                   help="CAS(ME)^3 only: folder of SUBJECT/SESSION/color/N.jpg, to map frame numbers with gaps")
    p.add_argument("--out", required=True, help="output interval table CSV (written atomically)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    output_file(args.out)
    df = load_annotations(args.file, format=args.format, frames_root=args.frames_root)
    write_intervals(df, args.out)
    counts = df["type"].value_counts()
    print(f"wrote {len(df)} intervals ({int(counts.get('macro', 0))} macro, {int(counts.get('micro', 0))} micro) "
          f"in {df['video'].nunique()} videos to {args.out}")
    return 0

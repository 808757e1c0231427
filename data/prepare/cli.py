"""`python -m data prepare ROOT --format casme2|samm|casme3|folder --annotations FILE --out DIR`

A dataset as published (CAS(ME)^2 rawpic/, SAMM_longvideos/, CAS(ME)^3 part A frame folders) or any folder of
videos / frame folders with a CSV interval table -> OUT with aligned face videos, videos.csv and intervals.csv
whose ids match (data.prepare.run). Videos are Ray tasks: a local Ray by default, a cluster with --address
(`ray job submit --working-dir . -- python -m data prepare ... --address auto`). Exit 0 when the tables were
written, 1 when some video failed (finished videos are kept; fix or --exclude the others and rerun).
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from data.faces.cli import add_face_args, face_config
from data.prepare.layouts import LAYOUTS
from data.prepare.run import PrepareConfig, prepare_dataset


def parse_args(argv: list[str]) -> argparse.Namespace:
    d = PrepareConfig(root=".", format="folder", out=".")
    p = argparse.ArgumentParser(prog="python -m data prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="the dataset folder (or its rawpic / SAMM_longvideos folder)")
    p.add_argument("--format", required=True, choices=list(LAYOUTS), help="the layout ROOT is in")
    p.add_argument("--annotations", default=None,
                   help="code_final.xlsx (casme2), SAMM_LongVideos_*.xlsx (samm), CAS(ME)3 part A .xls (casme3), "
                        "a CSV interval table (folder); leave out for unlabelled videos")
    p.add_argument("--out", required=True, help="the dataset folder to write")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate (default: CAS(ME)^2/^3 30, SAMM-LV 200, a video file's own; needed for "
                        "frame folders in the folder format)")
    add_face_args(p)
    p.add_argument("--address", default=d.address, help="Ray cluster address (auto inside `ray job submit`); "
                                                        "default: a local Ray")
    p.add_argument("--workers", type=int, default=d.workers, help="CPUs of the local Ray (default: all cores)")
    p.add_argument("--skip-missing", action="store_true",
                   help="drop annotated videos that have no frames (and their intervals) instead of failing")
    p.add_argument("--clip-intervals", action="store_true",
                   help="clip intervals that end past their video's last frame instead of failing")
    p.add_argument("--exclude", action="append", default=[], metavar="VIDEO",
                   help="leave this video (and its intervals) out; repeatable")
    p.add_argument("--min-face-fraction", type=float, default=d.min_face_fraction,
                   help=f"warn about videos with a face in fewer of their frames (default {d.min_face_fraction})")
    p.add_argument("--force", action="store_true", help="redo videos that already have results")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    cfg = PrepareConfig(root=args.root, format=args.format, out=args.out, annotations=args.annotations,
                        fps=args.fps, faces=face_config(args), address=args.address, workers=args.workers,
                        skip_missing=args.skip_missing, clip_intervals=args.clip_intervals, exclude=args.exclude,
                        min_face_fraction=args.min_face_fraction, force=args.force)
    report = prepare_dataset(cfg, progress=not args.no_progress)
    out = Path(cfg.out)
    annotated = report["videos"] - len(report["findings"]["unannotated"])
    print(f"prepare {cfg.format}: {report['videos']} videos ({annotated} annotated, {report['intervals']} "
          f"intervals), {report['processed']} processed, {report['already_done']} already done")
    for line in report["lines"]:
        print(f"  - {line}")
    if not report["complete"]:
        print(f"tables not written: {len(report['findings']['failed'])} video(s) failed (report: "
              f"{out / 'prepare.json'}). Fix or replace their frames or files, or leave them out with "
              f"--exclude VIDEO, and rerun: finished videos are kept.")
        return 1
    print(f"wrote {out / 'videos.csv'} and {out / 'intervals.csv'} (report: {out / 'prepare.json'})")
    q = shlex.quote  # commands to copy: a path with spaces stays one argument
    print(f"next: python -m spotting baseline --data {q(str(out))} --out {q(f'runs/baseline_{out.name}')}\n"
          f"      python -m spotting loso --config configs/spotting/loso.yaml {q(f'finetune.data.root={out}')} "
          f"{q(f'out=runs/loso_{out.name}')}")
    return 0

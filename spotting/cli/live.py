"""`python -m spotting live SOURCE --model DIR [--realtime] [--out DIR]`: spot expressions while a camera, a stream
or a file plays (spotting.live).

SOURCE: a camera index (0), a stream URL (rtsp://..., http://...) or a video file (as fast as it decodes, or at its
own rate with --realtime). Each interval is printed as one JSON line when it is decided; a status line on stderr
shows the stream time, the current scores, frames processed and dropped. Ctrl-C or the end of the stream decides
what is still due and writes everything (--out: <name>.csv, <name>.json, <name>_timeline.png).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from data.common.atomic import write_json
from data.common.outputs import OwnedOutputs
from data.common.storage import shared_location
from data.common.tables import write_predictions
from spotting.evaluation.plots import plot_timeline
from spotting.intervals import Interval, to_frame
from spotting.live.decide import Decision
from spotting.live.sources import FrameSource
from spotting.live.stream import LiveSpotter

STATUS_EVERY_S = 0.5  # the status line's refresh (a log line every 10 s when stderr is not a terminal)


def decision_record(d: Decision, rate: float) -> dict:
    i = d.interval
    return {"onset": i.onset, "apex": i.apex, "offset": i.offset, "onset_s": round(i.onset / rate, 3),
            "apex_s": round(i.apex / rate, 3), "offset_s": round((i.offset + 1) / rate, 3), "type": i.type,
            "score": round(i.score, 4), "decided_s": round(d.decided_s, 3),
            "latency_s": round(d.decided_s - (i.offset + 1) / rate, 3),
            "decided_at": datetime.datetime.now().isoformat(timespec="milliseconds")}


class Status:
    """One status line on stderr: rewritten in place on a terminal, a line every 10 s otherwise."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def show(self, spotter: LiveSpotter, source: FrameSource, decided: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < (STATUS_EVERY_S if self.tty else 10.0):
            return
        self.last = now
        scores = "  ".join(f"{k} {v:.2f}" for k, v in spotter.decider.latest.items())
        line = (f"t {spotter.now_s:7.1f} s  frames {spotter.stats.frames_in}  dropped {source.stats.dropped}  "
                f"{scores}  decided {decided}")
        print(("\r" + line + "  ") if self.tty else line, end="\n" if final or not self.tty else "",
              file=sys.stderr, flush=True)


def write_outputs(out: Path, name: str, records: list[dict], summary: dict, rate: float) -> None:
    names = {"csv": f"{name}.csv", "json": f"{name}.json", "timeline": f"{name}_timeline.png"}
    outputs = OwnedOutputs(out, list(names.values()))
    pred = to_frame([Interval(r["onset"], r["apex"], r["offset"], r["type"], r["score"]) for r in records], "", name)
    write_predictions(pred, outputs.path(names["csv"]))
    outputs.wrote(names["csv"])
    frames = max([summary["ticks"]] + [r["offset"] + 1 for r in records])
    videos = pd.DataFrame([{"subject": "", "video": name, "path": summary["source"], "fps": rate,
                            "num_frames": frames}])
    plot_timeline(None, pred, videos, outputs.path(names["timeline"]), title=f"{name} (live, no labels)",
                  labelled=False)
    outputs.wrote(names["timeline"])
    write_json(outputs.path(names["json"]), {**summary, "intervals": records})
    outputs.wrote(names["json"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m spotting live", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="camera index, stream URL or video file")
    parser.add_argument("--model", required=True, help="a spotter folder trained with `spotting loso causal=true`")
    parser.add_argument("--realtime", action="store_true", help="play a file at its own frame rate")
    parser.add_argument("--out", help="write <name>.csv / .json / _timeline.png here at the end")
    args = parser.parse_args(argv)
    out = Path(shared_location(args.out, "--out")) if args.out else None
    spotter = LiveSpotter.from_folder(args.model)
    rate = spotter.rate
    records, status, interrupted = [], Status(), False
    t0 = time.monotonic()
    with FrameSource(args.source, realtime=args.realtime) as source:
        print(f"live: {args.source} at {rate:g} Hz; Ctrl-C stops and writes what was decided", file=sys.stderr,
              flush=True)
        try:
            for frame, stamp in source:
                for d in spotter.push(frame, stamp):
                    records.append(decision_record(d, rate))
                    print(json.dumps(records[-1]), flush=True)
                status.show(spotter, source, len(records))
        except KeyboardInterrupt:
            interrupted = True
        for d in spotter.finish():
            records.append(decision_record(d, rate))
            print(json.dumps(records[-1]), flush=True)
        status.show(spotter, source, len(records), final=True)
    wall = time.monotonic() - t0
    latency = np.array([r["latency_s"] for r in records]) if records else np.zeros(0)
    summary = {"source": args.source, "model": args.model, "rate_hz": rate, "ticks": spotter.stats.ticks,
               "frames_read": source.stats.read, "frames_dropped": source.stats.dropped,
               "frames_repeated": spotter.stats.repeated, "gaps": spotter.stats.gaps,
               "ticks_unseen": spotter.stats.unseen,
               "ended": "interrupted" if interrupted else source.stats.ended, "wall_s": round(wall, 3),
               "frames_per_second": round(spotter.stats.frames_in / max(wall, 1e-9), 2),
               "latency_p50_s": round(float(np.median(latency)), 3) if len(latency) else None,
               "latency_p95_s": round(float(np.quantile(latency, 0.95)), 3) if len(latency) else None}
    print(f"{len(records)} intervals; {summary['frames_read']} frames read, {summary['frames_dropped']} dropped; "
          f"ended: {summary['ended']}", file=sys.stderr)
    if out is not None:
        write_outputs(out, Path(args.source).stem if source.is_file else "live", records, summary, rate)
    return 0

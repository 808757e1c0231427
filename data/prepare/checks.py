"""The checks `data prepare` runs before and after the face work, each naming what is wrong and where.

Before any work (from file names and the annotation table, no decoding):
- annotated videos with no frames on disk: an error listing them with where their frames should be
  (--skip-missing drops them and their intervals instead);
- frame folders without annotation: listed and kept (false positives count in every video);
- frame numbers used twice: an error; gaps in the numbering: listed, and annotations of the published datasets
  (which count file numbers) are mapped onto the frames present, as the CAS(ME)^3 adapter does;
- intervals past a video's last frame: an error listing them (--clip-intervals clips them instead).
A video file that does not open (empty, cut off, not a video) fails alone before the work; after the face work: a
face found in fewer than `min_face_fraction` of a video's frames (a warning with the fraction), no face at all or
unreadable frames (the video failed). Any failed video: the others finish, the tables are not written.
"""
from __future__ import annotations

import dataclasses
import difflib

import numpy as np
import pandas as pd

from data.annotations.reading import position_mapper
from data.common.errors import ConfigError, DataError
from data.common.frames import FrameFolder
from data.prepare.layouts import Layout, SourceVideo, probe

SHOWN = 5  # items named in one error line; the report file lists all


@dataclasses.dataclass
class Findings:
    """What the checks found: printed as the report and saved in prepare.json."""

    missing: list[str] = dataclasses.field(default_factory=list)  # annotated, no frames (dropped: --skip-missing)
    unannotated: list[str] = dataclasses.field(default_factory=list)
    excluded: list[str] = dataclasses.field(default_factory=list)
    gaps: dict[str, list[tuple[int, int]]] = dataclasses.field(default_factory=dict)  # missing frame numbers
    clipped: list[str] = dataclasses.field(default_factory=list)  # intervals past the end, clipped or dropped
    low_face: dict[str, float] = dataclasses.field(default_factory=dict)  # face fraction below the limit
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # video -> why it has no result


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _ranges(gaps: list[tuple[int, int]]) -> str:
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in gaps)


def report_lines(f: Findings, min_face_fraction: float) -> list[str]:
    """One line per finding, for the terminal."""
    lines = []
    if f.excluded:
        lines.append(f"excluded (--exclude), with their intervals: {_listed(f.excluded)}")
    if f.missing:
        lines.append(f"annotated but no frames on disk, dropped with their intervals (--skip-missing): "
                     f"{_listed(f.missing)}")
    if f.unannotated:
        lines.append(f"{len(f.unannotated)} video(s) without annotation, kept (no ground truth; their detections "
                     f"count as false positives): {_listed(f.unannotated)}")
    for video, gaps in f.gaps.items():
        count = sum(b - a + 1 for a, b in gaps)
        lines.append(f"gaps in frame numbering: {video}: number(s) {_ranges(gaps)} missing ({count} frames); "
                     f"positions count the frames present")
    for item in f.clipped:
        lines.append(f"interval past the last frame (--clip-intervals): {item}")
    for video, fraction in f.low_face.items():
        lines.append(f"face found in only {100 * fraction:.1f}% of the frames of {video} "
                     f"(< {100 * min_face_fraction:.0f}%): check its crops")
    for video, why in f.failed.items():
        lines.append(f"failed: {video}: {why}")
    return lines


def drop_excluded(videos: list[SourceVideo], intervals: pd.DataFrame, exclude: list[str], f: Findings):
    unknown = sorted(set(exclude) - {v.video for v in videos} - set(intervals["video"]))
    if unknown:
        raise ConfigError(f"--exclude names unknown video(s) {unknown}", field="exclude",
                          fix="use the video ids the report and videos.csv show")
    f.excluded = sorted(exclude)
    return [v for v in videos if v.video not in exclude], intervals[~intervals["video"].isin(exclude)]


def match_annotations(layout: Layout, videos: list[SourceVideo], intervals: pd.DataFrame, annotations,
                      skip_missing: bool, f: Findings):
    """Videos and intervals that meet on their ids; subjects filled in and compared."""
    on_disk = {v.video for v in videos}
    annotated = set(intervals["video"])
    if annotations is not None:  # without an annotation file, no video is expected to have one
        f.unannotated = sorted(on_disk - annotated)
    f.missing = sorted(annotated - on_disk)
    if f.missing and not skip_missing:
        subjects = dict(zip(intervals["video"], intervals["subject"]))
        shown = []
        for video in f.missing[:SHOWN]:
            where = layout.frame_path("ROOT", subjects[video], video, 1).parent
            close = difflib.get_close_matches(video, sorted(on_disk - annotated), n=1)
            shown.append(f"{video} (expected in {where}" + (f"; an unannotated folder is {close[0]!r}" if close else "")
                         + ")")
        more = f" and {len(f.missing) - SHOWN} more" if len(f.missing) > SHOWN else ""
        raise DataError(f"{len(f.missing)} annotated video(s) have no frames under ROOT: {'; '.join(shown)}{more}",
                        path=annotations, field="video",
                        fix="check ROOT and --format, or pass --skip-missing to drop them and their intervals")
    intervals = intervals[intervals["video"].isin(on_disk)]
    by_video = intervals.groupby("video")["subject"].unique()
    for video, subjects in by_video.items():
        if len(subjects) > 1:
            raise DataError(f"video {video!r} is annotated with several subjects {sorted(subjects)}",
                            path=annotations, field="subject", fix="give each video one subject")
    filled = []
    for v in videos:
        said = by_video[v.video][0] if v.video in by_video.index else None
        if v.subject is not None and said is not None and said != v.subject:
            raise DataError(f"video {v.video!r} lies under subject {v.subject!r} on disk but the annotations "
                            f"say {said!r}", path=annotations, field="subject",
                            fix="move the frames or correct the annotation's subject")
        filled.append(dataclasses.replace(v, subject=v.subject or said or v.video))
    return filled, intervals


def probe_videos(videos: list[SourceVideo], f: Findings) -> list[SourceVideo]:
    """The videos with their frame counts (data.prepare.layouts.probe). A video file that does not open (empty, cut
    off, not a video) fails alone: recorded in `f.failed` with the decoder's reason, left out of the work, so the
    others are still processed (the tables wait until it is fixed or excluded)."""
    found = []
    for v in videos:
        try:
            found.append(probe(v))
        except DataError as e:
            f.failed[v.video] = str(e)
    return found


def frame_numbers(v: SourceVideo, numbered: bool, f: Findings) -> np.ndarray | None:
    """The frame numbers of a frame folder (None for a video file, or unnumbered images where numbers are not
    needed); duplicates are an error, gaps are recorded."""
    if not isinstance(v.source, FrameFolder):
        return None
    numbers = v.source.numbers()
    if numbers is None:
        if numbered:
            raise DataError("the frame file names carry no frame numbers, which the annotations count",
                            path=v.source.folder, field="frames", fix="keep the file names the dataset ships")
        return None
    repeated = np.flatnonzero(np.diff(numbers) <= 0)
    if len(repeated):
        i = int(repeated[0])
        raise DataError(f"frames {v.source.files[i]} and {v.source.files[i + 1]} carry the same number "
                        f"{numbers[i]}", path=v.source.folder, field="frames", fix="remove the duplicate frame")
    gaps = v.source.gaps()
    if gaps:
        f.gaps[v.video] = gaps
    return numbers


def fit_to_frames(layout: Layout, videos: list[SourceVideo], intervals: pd.DataFrame, annotations, clip: bool,
                  f: Findings) -> pd.DataFrame:
    """Intervals as 0-based positions in each video's frames: past-the-end checked, file numbers mapped."""
    rows, past = [], []
    by_id = {v.video: v for v in videos}
    numbers = {v.video: frame_numbers(v, layout.numbered, f) for v in videos}
    for r in intervals.to_dict("records"):
        v = by_id[r["video"]]
        # The adapters of numbered layouts give (file number - 1); the last value that names a frame:
        last = int(numbers[v.video][-1]) - 1 if layout.numbered else v.num_frames - 1
        if r["offset"] > last:
            text = _past_end(r, last, layout.numbered)
            if not clip:
                past.append(text)
                continue
            if r["onset"] > last:
                f.clipped.append(f"{text}: dropped")
                continue
            f.clipped.append(f"{text}: offset -> {last}")
            r = {**r, "offset": last, "apex": min(r["apex"], last)}
        if layout.numbered:
            r = _to_position(r, numbers[v.video], annotations)
        rows.append(r)
    if past:
        raise DataError(f"{len(past)} interval(s) end past their video's last frame: {_listed(past)}",
                        path=annotations, field="offset",
                        fix="correct the annotation, or pass --clip-intervals to clip them to the last frame")
    return pd.DataFrame(rows, columns=intervals.columns)


def _past_end(r: dict, last: int, numbered: bool) -> str:
    """An interval past the end, in the numbers the annotation file uses (file numbers or 0-based frames)."""
    if numbered:
        return (f"{r['video']} {r['type']} {r['onset'] + 1}-{r['offset'] + 1} (file numbers; the last frame is "
                f"number {last + 1})")
    return f"{r['video']} {r['type']} {r['onset']}-{r['offset']} (the last frame is {last})"


def _to_position(r: dict, numbers: np.ndarray, annotations) -> dict:
    """File numbers -> positions among the frames present (onset up, offset and apex down to a present frame)."""
    to_index = position_mapper(numbers)
    onset, offset = to_index(r["onset"] + 1, "first"), to_index(r["offset"] + 1, "last")
    if onset > offset:
        raise DataError(f"{r['video']}: no frame of the video lies in [{r['onset'] + 1}, {r['offset'] + 1}] "
                        f"(file numbers)", path=annotations, field="onset", fix="check the frame folder")
    apex = min(max(to_index(r["apex"] + 1, "last"), onset), offset)
    return {**r, "onset": onset, "apex": apex, "offset": offset}

"""The interval table and the video table (DESIGN.md §3): read, validate, write.

Interval table: subject,video,onset,apex,offset,type,emotion (frames are 0-based, inclusive integers).
Predictions: the same columns plus score. Video table: subject,video,path,fps,num_frames.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import pandas as pd

from data.common.atomic import atomic_path
from data.common.errors import DataError
from data.common.video_io import video_info

INTERVAL_COLUMNS = ["subject", "video", "onset", "apex", "offset", "type", "emotion"]
PREDICTION_COLUMNS = INTERVAL_COLUMNS + ["score"]
VIDEO_COLUMNS = ["subject", "video", "path", "fps", "num_frames"]
TYPES = ("macro", "micro")
EVENT_COLUMNS = ["subject", "video", "onset", "apex", "offset", "type"]  # what makes two rows the same event

log = logging.getLogger(__name__)


def empty_intervals(with_score: bool = False) -> pd.DataFrame:
    cols = PREDICTION_COLUMNS if with_score else INTERVAL_COLUMNS
    return validate_intervals(pd.DataFrame({c: [] for c in cols}), "<empty>", with_score)


def expression_type(text) -> str | None:
    """'macro' or 'micro' for a type as tables write it (any case and spacing; 'Macro-expression', 'Micro - 1/2'),
    None for anything else: the one reading of the type column, for ground truth and predictions alike."""
    text = " ".join(str(text).split()).lower()
    return next((kind for kind in TYPES if text.startswith(kind)), None)


def read_csv_cells(path, fix: str) -> pd.DataFrame:
    """A CSV with a header row, every cell as text. A data row with more fields than the header names is an error
    naming the row: pandas would take the first column for an index and shift every other column by one, so the
    error would blame the wrong column (a trailing comma on the data rows only is the usual cause)."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"cannot parse as CSV: {e}", path=path, fix=fix) from None
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        width = len(next(reader, []))
        for row in reader:
            if len(row) > width:
                trailing = " (a trailing comma?)" if not any(cell.strip() for cell in row[width:]) else ""
                raise DataError(f"row {reader.line_num} has {len(row)} fields but the header names {width} "
                                f"columns{trailing}", path=path,
                                fix="remove the extra field (or trailing comma) from the data rows, or name the "
                                    "column in the header")
    return df


def _read_csv(path, columns: list[str], what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found", path=path, fix="check the path")
    df = read_csv_cells(path, fix=f"write a CSV with columns {columns}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {list(df.columns)}", path=path,
                        field=missing[0], fix=f"the header must hold {columns}")
    return df[columns]


def _as_int(df: pd.DataFrame, col: str, source: str) -> None:
    values = pd.to_numeric(df[col], errors="coerce") if len(df) else df[col].astype("int64")
    bad = values.isna() | (values.round() != values) if len(df) else values.isna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"row {row + 2}: {df[col].iloc[row]!r} is not an integer frame number", path=source,
                        field=col, fix="frames are 0-based integers")
    df[col] = values.astype("int64")


def drop_repeats(df: pd.DataFrame, source, rows: list[int] | None = None, shown: int = 5) -> pd.DataFrame:
    """`df` without the rows that repeat an earlier row's event (EVENT_COLUMNS), with a warning naming them.

    A repeated ground-truth event is a second event that no prediction can match (one prediction matches one
    event): it would count as one more miss. `rows` are the row numbers the user sees (default: CSV lines,
    header = line 1).
    """
    repeated = df.duplicated(subset=EVENT_COLUMNS, keep="first")
    if not repeated.any():
        return df
    numbers = list(rows) if rows is not None else list(range(2, len(df) + 2))
    first_of = {}
    pairs = []
    for number, key, again in zip(numbers, df[EVENT_COLUMNS].itertuples(index=False, name=None), repeated):
        if again:
            pairs.append(f"row {number} repeats row {first_of[key]}")
        else:
            first_of[key] = number
    log.warning("%s: %d repeated row(s) dropped (each event counts once): %s%s", source, len(pairs),
                "; ".join(pairs[:shown]), "; ..." if len(pairs) > shown else "")
    return df[~repeated.to_numpy()]


def validate_intervals(df: pd.DataFrame, source="<table>", with_score: bool = False,
                       num_frames: dict | None = None) -> pd.DataFrame:
    """Check types and ordering; row numbers in errors are CSV line numbers (header = line 1)."""
    df = df.copy()
    for col in ("subject", "video", "type", "emotion"):
        df[col] = df[col].astype(str).fillna("")
    df["type"] = [expression_type(t) or t for t in df["type"]]
    for col in ("onset", "apex", "offset"):
        _as_int(df, col, source)
    if with_score:
        df["score"] = pd.to_numeric(df["score"], errors="coerce").astype("float64")
        if df["score"].isna().any():
            row = int(df["score"].isna().to_numpy().nonzero()[0][0])
            raise DataError(f"row {row + 2}: score is not a number", path=source, field="score")
    checks = [
        (~df["type"].isin(TYPES), "type", "must be macro or micro (any case; also 'Macro-expression', 'Micro - 1/2')"),
        (df["onset"] < 0, "onset", "must be >= 0"),
        (df["onset"] > df["offset"], "offset", "onset is after offset"),
        ((df["apex"] < df["onset"]) | (df["apex"] > df["offset"]), "apex", "apex lies outside [onset, offset]"),
    ]
    if num_frames is not None:
        limit = pd.to_numeric(df["video"].map(num_frames), errors="coerce")  # numeric even for an empty table
        checks.append((limit.notna() & (df["offset"] >= limit.fillna(0)), "offset",
                       "offset is beyond the last frame of the video"))
    for bad, field, message in checks:
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            r = df.iloc[row]
            raise DataError(f"row {row + 2} ({r['video']} {r['onset']}-{r['offset']} {r['type']!r}): {message}",
                            path=source, field=field, fix="correct the row")
    if not with_score:  # predictions may repeat an interval: each copy is a false positive, as it should be
        df = drop_repeats(df, source)
    return df.reset_index(drop=True)


def read_intervals(path, with_score: bool = False, num_frames: dict | None = None) -> pd.DataFrame:
    cols = PREDICTION_COLUMNS if with_score else INTERVAL_COLUMNS
    return validate_intervals(_read_csv(path, cols, "interval table"), str(path), with_score, num_frames)


def read_predictions(path, num_frames: dict | None = None) -> pd.DataFrame:
    return read_intervals(path, with_score=True, num_frames=num_frames)


def read_videos(path) -> pd.DataFrame:
    """Read the video table; relative video paths are resolved against the table's folder."""
    df = _read_csv(path, VIDEO_COLUMNS, "video table").copy()
    _as_int(df, "num_frames", str(path))
    df["fps"] = pd.to_numeric(df["fps"], errors="coerce")
    if df["fps"].isna().any() or (df["fps"] <= 0).any():
        row = int((df["fps"].isna() | (df["fps"] <= 0)).to_numpy().nonzero()[0][0])
        raise DataError(f"row {row + 2}: fps must be a positive number", path=path, field="fps")
    root = Path(path).parent
    df["path"] = [str(p if Path(p).is_absolute() else root / p) for p in df["path"]]
    dup = df["video"].duplicated()
    if dup.any():
        raise DataError(f"video {df['video'][dup].iloc[0]!r} is listed twice", path=path, field="video")
    return df.reset_index(drop=True)


def check_video_lengths(videos: pd.DataFrame, table) -> None:
    """DataError naming the first row of a video table (read_videos) whose num_frames differs from its video's
    frame count: a wrong count puts windows, labels and the last-frame check in the wrong place."""
    for i, r in enumerate(videos.itertuples(index=False)):
        actual = video_info(r.path)["num_frames"]
        if actual != int(r.num_frames):
            raise DataError(f"row {i + 2} ({r.video}): num_frames is {r.num_frames}, but {r.path} has {actual} "
                            f"frames", path=table, field="num_frames", fix="correct the row to the video's length")


def write_table(df: pd.DataFrame, path, columns: list[str]) -> Path:
    """Write CSV atomically with exactly `columns`, rows sorted by video then onset when present."""
    path = Path(path)
    out = df[columns]
    if "onset" in columns:
        out = out.sort_values(["video", "onset", "offset"], kind="stable")
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False)
    return path


def write_intervals(df, path):
    return write_table(df, path, INTERVAL_COLUMNS)


def write_predictions(df, path):
    return write_table(df, path, PREDICTION_COLUMNS)


def write_videos(df, path):
    return write_table(df, path, VIDEO_COLUMNS)

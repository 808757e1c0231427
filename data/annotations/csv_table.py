"""A CSV interval table (ours, or a friendlier one) -> the interval table."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from data.annotations.reading import finish, interval, norm, rows
from data.common.errors import DataError
from data.common.tables import read_csv_cells


def load_csv(path) -> pd.DataFrame:
    """A CSV with a header row; column names are case-insensitive, extra columns are ignored.

    Required: video, onset, offset (0-based inclusive integer frames), type (macro / micro, any
    case; "Macro-expression", "micro-expression", "Micro - 1/2" are accepted too).
    Optional: subject (default: the video id), apex (default: the midpoint of onset and offset),
    emotion (default: empty). The interval table itself (data.common.tables) is such a file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("annotation file not found", path=path, fix="check the path")
    df = read_csv_cells(path, fix="write a CSV with a header row: video,onset,offset,type[,subject,apex,emotion]")
    names = {norm(c): c for c in df.columns}
    missing = [c for c in ("video", "onset", "offset", "type") if c not in names]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {list(df.columns)}", path=path, field=missing[0],
                        fix="the header must name video, onset, offset and type")
    wanted = ["video", "onset", "offset", "type", "subject", "apex", "emotion"]
    columns = {w: list(df.columns).index(names[w]) for w in wanted if w in names}
    records, stats = [], Counter()
    for row in rows(df, 0, columns, path, first_number=2, letters=False):
        video = row.text("video")
        onset, apex, offset = interval(row, stats, base=0, integer=True)
        records.append({"row": row.line, "subject": row.text("subject", required=False) or video, "video": video,
                        "onset": onset, "apex": apex, "offset": offset, "type": row.kind("type"),
                        "emotion": row.text("emotion", required=False)})
    if "apex" not in columns:
        stats.pop("apex missing -> midpoint", None)  # no apex column is a documented default, not a repair
    return finish(records, path, stats)

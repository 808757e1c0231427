"""A synthetic dataset (data.synthetic) rewritten as a published one: its videos as JPEG frame folders named as
CAS(ME)^2 or SAMM-LV name them, its intervals in that dataset's annotation workbook (tests/workbooks.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from data.common.tables import read_intervals, read_videos
from data.common.video_io import read_frames
from data.prepare.layouts import LAYOUTS
from tests.workbooks import SAMM_HEADER, write_casme2, write_samm


def published_ids(fmt: str, subjects: list[str]) -> dict[str, tuple[int, str, str]]:
    """Synthetic subject -> (the dataset's subject index / number, subject id, video id) for one video each.
    CAS(ME)^2 subject indices 1, 2, 3 are s15, s16, s19 in its published naming rule; the video is the
    anger1 stimulus (0401girlcrashing). SAMM-LV subjects are numbered from 006."""
    casme2_numbers = (15, 16, 19, 20, 21)
    ids = {}
    for i, s in enumerate(subjects):
        if fmt == "casme2":
            n = casme2_numbers[i]
            ids[s] = (i + 1, f"s{n}", f"{n}_0401girlcrashing")
        else:
            ids[s] = (6 + i, f"{6 + i:03d}", f"{6 + i:03d}_1")
    return ids


def export(dataset, fmt: str, root, quality: int = 95) -> tuple[Path, pd.DataFrame]:
    """Write the dataset under `root` in the layout of `fmt` ("casme2" or "samm"); returns (the annotation
    workbook, the dataset's intervals under the published ids: what prepare must give back)."""
    import cv2

    dataset, root = Path(dataset), Path(root)
    videos = read_videos(dataset / "videos.csv")
    if videos["subject"].duplicated().any():
        raise ValueError("one video per subject: the published ids here name one video per subject")
    ids = published_ids(fmt, sorted(videos["subject"]))
    for r in videos.itertuples():
        _, subject, video = ids[r.subject]
        for i, frame in enumerate(read_frames(r.path)):
            path = LAYOUTS[fmt].frame_path(root, subject, video, i + 1)  # both datasets number frames from 1
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    gt = read_intervals(dataset / "intervals.csv")
    expected = gt.assign(subject=[ids[s][1] for s in gt["subject"]], video=[ids[s][2] for s in gt["subject"]])
    if fmt == "casme2":
        rows = [[ids[r.subject][0], f"anger1_{k + 1}", r.onset + 1, r.apex + 1, r.offset + 1, "", r.emotion,
                 f"{r.type}-expression", ""] for k, r in enumerate(gt.itertuples())]
        book = write_casme2(root / "CAS(ME)^2code_final.xlsx", rows=rows, naming=False)
    else:
        rows = [[ids[r.subject][0], f"{ids[r.subject][2]}_{k + 1}", 1, r.onset + 1, r.apex + 1, r.offset + 1,
                 r.offset - r.onset + 1, "Macro" if r.type == "macro" else "Micro - 1/2", "", ""]
                for k, r in enumerate(gt.itertuples())]
        book = write_samm(root / "SAMM_LongVideos_V2_Release.xlsx", header=SAMM_HEADER, rows=rows)
        expected = expected.assign(emotion="")  # the SAMM-LV release sheet has no emotion column
    return book, expected.sort_values(["video", "onset", "offset"]).reset_index(drop=True)

"""Annotation adapters (data/annotations): real file layouts written by tests/workbooks.py (openpyxl / xlwt)."""
from __future__ import annotations

import logging

import pandas as pd
import pytest

from data.__main__ import COMMANDS
from data.annotations.adapters import guess_format, load_annotations, load_casme2, load_casme3, load_csv, load_samm
from data.common.cli import dispatch
from data.common.errors import DataError
from data.common.tables import INTERVAL_COLUMNS, read_intervals, write_intervals
from tests.workbooks import (
    CASME2_ROWS,
    CASME3_HEADER,
    CASME3_ROWS,
    SAMM_HEADER,
    SAMM_ROWS,
    write_casme2,
    write_casme3,
    write_samm,
)


def as_tuples(df):
    return [tuple(r) for r in df[["subject", "video", "onset", "apex", "offset", "type", "emotion"]].itertuples(index=False)]


# ---------------------------------------------------------------- CAS(ME)^2

def test_casme2_reads_real_layout(tmp_path, caplog):
    path = write_casme2(tmp_path / "CAS(ME)^2code_final.xlsx")
    with caplog.at_level(logging.WARNING, logger="data.annotations.adapters"):
        df = load_annotations(path)
    assert list(df.columns) == INTERVAL_COLUMNS
    assert as_tuples(df) == [
        ("s15", "15_0401girlcrashing", 556, 571, 607, "macro", "negative"),
        ("s15", "15_0401girlcrashing", 2853, 2861, 2861, "macro", "others"),
        ("s16", "16_0101disgustingteeth", 99, 103, 109, "micro", "negative"),
        ("s16", "16_0502funnyerrors", 0, 2, 19, "macro", "positive"),
    ]
    assert "1 row(s): offset 0 -> apex" in caplog.text


def test_casme2_without_naming_sheets_uses_published_rules(tmp_path):
    with_sheets = load_casme2(write_casme2(tmp_path / "a_code_final.xlsx"))
    without = load_casme2(write_casme2(tmp_path / "b_code_final.xlsx", naming=False))
    pd.testing.assert_frame_equal(with_sheets, without)
    # Index 22 is subject 40 in the published rule.
    row = [22, "happy5_1", 10, 12, 14, "", "positive", "micro-expression", ""]
    df = load_casme2(write_casme2(tmp_path / "c_code_final.xlsx", rows=[row], naming=False))
    assert as_tuples(df) == [("s40", "40_0508funnydunkey", 9, 11, 13, "micro", "positive")]


@pytest.mark.parametrize("cell, value, message, column", [
    (2, "abc", "'abc' is not a number", "C (onset)"),
    (4, 500, "onset 557 is after offset 500", "E (offset)"),
    (7, "nano-expression", "unknown expression type", "H (type)"),
    (0, 9, "unknown subject index 9", "A (subject index)"),
    (1, "fear1_1", "unknown expression name 'fear1'", "B (expression)"),
])
def test_casme2_bad_cells_name_row_and_column(tmp_path, cell, value, message, column):
    rows = [list(r) for r in CASME2_ROWS]
    rows[2 if cell != 4 else 0][cell] = value
    path = write_casme2(tmp_path / "code_final.xlsx", rows=rows)
    with pytest.raises(DataError) as e:
        load_casme2(path)
    text = str(e.value)
    assert str(path) in text and message in text and f"column {column}" in text
    assert f"row {3 if cell != 4 else 1}," in text
    assert e.value.fix


def test_casme2_wrong_layout(tmp_path):
    header = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Emotion", "Type", "Self"]
    path = write_casme2(tmp_path / "code_final.xlsx", rows=[header] + CASME2_ROWS)
    with pytest.raises(DataError, match="does not look like code_final") as e:
        load_casme2(path)
    assert e.value.field == "layout" and "no header row" in e.value.fix
    narrow = write_casme2(tmp_path / "narrow_code_final.xlsx", rows=[r[:5] for r in CASME2_ROWS])
    with pytest.raises(DataError, match="5 columns"):
        load_casme2(narrow)


def test_missing_and_non_excel_files(tmp_path):
    with pytest.raises(DataError, match="not found") as e:
        load_annotations(tmp_path / "code_final.xlsx")
    assert str(tmp_path / "code_final.xlsx") in str(e.value)
    fake = tmp_path / "SAMM_LongVideos_V2_Release.xlsx"
    fake.write_text("subject,video\n")
    with pytest.raises(DataError, match="cannot read as an Excel workbook") as e:
        load_annotations(fake)
    assert str(fake) in str(e.value)
    fake_xls = tmp_path / "CAS(ME)3_part_A_v1.xls"
    fake_xls.write_bytes(b"\x00\x01 not a workbook")
    with pytest.raises(DataError, match="Excel"):
        load_annotations(fake_xls)
    fake_xls.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600))  # OLE2 magic, corrupt body
    with pytest.raises(DataError, match="cannot read as an Excel workbook"):
        load_annotations(fake_xls)


# ---------------------------------------------------------------- SAMM-LV

def test_samm_reads_release_layout(tmp_path, caplog):
    path = write_samm(tmp_path / "SAMM_LongVideos_V2_Release.xlsx")
    with caplog.at_level(logging.WARNING, logger="data.annotations.adapters"):
        df = load_annotations(path)
    assert as_tuples(df) == [
        ("007", "007_6", 999, 1010, 1039, "macro", ""),  # 1000.4 -> 1000, 1010.5 -> 1011 (half up), 1-based
        ("007", "007_6", 1999, 2029, 2059, "micro", ""),  # apex -1 -> midpoint
        ("011", "011_2", 4, 8, 12, "micro", ""),  # 12.5 -> 13
    ]
    assert "apex missing -> midpoint" in caplog.text and "rounded half up" in caplog.text


def test_samm_errors(tmp_path):
    rows = [list(r) for r in SAMM_ROWS]
    rows[1][3] = "x"
    path = write_samm(tmp_path / "SAMM_LongVideos_V1_Release.xlsx", rows=rows)
    with pytest.raises(DataError, match=r"row 12, column D \(Onset\): 'x' is not a number"):
        load_samm(path)
    header = [h for h in SAMM_HEADER if h != "Apex"]
    path = write_samm(tmp_path / "SAMM_b.xlsx", header=header, rows=[r[:4] + r[5:] for r in SAMM_ROWS])
    with pytest.raises(DataError, match=r"header row 10 lacks column\(s\) \['Apex'\]") as e:
        load_samm(path)
    assert e.value.field == "Apex"
    rows = [list(r) for r in SAMM_ROWS]
    rows[0][7] = "Blink"
    with pytest.raises(DataError, match=r"row 11, column H \(Type\): unknown expression type 'blink'"):
        load_samm(write_samm(tmp_path / "SAMM_c.xlsx", rows=rows))
    # A CAS(ME)^2 sheet handed to the SAMM reader: no header row at all.
    with pytest.raises(DataError, match="no header row") as e:
        load_samm(write_casme2(tmp_path / "SAMM_d.xlsx"))
    assert e.value.field == "layout"


# ---------------------------------------------------------------- CAS(ME)^3

def test_casme3_without_frames_assumes_one_based(tmp_path, caplog):
    path = write_casme3(tmp_path / "CAS(ME)3_part_A_v1.xls")
    with caplog.at_level(logging.WARNING, logger="data.annotations.adapters"):
        df = load_annotations(path)
    assert "gap-free" in caplog.text
    assert as_tuples(df) == [
        ("spNO.1", "spNO.1_a", 9, 14, 19, "macro", "happy"),
        ("spNO.1", "spNO.1_a", 5, 8, 11, "micro", "disgust"),
        ("spNO.2", "spNO.2_b", 2, 3, 4, "micro", "surprise"),
    ]


def test_casme3_maps_frame_numbers_with_gaps(tmp_path):
    frames = tmp_path / "part_A"
    for subject, session, numbers in (("spNO.1", "a", [n for n in range(1, 31) if n not in (5, 6, 7)]),
                                      ("spNO.2", "b", range(0, 10))):
        folder = frames / subject / session / "color"
        folder.mkdir(parents=True)
        for n in numbers:
            (folder / f"{n}.jpg").touch()
    path = write_casme3(tmp_path / "CAS(ME)3_part_A_v1.xls")
    df = load_casme3(path, frames_root=frames)
    # spNO.1/a has 1,2,3,4,8,9,...: number 10 is position 6; onset 6 (dropped) -> first frame after it (8 -> 4).
    assert as_tuples(df)[:2] == [("spNO.1", "spNO.1_a", 6, 11, 16, "macro", "happy"),
                                 ("spNO.1", "spNO.1_a", 4, 5, 8, "micro", "disgust")]
    assert as_tuples(df)[2][2:5] == (3, 4, 5)  # spNO.2/b starts at 0.jpg
    rows = [["spNO.1", "a", 5, 6, 7, "", "Micro-expression", "", ""]]
    with pytest.raises(DataError, match=r"row 2, column E \(Offset\): no frame of the video lies in \[5, 7\]"):
        load_casme3(write_casme3(tmp_path / "gap.xls", rows=rows), frames_root=frames)
    with pytest.raises(DataError, match="no numbered frames"):
        load_casme3(write_casme3(tmp_path / "other.xls", rows=[["spNO.9"] + CASME3_ROWS[0][1:]]), frames_root=frames)


def test_casme3_missing_type_column(tmp_path):
    header = CASME3_HEADER[:6] + ["Kind"] + CASME3_HEADER[7:]
    with pytest.raises(DataError, match=r"header row 1 lacks column\(s\) \['Expression type'\]"):
        load_casme3(write_casme3(tmp_path / "x.xls", header=header))


# ---------------------------------------------------------------- CSV and dispatch

def test_csv_interval_table_round_trip(tmp_path):
    df = load_casme2(write_casme2(tmp_path / "code_final.xlsx"))
    write_intervals(df, tmp_path / "intervals.csv")
    back = load_annotations(tmp_path / "intervals.csv")
    pd.testing.assert_frame_equal(back.sort_values(["video", "onset"]).reset_index(drop=True),
                                  df.sort_values(["video", "onset"]).reset_index(drop=True))


def test_csv_friendly_variant(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("Video,Onset,Offset,Type,Score\nclip1,10,20,Macro,0.3\nclip1,40,44,micro-expression,1\n"
                    "clip2,0,0,MICRO,1\n")
    df = load_csv(path)
    assert as_tuples(df) == [("clip1", "clip1", 10, 15, 20, "macro", ""), ("clip1", "clip1", 40, 42, 44, "micro", ""),
                             ("clip2", "clip2", 0, 0, 0, "micro", "")]


@pytest.mark.parametrize("body, message", [
    ("video,onset,offset,type\nv,1.5,4,macro\n", r"row 2, column 'onset': '1.5' is not an integer"),
    ("video,onset,offset,type\nv,1,4,macro\nv,9,4,micro\n", r"row 3, column 'offset': onset 9 is after offset 4"),
    ("video,onset,offset,type\nv,1,4,big\n", r"row 2, column 'type': unknown expression type 'big'"),
    ("video,onset,type\nv,1,macro\n", r"missing column\(s\) \['offset'\]"),
    ("video,onset,offset,type\nv,-3,4,macro\n", r"row 2, column 'onset': frame -3 is before the first frame"),
])
def test_csv_errors(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(DataError, match=message) as e:
        load_csv(path)
    assert str(path) in str(e.value)


def test_guess_format(tmp_path):
    assert guess_format("x/CAS(ME)^2code_final.xlsx") == "casme2"
    assert guess_format("SAMM_LongVideos_V1_Release.xlsx") == "samm"
    assert guess_format("CAS(ME)3_part_A_v1.xls") == "casme3"
    assert guess_format("gt.csv") == "csv"
    with pytest.raises(DataError, match="format"):
        guess_format("labels.txt")


def test_annotations_cli(tmp_path, capsys):
    src = write_samm(tmp_path / "SAMM_LongVideos_V2_Release.xlsx")
    out = tmp_path / "out" / "intervals.csv"
    assert dispatch("data", COMMANDS, ["annotations", str(src), "--out", str(out)]) == 0
    assert "wrote 3 intervals (1 macro, 2 micro) in 2 videos" in capsys.readouterr().out
    pd.testing.assert_frame_equal(read_intervals(out), load_samm(src))
    assert dispatch("data", COMMANDS, ["annotations", str(src), "--format", "casme2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(src) in err

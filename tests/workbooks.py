"""Annotation workbooks in the exact layouts the datasets ship (openpyxl for .xlsx, xlwt for the old .xls):
CAS(ME)^2 code_final.xlsx, SAMM-LV SAMM_LongVideos_*_Release.xlsx, CAS(ME)^3 part A .xls."""
from __future__ import annotations

import openpyxl
import xlwt

CASME2_ROWS = [
    [1, "anger1_1", 557, 572, 608, "4+10+14+15", "negative", "macro-expression", "anger"],
    [1, "anger1_2", 2854, 2862, 0, "38", "others", "macro-expression", "sadness"],  # offset 0: use apex
    [2, "disgust1_3", 100, 104, 110, "4", "negative", "micro-expression", "disgust"],
    [2, "happy1_1", 1, 3, 20, "12", "positive", "Macro-expression", "happy"],
]
NAMING_RULE1 = [[15, "s15", 1], [16, "s16", 2]]
NAMING_RULE2 = [[101, "disgust1"], [401, "anger1"], ["0502", "happy1"]]
SAMM_HEADER = ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration", "Type",
               "Action Units", "Notes"]
SAMM_ROWS = [
    [7, "007_6_1", 1, 1000.4, 1010.5, 1040, 41, "Macro", "12", ""],
    [7, "007_6_2", 1, 2000, -1, 2060, 61, "Micro - 1/2", "4", "apex missing"],
    [11, "011_2_3", 2, 5, 9, 12.5, 8, "Micro - 1/2", "2", ""],
]
CASME3_HEADER = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Expression type", "Objective class",
                 "emotion"]
CASME3_ROWS = [
    ["spNO.1", "a", 10, 15, 20, "AU12", "Macro-expression", "positive", "happy"],
    ["spNO.1", "a", 6, 9, 12, "AU4", "Micro-expression", "negative", "disgust"],
    ["spNO.2", "b", 3, 4, 5, "AU1", "Micro-expression", "surprise", "surprise"],
]


def write_casme2(path, rows=CASME2_ROWS, naming=True, first_sheet="CASFEcode_final"):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = first_sheet
    for r in rows:
        ws.append(r)
    if naming:
        for title, table in (("naming rule1", NAMING_RULE1), ("naming rule2", NAMING_RULE2)):
            sheet = wb.create_sheet(title)
            for r in table:
                sheet.append(r)
    wb.save(path)
    return path


def write_samm(path, header=SAMM_HEADER, rows=SAMM_ROWS):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "FACS_Movement_Only"
    ws.append(["SAMM Long Videos - Release"])
    for i in range(8):
        ws.append([f"note {i}"] if i % 2 else [])
    ws.append(header)
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path


def write_casme3(path, header=CASME3_HEADER, rows=CASME3_ROWS):
    wb = xlwt.Workbook()
    ws = wb.add_sheet("part_A")
    for i, r in enumerate([header] + rows):
        for j, v in enumerate(r):
            ws.write(i, j, v)
    wb.save(str(path))
    return path

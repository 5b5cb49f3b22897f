"""A table laid out as strings (title, headers, body, notes): what the text and LaTeX renderers print.

Columns that only sometimes matter appear only when the rows differ in them: Preset (INPUT.PRESET)
and Selection (how hyperparameters were chosen). Rows that need a warning carry a mark explained
once under the table: † chosen on the test split, ‡ not on CoOp's split.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import List

from clip_adapter.app.results.labels import (EXPECTED_SEEDS, FOOTNOTES, PROTOCOL_NAMES, PUBLISHED_ONLY, differ, fmt_cell, labeller,
                                             marks)
from clip_adapter.app.results.model import Row, Table


@dataclass
class Grid:
    title: str
    headers: List[str]
    body: List[List[str]]
    footnotes: List[str]  # "† ..." lines for the marks used in the table
    notes: List[str]  # other lines under the table (sources, definitions)
    lead_columns: int  # how many leading columns hold words (the rest hold numbers)


def grid(t: Table, expected: int = EXPECTED_SEEDS) -> Grid:
    label = labeller(r.method for r in t.rows if r.method is not None)
    methods = [r.method for r in t.rows if r.method is not None and r.note != PUBLISHED_ONLY]  # measured rows
    presets = differ(methods, "preset")
    selection = differ(methods, "protocol")
    used: "OrderedDict[str, None]" = OrderedDict()
    title = t.title
    if t.method is not None and marks(t.method):  # one method for the whole table: its marks go in the title
        title += " " + "".join(marks(t.method))
        used.update((mk, None) for mk in marks(t.method))
    headers = (["Method"] if t.method_column else []) + (["Preset"] if presets else []) + (["Selection"] if selection else []) + t.lead
    lead_columns = len(headers)
    headers += [c.header for c in t.columns]
    body = []
    for row in t.rows:
        line = []
        if t.method_column:
            line.append(_label(row, label, used))
        reference = row.note == PUBLISHED_ONLY
        if presets:
            line.append("" if reference else row.method.preset or "?")
        if selection:
            line.append("" if reference else PROTOCOL_NAMES.get(row.method.protocol, row.method.protocol))
        line += row.lead + [fmt_cell(row.cells.get(c.header), expected) for c in t.columns]
        body.append(line)
    notes = list(t.notes)
    protocols = {m.protocol for m in methods}
    if methods and not selection and protocols != {""}:
        notes.insert(0, f"hyperparameters selected on: {PROTOCOL_NAMES[next(iter(protocols))]} (selection.protocol of every run)")
    return Grid(title, headers, body, [f"{mk} {FOOTNOTES[mk]}" for mk in used], notes, lead_columns)


def _label(row: Row, label, used: "OrderedDict[str, None]") -> str:
    text = label(row.method) + (f" ({row.note})" if row.note else "")
    mk = marks(row.method)
    used.update((m, None) for m in mk)
    return text + (" " + "".join(mk) if mk else "")

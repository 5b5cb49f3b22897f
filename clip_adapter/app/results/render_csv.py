"""The report as CSV in long format, one row per number, for spreadsheets: plain floats, no ± strings."""
from __future__ import annotations

import csv
import io
from typing import List, Sequence, Tuple

from clip_adapter.app.results.labels import EXPECTED_SEEDS, label_of, labeller
from clip_adapter.app.results.model import Cell, Table
from clip_adapter.app.results.published import PUBLISHED_FILE, source_name
from clip_adapter.app.results.render_text import report_tables
from clip_adapter.app.results.runs import Run

HEADER = ["table", "method", "trainer", "config", "backbone", "variant", "preset", "dataset", "shots", "metric",
          "mean", "std", "n", "seeds", "published", "published_source", "delta", "selection", "split_origin", "offline_check"]


def _num(x) -> str:
    return "" if x is None else f"{x:.4f}"


def _stat_fields(cell: Cell) -> list:
    if cell.stat is not None:
        s = cell.stat
        return [_num(s.mean), _num(s.std), s.n, " ".join(map(str, s.seeds))]
    if cell.measured:
        return ["", "", 0, ""]  # a measured cell without runs
    return [_num(cell.value), "", "", ""]  # a derived number (average, HM)


def table_rows(t: Table) -> List[list]:
    label = labeller(t.methods())
    out = []
    for row in t.rows:
        m = row.method
        name = label_of(m) if not t.method_column else label(m)
        base = [name, m.trainer, m.config, m.backbone, m.variant if row.variant is None else row.variant, m.preset]
        tail = [m.protocol, m.split, "true" if m.offline else "false"]
        for c in t.columns:
            cell = row.cells.get(c.header)
            if cell is None:
                continue
            pub = cell.published
            delta = cell.mean - pub.accuracy if (pub is not None and cell.mean is not None) else None
            out.append([t.kind, *base, row.dataset or c.dataset, "" if t.shots is None else t.shots,
                        cell.metric or row.metric or c.metric, *_stat_fields(cell),
                        _num(pub.accuracy if pub else None), source_name(pub) if pub else "", _num(delta), *tail])
    return out


def render_csv(runs: Sequence[Run], published: bool = False, published_path: str = PUBLISHED_FILE,
               expected_seeds: int = EXPECTED_SEEDS) -> Tuple[str, List[str]]:
    """Every measured and derived number of every table; with ``published``, the matched figure beside it."""
    tables, _, problems = report_tables(runs, published, expected_seeds, published_path)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    for t in tables:
        w.writerows(table_rows(t))
    return buf.getvalue(), problems

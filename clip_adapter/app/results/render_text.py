"""The report as text: every table through tabulate (github markdown by default, or any tabulate format)."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from tabulate import tabulate

from clip_adapter.app.results.build import build_tables
from clip_adapter.app.results.labels import EXPECTED_SEEDS
from clip_adapter.app.results.layout import grid
from clip_adapter.app.results.model import Table
from clip_adapter.app.results.published import PUBLISHED_FILE, comparisons
from clip_adapter.app.results.runs import Run
from clip_adapter.errors import UserError

LATEX = ("latex", "latex_booktabs")  # rendered by render_latex (escaped, with visible footnotes)


def heading(text: str, fmt: str) -> str:
    if fmt in ("github", "pipe"):
        return f"### {text}\n"
    if fmt.startswith("latex"):
        return f"% {text}\n"
    return f"{text}\n"


def render_table(t: Table, fmt: str = "github", expected: int = EXPECTED_SEEDS) -> str:
    g = grid(t, expected)
    prefix = "%" if fmt.startswith("latex") else "-"
    if not g.body:
        return "".join(f"{n}\n" for n in g.notes)
    text = heading(g.title, fmt) + tabulate(g.body, headers=g.headers, tablefmt=fmt, disable_numparse=True) + "\n"
    lines = g.footnotes + g.notes
    if lines:
        text += "\n" + "".join(f"{prefix} {n}\n" for n in lines)
    return text


def report_tables(runs: Sequence[Run], published: bool = False, expected: int = EXPECTED_SEEDS,
                  published_path: str = PUBLISHED_FILE) -> Tuple[List[Table], Dict[int, Table], List[str]]:
    """(tables, comparison by table position, problems) for a set of runs."""
    problems: List[str] = []
    tables = build_tables(runs, problems, expected)
    if not tables:
        raise UserError("no few-shot, base-to-novel, transfer or ablation results found among the results.json files")
    return tables, (comparisons(tables, published_path) if published else {}), problems


def render_tables(runs: Sequence[Run], fmt: str = "github", published: bool = False,
                  expected_seeds: int = EXPECTED_SEEDS, published_path: str = PUBLISHED_FILE) -> Tuple[str, List[str]]:
    """The whole report as text and the problems found while reading it."""
    tables, compared, problems = report_tables(runs, published, expected_seeds, published_path)
    if fmt in LATEX:
        from clip_adapter.app.results.render_latex import render_latex_table as render
    else:
        render = render_table
    parts = []
    for i, t in enumerate(tables):
        parts.append(render(t, fmt, expected_seeds))
        if i in compared:
            parts.append(render(compared[i], fmt, expected_seeds))
    return "\n".join(parts), problems

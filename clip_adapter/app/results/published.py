"""Published figures (``clip_adapter/published.json``): read, matched to the cells of the tables, and
shown side by side with the measured numbers, each with its source and how it was obtained.

A figure is per dataset, or an 11-dataset average (``"dataset": "Average"``, compared only with a
table that has all 11 datasets of CoOp's benchmark). Base-to-novel figures carry ``base``, ``new``,
``hm`` and ``hm_definition`` (which of the two averages the HM is). Methods without a trainer in
this project (``"method": "Tip-X"``, ...) appear as "published only" reference rows.
"""
from __future__ import annotations

import json
import os
import re
import statistics
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import clip_adapter
from clip_adapter.app.results.build import BASE2NEW, CROSS, FEWSHOT, HM_OF_AVERAGES, MEAN_OF_HMS, SHIFT
from clip_adapter.app.results.labels import PUBLISHED_ONLY, PUBLISHED_TEST_NOTE, TEST_MARK, shots_name
from clip_adapter.app.results.model import BENCHMARK, Cell, Column, Published, Row, Table
from clip_adapter.app.results.runs import PROTOCOLS, Method
from clip_adapter.errors import UserError

PUBLISHED_FILE = os.path.join(os.path.dirname(os.path.abspath(clip_adapter.__file__)), "published.json")
HOW = ("", "computed", "quoted", "secondary")
HM_DEFINITIONS = {"hm_of_averages": "HM of averaged base and new", "mean_of_dataset_hms": "mean of per-dataset HMs"}
AVERAGE = "Average"  # an 11-dataset average figure


# ---------------------------------------------------------------- reading
def load_published(path: str = PUBLISHED_FILE) -> Tuple[List[dict], Dict[str, dict]]:
    """(figures, sources) from the published-numbers file, checked so a typo there names itself."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as exc:
        raise UserError(f"cannot read the published-numbers file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UserError(f"the published-numbers file {path} is not valid JSON ({exc})") from None
    sources = doc.get("sources") if isinstance(doc, dict) else None
    figures = doc.get("figures") if isinstance(doc, dict) else None
    if not isinstance(sources, dict) or not isinstance(figures, list):
        raise UserError(f"{path}: expected an object with 'sources' and 'figures'")
    for i, fig in enumerate(figures):
        numbers = ("base", "new", "hm", "hm_definition") if fig.get("setting") == BASE2NEW else ("accuracy",)
        for key in ("setting", "dataset", "method", "backbone", "source") + numbers:
            if key not in fig:
                raise UserError(f"{path}: figure #{i} has no {key!r}")
        if fig["source"] not in sources:
            raise UserError(f"{path}: figure #{i} cites unknown source {fig['source']!r} (add it under 'sources')")
        if fig.get("how", "") not in HOW:
            raise UserError(f"{path}: figure #{i} has how {fig['how']!r}; use one of {', '.join(repr(h) for h in HOW)}")
        if fig.get("selection", "") not in ("",) + PROTOCOLS:
            raise UserError(f"{path}: figure #{i} has selection {fig['selection']!r}; use one of {', '.join(PROTOCOLS)}")
        if "hm_definition" in numbers and fig["hm_definition"] not in HM_DEFINITIONS:
            raise UserError(f"{path}: figure #{i} has hm_definition {fig['hm_definition']!r}; use one of {', '.join(HM_DEFINITIONS)}")
    return figures, sources


def norm_backbone(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


class Figures:
    """The figures indexed for lookup; primary sources are preferred over secondary ones."""

    def __init__(self, figures: List[dict], sources: Dict[str, dict]):
        self.sources = sources
        self.index: Dict[tuple, List[dict]] = defaultdict(list)
        for fig in figures:
            key = (fig["setting"], fig.get("source_dataset", ""), fig["method"], fig["dataset"], norm_backbone(fig["backbone"]), fig.get("shots"))
            self.index[key].append(fig)

    def published_of(self, fig: dict, value: float) -> Published:
        """``fig`` as a Published, with ``value`` (its accuracy, or its base / new / hm)."""
        return Published(float(value), fig["source"], bool(self.sources[fig["source"]].get("secondary")), fig.get("how", ""),
                         fig.get("note", ""), fig.get("selection", ""), fig.get("hm_definition", ""))

    def figure(self, setting: str, method: str, dataset: str, backbone: str, shots: Optional[int], source_dataset: str = "") -> Optional[dict]:
        bb = norm_backbone(backbone)
        found = (self.index.get((setting, source_dataset, method, dataset, bb, shots))
                 or self.index.get((setting, source_dataset, method, dataset, bb, None)) or [])
        return sorted(found, key=lambda f: bool(self.sources[f["source"]].get("secondary")))[0] if found else None

    def find(self, setting: str, m: Method, dataset: str, shots: Optional[int], source_dataset: str = "", value: str = "accuracy") -> Optional[Published]:
        fig = self.figure(setting, m.trainer, dataset, m.backbone, shots, source_dataset)
        return self.published_of(fig, fig[value]) if fig else None

    def others(self, setting: str, backbones: Sequence[str], shots: Optional[int], exclude: Sequence[str]) -> List[Tuple[Method, dict]]:
        """Average figures of methods not in ``exclude`` (published-only reference rows), one per method and backbone."""
        out: "OrderedDict[tuple, Tuple[Method, dict]]" = OrderedDict()
        wanted = {norm_backbone(b): b for b in backbones}
        for (s, _, method, dataset, bb, fig_shots), figs in self.index.items():
            if s != setting or dataset != AVERAGE or bb not in wanted or method in exclude or fig_shots not in (shots, None):
                continue
            fig = self.figure(setting, method, AVERAGE, bb, shots)
            out.setdefault((method, bb), (Method(method, "", wanted[bb], ""), fig))
        return list(out.values())


# ------------------------------------------------------------ matching
def _mean_of(pubs: List[Optional[Published]]) -> Optional[Published]:
    """The mean of per-dataset figures (all present), as a figure of its own."""
    if not pubs or any(p is None for p in pubs):
        return None
    return Published(statistics.fmean(p.accuracy for p in pubs), "", any(p.secondary for p in pubs), "mean of the per-dataset figures",
                     selection="test" if any(p.selection == "test" for p in pubs) else "")


def attach(tables: Sequence[Table], figs: Figures) -> None:
    """Set ``cell.published`` wherever a figure matches (method, dataset, backbone, shots, setting)."""
    for t in tables:
        if t.kind == FEWSHOT:
            for row in t.rows:
                pubs = []
                for d in t.datasets:
                    row.cells[d].published = figs.find(FEWSHOT, row.method, d, t.shots)
                    pubs.append(row.cells[d].published)
                if "Average" in row.cells:
                    whole = figs.find(FEWSHOT, row.method, AVERAGE, t.shots) if set(t.datasets) == BENCHMARK else None
                    row.cells["Average"].published = whole or _mean_of(pubs)
        elif t.kind in (SHIFT, CROSS):
            for row in t.rows:
                row.cells[f"{t.source} (source)"].published = figs.find(t.kind, row.method, t.source, t.shots, t.source)
                pubs = []
                for d in t.datasets:
                    row.cells[d].published = figs.find(t.kind, row.method, d, t.shots, t.source)
                    pubs.append(row.cells[d].published)
                row.cells["Average (targets)"].published = _mean_of(pubs)
        elif t.kind == BASE2NEW and set(t.datasets) == BENCHMARK:
            for row in t.rows:
                if row.dataset != "Average":
                    continue
                # Base-to-novel is CoCoOp's 16-shot protocol: the published figures are all 16-shot.
                fig = figs.figure(BASE2NEW, row.method.trainer, AVERAGE, row.method.backbone, 16)
                if fig is None:
                    continue
                if row.lead == [HM_OF_AVERAGES]:
                    row.cells["Base"].published = figs.published_of(fig, fig["base"])
                    row.cells["New"].published = figs.published_of(fig, fig["new"])
                mine = {HM_OF_AVERAGES: "hm_of_averages", MEAN_OF_HMS: "mean_of_dataset_hms"}[row.lead[0]]
                if fig["hm_definition"] == mine:  # an HM is only compared with one computed the same way
                    row.cells["HM"].published = figs.published_of(fig, fig["hm"])


# --------------------------------------------------------- side by side
COMPARE_COLUMNS = [Column("Ours"), Column("Published"), Column("Δ"), Column("Source")]


def source_name(pub: Published) -> str:
    """``id (secondary), how``: e.g. ``tip_adapter_exp_log, computed``; a derived figure says how it was derived."""
    if not pub.source:
        return pub.how
    how = f", {pub.how}" if pub.how and pub.how != "secondary" else ""
    return pub.source + (" (secondary)" if pub.secondary else "") + how


def _compare_row(m: Method, what: str, ours: Cell, pub: Published, note: str = "") -> Row:
    mark = f" {TEST_MARK}" if pub.selection == "test" else ""
    delta = Cell(value=ours.mean - pub.accuracy if ours.mean is not None else None, signed=True, missing=ours.missing)
    return Row(m, {"Ours": ours, "Published": Cell(text=f"{pub.accuracy:.2f}{mark}", published=pub), "Δ": delta,
                   "Source": Cell(text=source_name(pub))}, lead=[what], note=note)


def _only_row(m: Method, what: str, pub: Published) -> Row:
    mark = f" {TEST_MARK}" if pub.selection == "test" else ""
    return Row(m, {"Ours": Cell(text="-"), "Published": Cell(text=f"{pub.accuracy:.2f}{mark}", published=pub), "Δ": Cell(text=""),
                   "Source": Cell(text=source_name(pub))}, lead=[what], note=PUBLISHED_ONLY)


def _finish(table: Table, figs: Figures, empty: str) -> Table:
    """Source citations, the figures' own notes and the † footnote under a comparison table."""
    if not table.rows:
        return Table("published", "", [], notes=[empty] + table.notes)
    used: "OrderedDict[str, None]" = OrderedDict()
    notes: "OrderedDict[str, None]" = OrderedDict()
    test = False
    for row in table.rows:
        pub = row.cells["Published"].published
        if pub.source:
            used[pub.source] = None
        if pub.note:
            notes[f"{row.method.name} ({pub.source}): {pub.note}"] = None
        test = test or pub.selection == "test"
    for sid in used:
        src = figs.sources[sid]
        table.notes.append(f"{sid}: {src['citation']}" + (" [secondary]" if src.get("secondary") else ""))
    table.notes += list(notes)
    if test:
        table.notes.append(f"{TEST_MARK} {PUBLISHED_TEST_NOTE}")
    return table


def comparison(t: Table, figs: Figures) -> Optional[Table]:
    """The 'Published vs ours' table of one table (None for tables that have no published counterpart)."""
    if t.kind == FEWSHOT:
        title = f"Published vs ours, {shots_name(t.shots)} (Δ = ours − published)"
        empty = f"(no published figures for these methods/backbones at {shots_name(t.shots)})"
        columns = t.datasets + (["Average"] if len(t.datasets) > 1 else [])
    elif t.kind in (SHIFT, CROSS):
        kind_words = "distribution shift" if t.kind == SHIFT else "cross-dataset transfer"
        title = f"Published vs ours, {kind_words} from {t.source} (Δ = ours − published)"
        empty = f"(no published {kind_words} figures for these methods/backbones with source {t.source})"
        columns = [f"{t.source} (source)"] + t.datasets + ["Average (targets)"]
    elif t.kind == BASE2NEW:
        return _base2new_comparison(t, figs)
    else:
        return None
    out = Table("published", title, COMPARE_COLUMNS, lead=["Dataset"], shots=t.shots, source=t.source)
    for row in t.rows:
        for c in columns:
            cell = row.cells.get(c)
            if cell is None or cell.published is None:
                continue
            pub = cell.published
            what = c
            if c == "Average" and pub.source:
                what = "Average (11 datasets)"
            out.rows.append(_compare_row(row.method, what, cell, pub, row.note))
    if t.kind == FEWSHOT and len(t.datasets) > 1:
        measured = {r.method.trainer for r in t.rows}
        backbones = sorted({r.method.backbone for r in t.rows})
        others = figs.others(FEWSHOT, backbones, t.shots, sorted(measured))
        if others and set(t.datasets) == BENCHMARK:
            for m, fig in others:
                pub = figs.published_of(fig, fig["accuracy"])
                out.rows.append(_only_row(m, "Average (11 datasets)", pub))
        elif others:
            out.notes.append(f"published 11-dataset averages of {len(others)} other method(s) ({', '.join(sorted({m.trainer for m, _ in others}))}) "
                             "are listed when the table has all 11 datasets of CoOp's benchmark")
    return _finish(out, figs, empty)


def _base2new_comparison(t: Table, figs: Figures) -> Table:
    out = Table("published", "Published vs ours, base-to-novel, 11-dataset averages (Δ = ours − published)", COMPARE_COLUMNS, lead=["Dataset"])
    measured = sorted({r.method.trainer for r in t.rows})
    for row in t.rows:
        for c in ("Base", "New", "HM"):
            cell = row.cells.get(c)
            if cell is None or cell.published is None:
                continue
            what = {"Base": "Average Base", "New": "Average New"}.get(c) or row.lead[0].replace("Average", "Average HM")
            out.rows.append(_compare_row(row.method, what, cell, cell.published, row.note))
    if set(t.datasets) == BENCHMARK:
        for m, fig in figs.others(BASE2NEW, sorted({r.method.backbone for r in t.rows}), 16, measured):
            for what, key in (("Average Base", "base"), ("Average New", "new")):
                pub = figs.published_of(fig, fig[key])
                out.rows.append(_only_row(m, what, pub))
            pub = figs.published_of(fig, fig["hm"])
            out.rows.append(_only_row(m, f"Average HM ({HM_DEFINITIONS[fig['hm_definition']]})", pub))
    missing = [name for name in measured if not any(r.method.trainer == name for r in out.rows)]
    table = _finish(out, figs, "(no published base-to-novel figures for these methods/backbones: published ones are "
                               "11-dataset averages, compared when the table has all 11 datasets of CoOp's benchmark)")
    if missing:
        table.notes.append(f"no published base-to-novel figures for: {', '.join(missing)}")
    return table


def comparisons(tables: Sequence[Table], path: str = PUBLISHED_FILE) -> Dict[int, Table]:
    """Attach the figures to ``tables`` and return the comparison of each (by position) that has one."""
    figs = Figures(*load_published(path))
    attach(tables, figs)
    out = {}
    for i, t in enumerate(tables):
        c = comparison(t, figs)
        if c is not None:
            out[i] = c
    return out

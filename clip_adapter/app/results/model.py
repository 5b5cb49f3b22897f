"""The one table model every table is built in and every renderer reads: rows x columns of cells.

A measured cell holds one accuracy per seed (:class:`Stat`: mean and population standard
deviation, ddof 0, as CoOp's ``parse_test_res.py``); a derived cell holds a number computed from
other cells (an average, a harmonic mean); a text cell holds words (a published figure's source).
Renderers (text, LaTeX, CSV) never compute a number: everything they print is here.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from clip_adapter.app.results.runs import Method, Run

# The CoOp benchmark's usual column order; other datasets follow alphabetically.
DATASET_ORDER = [
    "ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101",
    "FGVCAircraft", "SUN397", "DescribableTextures", "EuroSAT", "UCF101",
]
BENCHMARK = frozenset(DATASET_ORDER)  # the 11 datasets whose averages papers publish


@dataclass
class Stat:
    """Accuracies of one cell, one per seed."""

    seeds: Tuple[int, ...]
    values: Tuple[float, ...]
    paths: Tuple[str, ...] = field(default=(), repr=False)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.values) if self.n > 1 else 0.0


def per_seed(runs: Iterable[Run], what: str, problems: List[str], prefer: Callable[[Run], int] = lambda r: 0) -> Optional[Stat]:
    """One value per seed; duplicates (same seed twice) keep the preferred, then the first by path.

    Reported in ``problems``: duplicates that disagree, and a cell whose runs used different split files.
    """
    by_seed: Dict[int, List[Run]] = defaultdict(list)
    for r in runs:
        by_seed[r.seed].append(r)
    if not by_seed:
        return None
    seeds, values, paths, shas = [], [], [], set()
    for seed in sorted(by_seed):
        group = sorted(by_seed[seed], key=lambda r: (prefer(r), r.path))
        chosen = group[0]
        group = [r for r in group if prefer(r) == prefer(chosen)]  # only true duplicates can disagree
        if len({round(r.accuracy, 6) for r in group}) > 1:
            problems.append(
                f"{what}, seed {seed}: {len(group)} runs disagree ({', '.join(f'{r.accuracy:.2f}' for r in group)}); using {chosen.path}"
            )
        seeds.append(seed)
        values.append(chosen.accuracy)
        paths.append(chosen.path)
        if chosen.split_sha256:
            shas.add(chosen.split_sha256)
    if len(shas) > 1:
        problems.append(f"{what}: its seeds ran on {len(shas)} different split files (split_file.sha256 differs); the mean mixes them")
    return Stat(tuple(seeds), tuple(values), tuple(paths))


def harmonic_mean(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def mean_if_complete(values: List[Optional[float]]) -> Optional[float]:
    """The mean when every value is there; None otherwise (a missing run is never averaged around)."""
    return statistics.fmean(values) if values and all(v is not None for v in values) else None


def ordered_datasets(names: Iterable[str]) -> List[str]:
    names = set(names)
    known = [d for d in DATASET_ORDER if d in names]
    return known + sorted(names - set(known))


@dataclass
class Published:
    """A published figure matched to a cell: the number, where it comes from and how it was obtained.

    ``how``: "computed" (the mean of per-dataset figures in the named file), "quoted" (as printed),
    "secondary" (read from another project's material) or "" (a per-dataset figure read directly).
    ``selection``: how its hyperparameters were chosen, when the source says (e.g. "test").
    """

    accuracy: float
    source: str
    secondary: bool
    how: str = ""
    note: str = ""
    selection: str = ""
    hm_definition: str = ""


@dataclass
class Cell:
    """One number (measured or derived), or words; ``missing`` is printed when there is no number."""

    stat: Optional[Stat] = None
    value: Optional[float] = None
    text: Optional[str] = None
    missing: str = "missing"
    signed: bool = False  # a difference: printed with its sign
    published: Optional[Published] = None  # the published figure for this cell (--published)
    metric: str = ""  # overrides the column's metric in the CSV
    measured: bool = False  # a cell that runs fill (missing when ``stat`` is None), not a derived number

    @property
    def mean(self) -> Optional[float]:
        return self.stat.mean if self.stat is not None else self.value


@dataclass
class Column:
    header: str
    dataset: str = ""  # the CSV's dataset field ("" = the row's)
    metric: str = "accuracy"


@dataclass
class Row:
    method: Optional[Method]
    cells: Dict[str, Cell]  # column header -> cell; absent = an empty cell
    lead: List[str] = field(default_factory=list)  # leading text cells (Table.lead headers)
    dataset: str = ""  # the CSV's dataset field, when the row is about one dataset (base-to-novel)
    variant: Optional[str] = None  # the CSV's variant, when not the method's (ablation values)
    metric: str = ""  # overrides the columns' metric in the CSV (ablation values)
    note: str = ""  # words appended to the method's label (published-only rows)


@dataclass
class Table:
    """One table: ``kind`` fewshot | base2new | distribution_shift | cross_dataset | ablation | published."""

    kind: str
    title: str
    columns: List[Column]
    rows: List[Row] = field(default_factory=list)
    lead: List[str] = field(default_factory=list)
    method_column: bool = True  # False: one method for the whole table, named in the title (ablation)
    shots: Optional[int] = None
    datasets: List[str] = field(default_factory=list)  # the dataset columns, in order
    source: str = ""  # transfer: the dataset the models were trained on
    key: str = ""  # ablation: the swept config key
    method: Optional[Method] = None  # ablation: the method
    notes: List[str] = field(default_factory=list)  # lines printed under the table
    sources: Dict[str, str] = field(default_factory=dict)  # published tables: source id -> citation line

    def methods(self) -> List[Method]:
        return [r.method for r in self.rows if r.method is not None] + ([self.method] if self.method else [])

"""Tables and plots from a tree of run folders: every ``results.json`` under a folder, nothing else.

``python -m clip_adapter.results OUTPUT_DIR [--format github|latex|csv|...] [--plot curves.png] [--published]``

The numbers come from ``results.json`` only (never from log scraping; ``log.txt`` keeps CoOp's lines
for people who use CoOp's parser), so a crashed run, which has no ``results.json``, can never be
counted. Conventions, as in CoOp's ``parse_test_res.py``: a cell is the mean and the population
standard deviation (ddof 0) over seeds; the Average column is the mean of the per-dataset means and
exists only when every dataset of the table has a result (a missing run is shown as ``missing``,
never averaged in). Base-to-novel: HM is the harmonic mean of the seed-averaged base and new
accuracies, and the Average row is the HM of the averaged base and new, as CoCoOp reports it.

This module imports nothing from the engine or the trainers: it reads JSON and it is quick to
start. Row labels use the planner's variant names (clip_adapter/app/experiments/naming.py).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import re
import statistics
import sys
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from tabulate import tabulate, tabulate_formats

from clip_adapter.app.experiments.naming import opt_pairs as _pairs
from clip_adapter.app.experiments.naming import variant_suffix
from clip_adapter.errors import UserError
from clip_adapter.utils import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
PUBLISHED_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "published.json")
EXPECTED_SEEDS = 3

# The CoOp benchmark's usual column order; other datasets follow alphabetically.
DATASET_ORDER = [
    "ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101",
    "FGVCAircraft", "SUN397", "DescribableTextures", "EuroSAT", "UCF101",
]
METHOD_ORDER = ["ZeroshotCLIP", "ZeroshotCLIP2", "LinearProbeCLIP", "CoOp", "CLIP_Adapter"]


# ---------------------------------------------------------------------- runs
@dataclass(frozen=True)
class Method:
    """One row of a table: a trainer with a config file, a backbone and a variant (extra opts)."""

    trainer: str
    config: str
    backbone: str
    variant: str
    # INPUT.PRESET (test-time resize: clip | coop); runs that differ in it are never averaged together,
    # and the tables get a Preset column when they differ.
    preset: str = ""

    def sort_key(self) -> tuple:
        rank = METHOD_ORDER.index(self.trainer) if self.trainer in METHOD_ORDER else len(METHOD_ORDER)
        return (rank, self.trainer, self.config, self.backbone, self.variant, self.preset)


@dataclass(frozen=True)
class Run:
    """What the tables need from one ``results.json``."""

    path: str
    dataset: str
    method: Method
    shots: int
    seed: int
    subsample: str
    accuracy: float
    training_free: bool
    eval_only: bool
    model_dir: str
    # Transfer evaluations (xd_test.sh, base-to-novel tests): the dataset the model was trained on,
    # with how many shots, and the relation of the classes (see clip_adapter/engine/transfer.py).
    source: str = ""
    source_shots: Optional[int] = None
    relation: str = ""
    test_only: bool = False
    # Ablation runs (ablation.sh): the swept config key, this run's value of it (as given) and the
    # variant of the opts held fixed (the method an ablation table is about).
    sweep_key: str = ""
    sweep_value: str = ""
    sweep_fixed: str = ""


REQUIRED = ("trainer", "dataset", "accuracy", "seed", "shots")


def _with_engine(variant: str, engine: str) -> str:
    """Runs through Dassl's engine are their own rows, never averaged with the project engine's."""
    if engine == "own":
        return variant
    return f"{variant}, engine={engine}" if variant else f"engine={engine}"


def _run_from(record: dict, path: str) -> Run:
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    accuracy = float(record["accuracy"])
    if not math.isfinite(accuracy):
        raise ValueError(f"accuracy is {record['accuracy']!r}")
    method = Method(
        trainer=str(record["trainer"]),
        # CoOp's per-shot schedules (rn50_ep50 at 1 shot, rn50_ep100 at 2-4, rn50 at 8-16) are one method.
        config=re.sub(r"_ep\d+$", "", str(record.get("config") or "")),
        backbone=str(record.get("backbone") or ""),
        variant=_with_engine(variant_suffix(record.get("opts") or []), str(record.get("engine") or "own")),
        preset=str(record.get("preset") or ""),
    )
    dataset = str(record["dataset"])
    if dataset == "Custom" and record.get("dataset_config"):
        dataset = str(record["dataset_config"])  # every own dataset is "Custom": its config file names it
    return Run(
        path=path,
        dataset=dataset,
        method=method,
        shots=int(record["shots"]),
        seed=int(record["seed"]),
        subsample=str(record.get("subsample") or "all"),
        accuracy=accuracy,
        # A training-free method (zero-shot CLIP) records 0 epochs: its number does not depend on shots.
        training_free=int(record.get("epochs", 1) or 0) == 0,
        eval_only=bool(record.get("eval_only", False)),
        model_dir=str(record.get("model_dir") or ""),
        **_experiment_fields(record),
    )


def _experiment_fields(record: dict) -> dict:
    """The transfer and ablation bookkeeping of a results.json (absent in files from before it existed)."""
    source = record.get("source") if isinstance(record.get("source"), dict) else {}
    key = str(record.get("sweep_key") or "")
    opts = _pairs(record.get("opts") or [], "opts")
    value = opts.pop(key, "") if key else ""
    if key and not value:
        raise ValueError(f"sweep_key {key} is not among its opts")
    return {
        "source": str(source.get("dataset") or ""),
        "source_shots": None if source.get("shots") is None else int(source["shots"]),
        "relation": str(source.get("relation") or ""),
        "test_only": bool(record.get("test_only", False)),
        "sweep_key": key,
        "sweep_value": str(value),
        "sweep_fixed": variant_suffix([x for kv in opts.items() for x in kv]) if key else "",
    }


def load_runs(root: str) -> Tuple[List[Run], List[str]]:
    """Every ``results.json`` under ``root`` -> runs, plus one line per file that had to be skipped."""
    if not os.path.isdir(root):
        raise UserError(f"results folder not found: {root} (pass the OUTPUT folder the scripts wrote, e.g. output/)")
    runs, problems = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if RESULTS_FILE not in filenames:
            continue
        path = os.path.join(dirpath, RESULTS_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            runs.append(_run_from(record, path))
        except (OSError, ValueError, TypeError) as exc:
            problems.append(f"skipped {path}: {exc}")
    return runs, problems


# --------------------------------------------------------------- statistics
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


def _per_seed(runs: Iterable[Run], what: str, problems: List[str], prefer=lambda r: 0) -> Optional[Stat]:
    """One value per seed; duplicates (same seed twice) keep the preferred, then the first by path."""
    by_seed: Dict[int, List[Run]] = defaultdict(list)
    for r in runs:
        by_seed[r.seed].append(r)
    if not by_seed:
        return None
    seeds, values, paths = [], [], []
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
    return Stat(tuple(seeds), tuple(values), tuple(paths))


def harmonic_mean(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def _ordered_datasets(names: Iterable[str]) -> List[str]:
    names = set(names)
    known = [d for d in DATASET_ORDER if d in names]
    return known + sorted(names - set(known))


@dataclass
class FewShotTable:
    shots: Optional[int]  # None: only training-free methods were found
    datasets: List[str]
    rows: List[Tuple[Method, Dict[str, Optional[Stat]], Optional[float]]]


@dataclass
class Base2NewRow:
    method: Method
    dataset: str  # or "Average"
    base: Optional[Stat]
    new: Optional[Stat]
    base_mean: Optional[float]
    new_mean: Optional[float]
    hm: Optional[float]


def is_fewshot(run: Run) -> bool:
    """All classes, and not an evaluation of a model trained elsewhere (cross-dataset, base-to-novel),
    nor a transfer target (test-only datasets), nor an ablation run (those have their own tables)."""
    return (run.subsample == "all" and not (run.eval_only and run.model_dir) and not run.source
            and not run.test_only and not run.sweep_key)


def fewshot_tables(runs: Sequence[Run], problems: List[str]) -> List[FewShotTable]:
    """One table per shot count; training-free methods appear in each (their number does not depend on shots)."""
    runs = [r for r in runs if is_fewshot(r)]
    if not runs:
        return []
    datasets = _ordered_datasets(r.dataset for r in runs)
    shot_counts: List[Optional[int]] = sorted({r.shots for r in runs if not r.training_free}) or [None]
    methods = sorted({r.method for r in runs}, key=Method.sort_key)
    cells: Dict[tuple, List[Run]] = defaultdict(list)
    for r in runs:
        cells[(r.method, r.dataset, None if r.training_free else r.shots)].append(r)
    free = {r.method for r in runs if r.training_free}
    tables = []
    for shots in shot_counts:
        rows = []
        for m in methods:
            key_shots = None if m in free else shots
            if m not in free and not any(cells.get((m, d, shots)) for d in datasets):
                continue
            row = {}
            for d in datasets:
                what = f"{label_of(m)} on {d}" + (f" ({shots} shots)" if key_shots is not None else "")
                row[d] = _per_seed(cells.get((m, d, key_shots), []), what, problems)
            present = [s.mean for s in row.values() if s is not None]
            average = statistics.fmean(present) if len(present) == len(datasets) else None
            rows.append((m, row, average))
        tables.append(FewShotTable(shots, datasets, rows))
    # Duplicate warnings for a training-free row would repeat once per table: keep each message once.
    problems[:] = list(OrderedDict.fromkeys(problems))
    return tables


def base2new_rows(runs: Sequence[Run], problems: List[str]) -> List[Base2NewRow]:
    """Base, New, HM per (method, dataset) and an Average row per method."""
    runs = [r for r in runs if r.subsample in ("base", "new")]
    if not runs:
        return []
    datasets = _ordered_datasets(r.dataset for r in runs)
    methods = sorted({r.method for r in runs}, key=Method.sort_key)
    groups: Dict[tuple, List[Run]] = defaultdict(list)
    for r in runs:
        groups[(r.method, r.dataset, r.subsample)].append(r)
    # The evaluation runs (test_base/test_new) are preferred over the training run's own base score.
    prefer = lambda r: 0 if r.eval_only else 1  # noqa: E731
    out = []
    for m in methods:
        method_rows = []
        for d in datasets:
            base = _per_seed(groups.get((m, d, "base"), []), f"{label_of(m)} on {d} (base)", problems, prefer)
            new = _per_seed(groups.get((m, d, "new"), []), f"{label_of(m)} on {d} (new)", problems, prefer)
            bm = base.mean if base else None
            nm = new.mean if new else None
            hm = harmonic_mean(bm, nm) if base and new else None
            method_rows.append(Base2NewRow(m, d, base, new, bm, nm, hm))
        complete_base = [r.base_mean for r in method_rows if r.base_mean is not None]
        complete_new = [r.new_mean for r in method_rows if r.new_mean is not None]
        ab = statistics.fmean(complete_base) if len(complete_base) == len(datasets) else None
        an = statistics.fmean(complete_new) if len(complete_new) == len(datasets) else None
        avg = Base2NewRow(m, "Average", None, None, ab, an, harmonic_mean(ab, an) if ab is not None and an is not None else None)
        out += method_rows + ([avg] if len(datasets) > 1 else [])
    return out


# ------------------------------------------------- transfer and ablations
# Distribution-shift targets in the order papers print them; other test-only targets follow alphabetically.
SHIFT_ORDER = ["ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR", "SmokeGray", "SmokeInvert", "SmokeBlur", "SmokeSubset"]
SHIFT, CROSS = "distribution_shift", "cross_dataset"
# Swept values that are names, in the paper's order (numbers sort numerically, other names alphabetically).
VALUE_ORDER = {"TRAINER.CLIP_ADAPTER.TYPE": ["visual", "text", "both"]}


@dataclass
class TransferTable:
    """Source + targets + the average of the targets, one row per method (CoCoOp's Tables 2 and 3).

    ``kind`` is SHIFT for test-only targets (ImageNet's classes or a subset of them, other images)
    and CROSS for other datasets. The source cell is the method's few-shot run on the source; a
    training-free method's cells are its runs on each dataset, whatever the source.
    """

    kind: str
    source: str
    shots: Optional[int]
    targets: List[str]
    rows: List[Tuple[Method, Optional[Stat], Dict[str, Optional[Stat]], Optional[float]]]


def is_transfer(run: Run) -> bool:
    """An evaluation on another dataset than the model's source (not base-to-novel)."""
    return bool(run.source) and run.subsample == "all" and run.dataset != run.source


def _ordered_targets(kind: str, names: Iterable[str]) -> List[str]:
    names = set(names)
    if kind == SHIFT:
        known = [d for d in SHIFT_ORDER if d in names]
        return known + sorted(names - set(known))
    return _ordered_datasets(names)


def transfer_tables(runs: Sequence[Run], problems: List[str]) -> List[TransferTable]:
    """One table per (kind, source, shots) found among the transfer evaluations."""
    transfers = [r for r in runs if is_transfer(r)]
    fewshot = [r for r in runs if is_fewshot(r)]
    groups: Dict[tuple, List[Run]] = defaultdict(list)
    for r in transfers:
        groups[(SHIFT if r.test_only else CROSS, r.source)].append(r)
    tables = []
    for (kind, source), group in sorted(groups.items(), key=lambda kv: (kv[0][0] != SHIFT, kv[0][1])):
        targets = _ordered_targets(kind, (r.dataset for r in group))
        free = sorted({r.method for r in group if r.training_free}, key=Method.sort_key)
        shot_counts: List[Optional[int]] = sorted({r.source_shots for r in group if not r.training_free and r.source_shots is not None}) or [None]
        for shots in shot_counts:
            trained = sorted({r.method for r in group if not r.training_free and r.source_shots == shots}, key=Method.sort_key)
            rows = []
            for m in free + trained:
                mine = [r for r in group if r.method == m and (m in free or r.source_shots == shots)]
                at_source = [r for r in fewshot if r.method == m and r.dataset == source and (m in free or r.shots == shots)]
                label = label_of(m)
                src = _per_seed(at_source, f"{label} on {source} (source)", problems)
                cells = {d: _per_seed([r for r in mine if r.dataset == d], f"{label}: {source} -> {d}", problems) for d in targets}
                present = [s.mean for s in cells.values() if s is not None]
                rows.append((m, src, cells, statistics.fmean(present) if len(present) == len(targets) else None))
            tables.append(TransferTable(kind, source, shots, targets, rows))
    problems[:] = list(OrderedDict.fromkeys(problems))
    return tables


@dataclass
class AblationTable:
    """One swept key for one method (its fixed opts in ``method.variant``): rows = values, columns = datasets."""

    key: str
    method: Method
    shots: int
    datasets: List[str]
    rows: List[Tuple[str, Dict[str, Optional[Stat]], Optional[float]]]

    def numeric(self) -> bool:
        return all(_as_number(v) is not None for v, _, _ in self.rows)


def _as_number(value: str) -> Optional[float]:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _value_order(key: str, values: Iterable[str]) -> List[str]:
    values = list(OrderedDict.fromkeys(values))
    if all(_as_number(v) is not None for v in values):
        return sorted(values, key=lambda v: _as_number(v))
    known = VALUE_ORDER.get(key, [])
    return sorted(values, key=lambda v: (known.index(v) if v in known else len(known), v))


def ablation_tables(runs: Sequence[Run], problems: List[str]) -> List[AblationTable]:
    """Every ablation.sh sweep: grouped by key, method (with the opts held fixed) and shots."""
    sweeps = [r for r in runs if r.sweep_key and r.subsample == "all" and not r.source]
    groups: Dict[tuple, List[Run]] = defaultdict(list)
    for r in sweeps:
        method = Method(r.method.trainer, r.method.config, r.method.backbone, r.sweep_fixed, r.method.preset)
        groups[(r.sweep_key, method, r.shots)].append(r)
    tables = []
    for (key, method, shots), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1].sort_key(), kv[0][2])):
        datasets = _ordered_datasets(r.dataset for r in group)
        # "0" and "0.0" are one setting: group numbers by value, show the shortest spelling.
        canon = lambda v: _as_number(v) if _as_number(v) is not None else v  # noqa: E731
        spelling: Dict[object, str] = {}
        for r in group:
            best = spelling.get(canon(r.sweep_value))
            if best is None or (len(r.sweep_value), r.sweep_value) < (len(best), best):
                spelling[canon(r.sweep_value)] = r.sweep_value
        rows = []
        for value in _value_order(key, spelling.values()):
            cells = {}
            for d in datasets:
                cell = [r for r in group if r.dataset == d and canon(r.sweep_value) == canon(value)]
                cells[d] = _per_seed(cell, f"{label_of(method)} {key}={value} on {d} ({shots} shots)", problems)
            present = [s.mean for s in cells.values() if s is not None]
            rows.append((value, cells, statistics.fmean(present) if len(present) == len(datasets) else None))
        tables.append(AblationTable(key, method, shots, datasets, rows))
    return tables


# ---------------------------------------------------------------- published
@dataclass(frozen=True)
class Published:
    accuracy: float
    source: str
    secondary: bool


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
        for key in ("setting", "dataset", "method", "backbone", "accuracy", "source"):
            if key not in fig:
                raise UserError(f"{path}: figure #{i} has no {key!r}")
        if fig["source"] not in sources:
            raise UserError(f"{path}: figure #{i} cites unknown source {fig['source']!r} (add it under 'sources')")
    return figures, sources


def _norm_backbone(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def published_lookup(figures: List[dict], sources: Dict[str, dict], setting: str = "fewshot", source_dataset: str = ""):
    """A function (method, dataset, shots) -> Published or None, preferring primary sources.

    ``setting``: the figures' "setting" (fewshot, distribution_shift, cross_dataset); for the
    transfer settings ``source_dataset`` selects the figures of models trained on that dataset.
    """
    index: Dict[tuple, List[Published]] = defaultdict(list)
    for fig in figures:
        if fig["setting"] != setting or (source_dataset and fig.get("source_dataset") != source_dataset):
            continue
        src = sources[fig["source"]]
        key = (fig["method"], fig["dataset"], _norm_backbone(fig["backbone"]), fig.get("shots"))
        index[key].append(Published(float(fig["accuracy"]), fig["source"], bool(src.get("secondary"))))

    def find(method: Method, dataset: str, shots: Optional[int]) -> Optional[Published]:
        bb = _norm_backbone(method.backbone)
        found = index.get((method.trainer, dataset, bb, shots)) or index.get((method.trainer, dataset, bb, None)) or []
        return sorted(found, key=lambda p: p.secondary)[0] if found else None

    return find


# ---------------------------------------------------------------- rendering
def label_of(m: Method, show_backbone: bool = False) -> str:
    inner = ", ".join(x for x in (m.config, m.variant) if x)
    text = f"{m.trainer} ({inner})" if inner else m.trainer
    return f"{text} [{m.backbone}]" if show_backbone else text


def _labeller(methods: Iterable[Method], with_preset: bool = False):
    """Show the backbone only where one trainer/config/variant was run with several backbones.

    ``with_preset`` (the plot's legend, which has no Preset column) appends the preset when runs differ in it.
    """
    methods = list(methods)
    seen: Dict[tuple, set] = defaultdict(set)
    for m in methods:
        seen[(m.trainer, m.config, m.variant)].add(m.backbone)
    presets = with_preset and show_preset(methods)

    def label(m: Method) -> str:
        text = label_of(m, show_backbone=len(seen[(m.trainer, m.config, m.variant)]) > 1)
        return f"{text} preset={m.preset or '?'}" if presets else text

    return label


def show_preset(methods: Iterable[Method]) -> bool:
    """Whether the runs differ in INPUT.PRESET (then the tables show a Preset column)."""
    return len({m.preset for m in methods}) > 1


def fmt_stat(stat: Optional[Stat], expected: int = EXPECTED_SEEDS) -> str:
    if stat is None:
        return "missing"
    note = f" (n={stat.n})" if stat.n != expected else ""
    if stat.n == 1:
        return f"{stat.mean:.2f}{note}"
    return f"{stat.mean:.2f} ± {stat.std:.2f}{note}"


def _fmt(x: Optional[float], missing: str = "missing") -> str:
    return missing if x is None else f"{x:.2f}"


def _title(text: str, fmt: str) -> str:
    if fmt in ("github", "pipe"):
        return f"### {text}\n"
    if fmt.startswith("latex"):
        return f"% {text}\n"
    return f"{text}\n"


def _shots_name(shots: Optional[int]) -> str:
    return "zero-shot" if shots is None else f"{shots} shot" + ("s" if shots != 1 else "")


def render_tables(runs: Sequence[Run], fmt: str = "github", published: bool = False,
                  expected_seeds: int = EXPECTED_SEEDS, published_path: str = PUBLISHED_FILE) -> Tuple[str, List[str]]:
    """The whole report as text (tabulate) and the problems found while reading it."""
    problems: List[str] = []
    tables = fewshot_tables(runs, problems)
    b2n = base2new_rows(runs, problems)
    label = _labeller([r.method for r in runs])
    presets = show_preset(r.method for r in runs)
    find = None
    if published:
        figures, sources = load_published(published_path)
        find = published_lookup(figures, sources)
    parts = []
    for t in tables:
        headers = ["Method"] + (["Preset"] if presets else []) + t.datasets + (["Average"] if len(t.datasets) > 1 else [])
        body = []
        for m, row, avg in t.rows:
            line = [label(m)] + ([m.preset or "?"] if presets else []) + [fmt_stat(row[d], expected_seeds) for d in t.datasets]
            if len(t.datasets) > 1:
                done = sum(s is not None for s in row.values())
                line.append(_fmt(avg) if avg is not None else f"missing ({done}/{len(t.datasets)})")
            body.append(line)
        n_note = f"n shown when not {expected_seeds}"
        parts.append(_title(f"Few-shot top-1 accuracy (%), {_shots_name(t.shots)}: mean ± std over seeds ({n_note})", fmt))
        parts.append(tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True) + "\n")
        if find is not None:
            parts.append(_published_table(t, find, sources, label, fmt, expected_seeds))
    if b2n:
        headers = ["Method"] + (["Preset"] if presets else []) + ["Dataset", "Base", "New", "HM"]
        body = []
        for r in b2n:
            head = [label(r.method)] + ([r.method.preset or "?"] if presets else [])
            if r.dataset == "Average":
                body.append(head + ["Average", _fmt(r.base_mean), _fmt(r.new_mean), _fmt(r.hm)])
            else:
                body.append(head + [r.dataset, fmt_stat(r.base, expected_seeds), fmt_stat(r.new, expected_seeds), _fmt(r.hm)])
        parts.append(_title("Base-to-novel top-1 accuracy (%): Base and New mean ± std over seeds, HM of the seed means", fmt))
        parts.append(tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True) + "\n")
        if published:
            parts.append("No published CLIP-Adapter base-to-novel figures exist to compare with (none were found).\n")
    for t in transfer_tables(runs, problems):
        parts.append(_render_transfer(t, fmt, expected_seeds))
        if published:
            parts.append(_published_transfer(t, published_path, fmt, expected_seeds))
    for t in ablation_tables(runs, problems):
        parts.append(_render_ablation(t, fmt, expected_seeds))
    if not parts:
        raise UserError("no few-shot, base-to-novel, transfer or ablation results found among the results.json files")
    return "\n".join(parts), problems


TRANSFER_TITLES = {
    SHIFT: "Distribution shift: trained on {source} ({shots}), tested on shifted test sets of its classes",
    CROSS: "Cross-dataset transfer: trained on {source} ({shots}), tested on other datasets",
}


def _render_transfer(t: TransferTable, fmt: str, expected_seeds: int) -> str:
    label = _labeller([m for m, *_ in t.rows], with_preset=True)
    headers = ["Method", f"{t.source} (source)"] + t.targets + ["Average (targets)"]
    body = []
    for m, src, cells, avg in t.rows:
        done = sum(s is not None for s in cells.values())
        body.append([label(m), fmt_stat(src, expected_seeds)] + [fmt_stat(cells[d], expected_seeds) for d in t.targets]
                    + [_fmt(avg) if avg is not None else f"missing ({done}/{len(t.targets)})"])
    title = TRANSFER_TITLES[t.kind].format(source=t.source, shots=_shots_name(t.shots))
    return _title(f"{title}: top-1 accuracy (%), mean ± std over seeds (n shown when not {expected_seeds})", fmt) + "\n" + \
        tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True) + "\n"


def _published_transfer(t: TransferTable, published_path: str, fmt: str, expected_seeds: int) -> str:
    figures, sources = load_published(published_path)
    find = published_lookup(figures, sources, setting=t.kind, source_dataset=t.source)
    label = _labeller([m for m, *_ in t.rows], with_preset=True)
    body, used = [], OrderedDict()
    for m, src, cells, avg in t.rows:
        ours_by = {t.source: src, **cells}
        pubs = {d: find(m, d, t.shots) for d in [t.source] + t.targets}  # zero-shot figures have shots null
        for d, pub in pubs.items():
            if pub is None:
                continue
            used[pub.source] = pub.secondary
            ours = ours_by[d]
            delta = f"{ours.mean - pub.accuracy:+.2f}" if ours else "missing"
            body.append([label(m), d + (" (source)" if d == t.source else ""), fmt_stat(ours, expected_seeds), f"{pub.accuracy:.2f}", delta, _source_name(pub)])
        if all(pubs[d] is not None for d in t.targets):
            pavg = statistics.fmean(pubs[d].accuracy for d in t.targets)
            body.append([label(m), "Average (targets)", _fmt(avg), f"{pavg:.2f}", f"{avg - pavg:+.2f}" if avg is not None else "missing", ""])
    kind = "distribution shift" if t.kind == SHIFT else "cross-dataset transfer"
    if not body:
        return f"(no published {kind} figures for these methods/backbones with source {t.source})\n"
    table = tabulate(body, headers=["Method", "Dataset", "Ours", "Published", "Δ", "Source"], tablefmt=fmt, disable_numparse=True)
    notes = "".join(f"\n{'%' if fmt.startswith('latex') else '-'} {sid}: {sources[sid]['citation']}" + (" [secondary]" if sec else "")
                    for sid, sec in used.items())
    return f"{_title(f'Published vs ours, {kind} from {t.source} (Δ = ours − published)', fmt)}\n{table}\n{notes}\n"


def _render_ablation(t: AblationTable, fmt: str, expected_seeds: int) -> str:
    headers = [t.key.rsplit(".", 1)[-1]] + t.datasets + (["Average"] if len(t.datasets) > 1 else [])
    body = []
    for value, cells, avg in t.rows:
        line = [value] + [fmt_stat(cells[d], expected_seeds) for d in t.datasets]
        if len(t.datasets) > 1:
            done = sum(s is not None for s in cells.values())
            line.append(_fmt(avg) if avg is not None else f"missing ({done}/{len(t.datasets)})")
        body.append(line)
    title = (f"Ablation of {t.key}: {label_of(t.method)}, {_shots_name(t.shots)}: top-1 accuracy (%), "
             f"mean ± std over seeds (n shown when not {expected_seeds})")
    return _title(title, fmt) + "\n" + tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True) + "\n"


def _published_table(t: FewShotTable, find, sources: Dict[str, dict], label, fmt: str, expected_seeds: int) -> str:
    body, used = [], OrderedDict()
    for m, row, avg in t.rows:
        pubs = {d: find(m, d, t.shots) for d in t.datasets}
        for d in t.datasets:
            pub = pubs[d]
            if pub is None:
                continue
            ours = row[d]
            used[pub.source] = pub.secondary
            delta = f"{ours.mean - pub.accuracy:+.2f}" if ours else "missing"
            body.append([label(m), d, fmt_stat(ours, expected_seeds), f"{pub.accuracy:.2f}", delta, _source_name(pub)])
        if len(t.datasets) > 1 and all(p is not None for p in pubs.values()):
            pavg = statistics.fmean(p.accuracy for p in pubs.values())
            body.append([label(m), "Average", _fmt(avg), f"{pavg:.2f}", f"{avg - pavg:+.2f}" if avg is not None else "missing", ""])
    if not body:
        return f"(no published figures for these methods/backbones at {_shots_name(t.shots)})\n"
    title = _title(f"Published vs ours, {_shots_name(t.shots)} (Δ = ours − published)", fmt)
    table = tabulate(body, headers=["Method", "Dataset", "Ours", "Published", "Δ", "Source"], tablefmt=fmt, disable_numparse=True)
    notes = "".join(f"\n{'%' if fmt.startswith('latex') else '-'} {sid}: {sources[sid]['citation']}" + (" [secondary]" if sec else "")
                    for sid, sec in used.items())
    return f"{title}\n{table}\n{notes}\n"


def _source_name(pub: Published) -> str:
    return pub.source + (" (secondary)" if pub.secondary else "")


def render_csv(runs: Sequence[Run], published: bool = False, published_path: str = PUBLISHED_FILE) -> Tuple[str, List[str]]:
    """Long format, one row per number, for spreadsheets: plain floats, no ± strings."""
    problems: List[str] = []
    label = _labeller([r.method for r in runs])
    find = None
    if published:
        figures, sources = load_published(published_path)
        find = published_lookup(figures, sources)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "method", "trainer", "config", "backbone", "variant", "preset", "dataset", "shots", "metric",
                "mean", "std", "n", "seeds", "published", "published_source", "delta"])

    def num(x):
        return "" if x is None else f"{x:.4f}"

    for t in fewshot_tables(runs, problems):
        for m, row, avg in t.rows:
            base = [label(m), m.trainer, m.config, m.backbone, m.variant, m.preset]
            shots = "" if t.shots is None else t.shots
            for d in t.datasets:
                s = row[d]
                pub = find(m, d, t.shots) if find else None
                delta = s.mean - pub.accuracy if (s and pub) else None
                w.writerow(["fewshot", *base, d, shots, "accuracy", num(s.mean if s else None), num(s.std if s else None),
                            s.n if s else 0, " ".join(map(str, s.seeds)) if s else "",
                            num(pub.accuracy if pub else None), _source_name(pub) if pub else "", num(delta)])
            if len(t.datasets) > 1:
                w.writerow(["fewshot", *base, "Average", shots, "accuracy", num(avg), "", "", "", "", "", ""])
    for r in base2new_rows(runs, problems):
        base = [label(r.method), r.method.trainer, r.method.config, r.method.backbone, r.method.variant, r.method.preset]
        for metric, stat, mean in (("base", r.base, r.base_mean), ("new", r.new, r.new_mean), ("hm", None, r.hm)):
            w.writerow(["base2new", *base, r.dataset, "", metric, num(mean), num(stat.std) if stat else "",
                        stat.n if stat else "", " ".join(map(str, stat.seeds)) if stat else "", "", "", ""])

    def stat_cells(s: Optional[Stat]) -> list:
        return [num(s.mean if s else None), num(s.std if s else None), s.n if s else 0, " ".join(map(str, s.seeds)) if s else ""]

    for t in transfer_tables(runs, problems):
        find = None
        if published:
            find = published_lookup(figures, sources, setting=t.kind, source_dataset=t.source)
        shots = "" if t.shots is None else t.shots
        for m, src, cells, avg in t.rows:
            base = [label(m), m.trainer, m.config, m.backbone, m.variant, m.preset]
            for d, s, metric in [(t.source, src, f"accuracy (source {t.source})")] + [(d, cells[d], f"accuracy (from {t.source})") for d in t.targets]:
                pub = find(m, d, t.shots) if find else None
                w.writerow([t.kind, *base, d, shots, metric, *stat_cells(s), num(pub.accuracy if pub else None),
                            _source_name(pub) if pub else "", num(s.mean - pub.accuracy if (s and pub) else None)])
            w.writerow([t.kind, *base, "Average (targets)", shots, f"accuracy (from {t.source})", num(avg), "", "", "", "", "", ""])
    for t in ablation_tables(runs, problems):
        for value, cells, avg in t.rows:
            variant = variant_suffix([t.key, value]) + (f"_{t.method.variant}" if t.method.variant else "")
            base = [label_of(t.method), t.method.trainer, t.method.config, t.method.backbone, variant, t.method.preset]
            for d in t.datasets:
                w.writerow(["ablation", *base, d, t.shots, f"accuracy ({t.key}={value})", *stat_cells(cells[d]), "", "", ""])
            if len(t.datasets) > 1:
                w.writerow(["ablation", *base, "Average", t.shots, f"accuracy ({t.key}={value})", num(avg), "", "", "", "", "", ""])
    return buf.getvalue(), problems


# --------------------------------------------------------------------- plot
def plot_fewshot(runs: Sequence[Run], path: str, published: bool = False, published_path: str = PUBLISHED_FILE) -> str:
    """Accuracy vs shots, one panel per dataset and one for the average, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems: List[str] = []
    tables = [t for t in fewshot_tables(runs, problems) if t.shots is not None]
    if not tables:
        raise UserError("nothing to plot: no few-shot runs with a shot count were found (zero-shot alone has no curve)")
    find = None
    if published:
        figures, sources = load_published(published_path)
        find = published_lookup(figures, sources)
    datasets = tables[0].datasets
    panels = datasets + (["Average"] if len(datasets) > 1 else [])
    label = _labeller([r.method for r in runs], with_preset=True)
    methods = list(OrderedDict.fromkeys(m for t in tables for m, _, _ in t.rows))
    shots_all = [t.shots for t in tables]
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, panel in enumerate(panels):
        ax = axes[i // ncols][i % ncols]
        for j, m in enumerate(methods):
            color = colors[j % len(colors)]
            xs, ys, es = [], [], []
            for t in tables:
                row = next((r for mm, r, _ in t.rows if mm == m), None)
                if row is None:
                    continue
                point = _panel_point(row, datasets, panel)
                if point is not None:
                    xs.append(t.shots)
                    ys.append(point[0])
                    es.append(point[1])
            if not xs:
                continue
            if any(r.method == m and r.training_free for r in runs):
                # Training-free (zero-shot): one number whatever the shots, drawn across the axis.
                ax.axhline(ys[0], color=color, linestyle="--", linewidth=1.5, label=label(m))
            else:
                ax.errorbar(xs, ys, yerr=es, color=color, label=label(m), capsize=3, marker="o", markersize=4, linewidth=1.5)
            if find is not None:
                pub = [(s, _published_point(find, m, datasets, panel, s)) for s in shots_all]
                pub = [(s, p) for s, p in pub if p is not None]
                if pub:
                    ax.plot([s for s, _ in pub], [p for _, p in pub], color=color, linestyle=":", marker="x",
                            label=f"{label(m)} published")
        ax.set_xscale("log", base=2)
        ax.set_xlim(min(shots_all) / 1.4, max(shots_all) * 1.4)
        ax.set_xticks(shots_all)
        ax.set_xticklabels([str(s) for s in shots_all])
        ax.set_title(panel)
        ax.set_xlabel("shots per class")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(True, alpha=0.3)
    for k in range(len(panels), nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    legend: "OrderedDict[str, object]" = OrderedDict()
    for ax in axes.flat:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(text, handle)
    handles, labels = list(legend.values()), list(legend.keys())
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * math.ceil(len(labels) / 4), 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_ablation(runs: Sequence[Run], path: str) -> str:
    """Accuracy against the swept value: one panel per ablation table, one line per dataset (and
    their average), error bars = std over seeds. Numeric values sit on a linear axis, names side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = ablation_tables(runs, [])
    if not tables:
        raise UserError("nothing to plot: no ablation runs were found (scripts/ablation.sh writes them)")
    ncols = min(3, len(tables))
    nrows = math.ceil(len(tables) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 3.8 * nrows), squeeze=False)
    for i, t in enumerate(tables):
        ax = axes[i // ncols][i % ncols]
        values = [v for v, _, _ in t.rows]
        xs = [_as_number(v) for v in values] if t.numeric() else list(range(len(values)))
        panels = t.datasets + (["Average"] if len(t.datasets) > 1 else [])
        for panel in panels:
            pts = [(x, _panel_point(cells, t.datasets, panel)) for x, (_, cells, _) in zip(xs, t.rows)]
            pts = [(x, p) for x, p in pts if p is not None]
            if not pts:
                continue
            style = dict(color="black", linestyle="--") if panel == "Average" else {}
            ax.errorbar([x for x, _ in pts], [m for _, (m, _) in pts], yerr=[e for _, (_, e) in pts], label=panel,
                        capsize=3, marker="o", markersize=4, linewidth=1.5, **style)
        if not t.numeric():
            ax.set_xlim(-0.5, len(values) - 0.5)
        elif len(xs) > 2 and all(x > 0 and math.log2(x).is_integer() for x in xs):
            ax.set_xscale("log", base=2)  # bottleneck reductions 2, 4, ..., 32: evenly spaced
        ax.set_xticks(xs)
        ax.set_xticklabels(values)
        ax.set_xlabel(t.key)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"{label_of(t.method)}, {_shots_name(t.shots)}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    for k in range(len(tables), nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _panel_point(row: Dict[str, Optional[Stat]], datasets: List[str], panel: str) -> Optional[Tuple[float, float]]:
    """(mean, std over seeds) of one dataset, or of the dataset average (per-seed averages of complete seeds)."""
    if panel != "Average":
        s = row.get(panel)
        return (s.mean, s.std) if s else None
    stats = [row.get(d) for d in datasets]
    if any(s is None for s in stats):
        return None
    mean = statistics.fmean(s.mean for s in stats)
    common = set.intersection(*(set(s.seeds) for s in stats))
    per_seed = [statistics.fmean(dict(zip(s.seeds, s.values))[seed] for s in stats) for seed in sorted(common)]
    return mean, statistics.pstdev(per_seed) if len(per_seed) > 1 else 0.0


def _published_point(find, m: Method, datasets: List[str], panel: str, shots: int) -> Optional[float]:
    if panel != "Average":
        p = find(m, panel, shots)
        return p.accuracy if p else None
    pubs = [find(m, d, shots) for d in datasets]
    return statistics.fmean(p.accuracy for p in pubs) if all(pubs) else None


# ---------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m clip_adapter.results",
        description="Few-shot and base-to-novel tables (mean ± std over seeds) from every results.json under a folder.",
    )
    p.add_argument("output_dir", help="the folder the scripts wrote (e.g. output/)")
    p.add_argument("--format", default="github", help="csv (long format for spreadsheets) or any tabulate format: github, latex, plain, ...")
    p.add_argument("--plot", default=None, metavar="PNG", help="also write few-shot curves (accuracy vs shots) to this PNG")
    p.add_argument("--plot-ablation", default=None, metavar="PNG", help="also write the ablations (accuracy vs the swept value) to this PNG")
    p.add_argument("--published", action="store_true", help="compare with the published figures (clip_adapter/published.json)")
    p.add_argument("--published-file", default=PUBLISHED_FILE, help="another published-numbers file in the same format")
    p.add_argument("--expected-seeds", type=int, default=EXPECTED_SEEDS, help="cells show n=<seeds> when it differs from this")
    p.add_argument("--out", default=None, metavar="FILE", help="write the tables to this file (atomically) instead of stdout")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        fmt = args.format
        if fmt != "csv" and fmt not in tabulate_formats:
            raise UserError(f"unknown --format {fmt!r}; use csv or one of: {', '.join(sorted(tabulate_formats))}")
        runs, problems = load_runs(args.output_dir)
        if not runs:
            raise UserError(f"no {RESULTS_FILE} found under {args.output_dir} (finished runs write one; run scripts/main.sh first)")
        if fmt == "csv":
            text, more = render_csv(runs, args.published, args.published_file)
        else:
            text, more = render_tables(runs, fmt, args.published, args.expected_seeds, args.published_file)
            text = f"{len(runs)} finished runs under {args.output_dir}\n\n" + text
        for line in problems + more:
            log.warning("warning: %s", line)
        if args.out:
            atomic_write_text(args.out, text)
            log.info("Wrote %s", args.out)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
        if args.plot:
            plot_fewshot(runs, args.plot, args.published, args.published_file)
            log.info("Wrote %s", args.plot)
        if args.plot_ablation:
            plot_ablation(runs, args.plot_ablation)
            log.info("Wrote %s", args.plot_ablation)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The tables of a set of runs, built in the table model: few-shot, base-to-novel, transfer, ablation.

Conventions, as in CoOp's ``parse_test_res.py``: a cell is the mean and the population standard
deviation over seeds; an Average column is the mean of the per-dataset means and exists only when
every dataset of the table has a result (a missing run is shown as ``missing``, never averaged
around). Base-to-novel: the HM of a dataset is the harmonic mean of its seed-mean base and new
accuracies; the average is given both ways papers print it, each labelled: the HM of the averaged
base and new (CoCoOp, MaPLe) and the mean of the per-dataset HMs (GDA).
"""
from __future__ import annotations

import math
import statistics
from collections import OrderedDict, defaultdict
from dataclasses import replace
from typing import Dict, Iterable, List, Optional, Sequence

from clip_adapter.app.results.labels import EXPECTED_SEEDS, OFFLINE, label_of, shots_name
from clip_adapter.app.results.model import (Cell, Column, Row, Table, harmonic_mean, mean_if_complete, ordered_datasets,
                                            per_seed)
from clip_adapter.app.results.runs import Method, Run
from clip_adapter.app.experiments.naming import variant_suffix

FEWSHOT, BASE2NEW, ABLATION = "fewshot", "base2new", "ablation"
SHIFT, CROSS = "distribution_shift", "cross_dataset"
# Distribution-shift targets in the order papers print them; other test-only targets follow alphabetically.
SHIFT_ORDER = ["ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR", "SmokeGray", "SmokeInvert", "SmokeBlur", "SmokeSubset"]
# Swept values that are names, in the paper's order (numbers sort numerically, other names alphabetically).
VALUE_ORDER = {"TRAINER.CLIP_ADAPTER.TYPE": ["visual", "text", "both"]}
HM_OF_AVERAGES = "Average (HM of averaged base and new)"
MEAN_OF_HMS = "Average (mean of per-dataset HMs)"
OFFLINE_TITLE = " [offline checks: smoke data or a tiny backbone; the numbers test the code, not a method]"


def _n_note(expected: int) -> str:
    return f"mean ± std over seeds (n shown when not {expected})"


def _average_cell(cells: Dict[str, Cell], columns: Sequence[str]) -> Cell:
    means = [cells[c].mean for c in columns]
    done = sum(m is not None for m in means)
    return Cell(value=mean_if_complete(means), missing=f"missing ({done}/{len(columns)})")


# ------------------------------------------------------------------ few-shot
def is_fewshot(run: Run) -> bool:
    """All classes, and not an evaluation of a model trained elsewhere (cross-dataset, base-to-novel),
    nor a transfer target (test-only datasets), nor an ablation run (those have their own tables)."""
    return (run.subsample == "all" and not (run.eval_only and run.model_dir) and not run.source
            and not run.test_only and not run.sweep_key)


def fewshot_tables(runs: Sequence[Run], problems: List[str], expected: int = EXPECTED_SEEDS) -> List[Table]:
    """One table per shot count; training-free methods appear in each (their number does not depend on shots)."""
    runs = [r for r in runs if is_fewshot(r)]
    if not runs:
        return []
    datasets = ordered_datasets(r.dataset for r in runs)
    shot_counts: List[Optional[int]] = sorted({r.shots for r in runs if not r.training_free}) or [None]
    methods = sorted({r.method for r in runs}, key=Method.sort_key)
    groups: Dict[tuple, List[Run]] = defaultdict(list)
    for r in runs:
        groups[(r.method, r.dataset, None if r.training_free else r.shots)].append(r)
    free = {r.method for r in runs if r.training_free}
    columns = [Column(d, d) for d in datasets] + ([Column("Average", "Average")] if len(datasets) > 1 else [])
    tables = []
    for shots in shot_counts:
        table = Table(FEWSHOT, f"Few-shot top-1 accuracy (%), {shots_name(shots)}: {_n_note(expected)}", columns,
                      shots=shots, datasets=datasets)
        for m in methods:
            key_shots = None if m in free else shots
            if m not in free and not any(groups.get((m, d, shots)) for d in datasets):
                continue
            cells = {}
            for d in datasets:
                what = f"{label_of(m)} on {d}" + (f" ({shots} shots)" if key_shots is not None else "")
                cells[d] = Cell(measured=True, stat=per_seed(groups.get((m, d, key_shots), []), what, problems))
            if len(datasets) > 1:
                cells["Average"] = _average_cell(cells, datasets)
            table.rows.append(Row(m, cells))
        tables.append(table)
    # Duplicate warnings for a training-free row would repeat once per table: keep each message once.
    problems[:] = list(OrderedDict.fromkeys(problems))
    return tables


# ------------------------------------------------------------ base-to-novel
def base2new_table(runs: Sequence[Run], problems: List[str], expected: int = EXPECTED_SEEDS) -> Optional[Table]:
    """Base, New, HM per (method, dataset), and per method the two labelled averages."""
    runs = [r for r in runs if r.subsample in ("base", "new")]
    if not runs:
        return None
    datasets = ordered_datasets(r.dataset for r in runs)
    methods = sorted({r.method for r in runs}, key=Method.sort_key)
    groups: Dict[tuple, List[Run]] = defaultdict(list)
    for r in runs:
        groups[(r.method, r.dataset, r.subsample)].append(r)
    # The evaluation runs (test_base/test_new) are preferred over the training run's own base score.
    prefer = lambda r: 0 if r.eval_only else 1  # noqa: E731
    table = Table(
        BASE2NEW,
        f"Base-to-novel top-1 accuracy (%): Base and New {_n_note(expected)}; HM = harmonic mean of the seed-mean Base and New",
        [Column("Base", metric="base"), Column("New", metric="new"), Column("HM", metric="hm")],
        lead=["Dataset"], datasets=datasets,
    )
    for m in methods:
        hms = []
        bases, news = [], []
        for d in datasets:
            base = per_seed(groups.get((m, d, "base"), []), f"{label_of(m)} on {d} (base)", problems, prefer)
            new = per_seed(groups.get((m, d, "new"), []), f"{label_of(m)} on {d} (new)", problems, prefer)
            hm = harmonic_mean(base.mean, new.mean) if base and new else None
            bases.append(base.mean if base else None)
            news.append(new.mean if new else None)
            hms.append(hm)
            cells = {"Base": Cell(stat=base, measured=True), "New": Cell(stat=new, measured=True), "HM": Cell(value=hm)}
            table.rows.append(Row(m, cells, lead=[d], dataset=d))
        if len(datasets) > 1:
            ab, an = mean_if_complete(bases), mean_if_complete(news)
            hm_avg = harmonic_mean(ab, an) if ab is not None and an is not None else None
            table.rows.append(Row(m, {"Base": Cell(value=ab), "New": Cell(value=an), "HM": Cell(value=hm_avg)},
                                  lead=[HM_OF_AVERAGES], dataset="Average"))
            table.rows.append(Row(m, {"HM": Cell(value=mean_if_complete(hms), metric="hm (mean of per-dataset HMs)")},
                                  lead=[MEAN_OF_HMS], dataset="Average"))
    if len(datasets) > 1:
        table.notes.append("Two averages, as papers print them: the HM of the averaged Base and New (CoCoOp, MaPLe) and the mean "
                           "of the per-dataset HMs (GDA); each exists only when every dataset has both Base and New.")
    return table


# -------------------------------------------------------------- transfer
TRANSFER_TITLES = {
    SHIFT: "Distribution shift: trained on {source} ({shots}), tested on shifted test sets of its classes",
    CROSS: "Cross-dataset transfer: trained on {source} ({shots}), tested on other datasets",
}


def is_transfer(run: Run) -> bool:
    """An evaluation on another dataset than the model's source (not base-to-novel)."""
    return bool(run.source) and run.subsample == "all" and run.dataset != run.source


def _ordered_targets(kind: str, names: Iterable[str]) -> List[str]:
    names = set(names)
    if kind == SHIFT:
        known = [d for d in SHIFT_ORDER if d in names]
        return known + sorted(names - set(known))
    return ordered_datasets(names)


def transfer_tables(runs: Sequence[Run], problems: List[str], expected: int = EXPECTED_SEEDS) -> List[Table]:
    """Source + targets + the average of the targets, one row per method (CoCoOp's Tables 2 and 3), one table
    per (kind, source, shots). SHIFT: test-only targets (the source's classes or a subset, other images);
    CROSS: other datasets. A training-free method's cells are its runs on each dataset, whatever the source."""
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
        src_col = f"{source} (source)"
        columns = ([Column(src_col, source, f"accuracy (source {source})")] + [Column(d, d, f"accuracy (from {source})") for d in targets]
                   + [Column("Average (targets)", "Average (targets)", f"accuracy (from {source})")])
        for shots in shot_counts:
            title = TRANSFER_TITLES[kind].format(source=source, shots=shots_name(shots))
            table = Table(kind, f"{title}: top-1 accuracy (%), {_n_note(expected)}", columns, shots=shots, datasets=targets, source=source)
            trained = sorted({r.method for r in group if not r.training_free and r.source_shots == shots}, key=Method.sort_key)
            for m in free + trained:
                mine = [r for r in group if r.method == m and (m in free or r.source_shots == shots)]
                at_source = [r for r in fewshot if r.method == m and r.dataset == source and (m in free or r.shots == shots)]
                label = label_of(m)
                cells = {src_col: Cell(measured=True, stat=per_seed(at_source, f"{label} on {source} (source)", problems))}
                for d in targets:
                    cells[d] = Cell(measured=True, stat=per_seed([r for r in mine if r.dataset == d], f"{label}: {source} -> {d}", problems))
                cells["Average (targets)"] = _average_cell(cells, targets)
                table.rows.append(Row(m, cells))
            tables.append(table)
    problems[:] = list(OrderedDict.fromkeys(problems))
    return tables


# -------------------------------------------------------------- ablations
def as_number(value: str) -> Optional[float]:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _value_order(key: str, values: Iterable[str]) -> List[str]:
    values = list(OrderedDict.fromkeys(values))
    if all(as_number(v) is not None for v in values):
        return sorted(values, key=lambda v: as_number(v))
    known = VALUE_ORDER.get(key, [])
    return sorted(values, key=lambda v: (known.index(v) if v in known else len(known), v))


def ablation_tables(runs: Sequence[Run], problems: List[str], expected: int = EXPECTED_SEEDS) -> List[Table]:
    """Every ablation.sh sweep, grouped by key, method (with the opts held fixed) and shots: rows = swept values."""
    sweeps = [r for r in runs if r.sweep_key and r.subsample == "all" and not r.source]
    groups: Dict[tuple, List[Run]] = defaultdict(list)
    for r in sweeps:
        method = replace(r.method, variant=r.sweep_fixed)
        groups[(r.sweep_key, method, r.shots)].append(r)
    tables = []
    for (key, method, shots), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1].sort_key(), kv[0][2])):
        datasets = ordered_datasets(r.dataset for r in group)
        columns = [Column(d, d) for d in datasets] + ([Column("Average", "Average")] if len(datasets) > 1 else [])
        title = f"Ablation of {key}: {label_of(method)}, {shots_name(shots)}: top-1 accuracy (%), {_n_note(expected)}"
        table = Table(ABLATION, title, columns, lead=[key.rsplit(".", 1)[-1]], method_column=False, shots=shots,
                      datasets=datasets, key=key, method=method)
        # "0" and "0.0" are one setting: group numbers by value, show the shortest spelling.
        canon = lambda v: as_number(v) if as_number(v) is not None else v  # noqa: E731
        spelling: Dict[object, str] = {}
        for r in group:
            best = spelling.get(canon(r.sweep_value))
            if best is None or (len(r.sweep_value), r.sweep_value) < (len(best), best):
                spelling[canon(r.sweep_value)] = r.sweep_value
        for value in _value_order(key, spelling.values()):
            cells = {}
            for d in datasets:
                cell = [r for r in group if r.dataset == d and canon(r.sweep_value) == canon(value)]
                cells[d] = Cell(measured=True, stat=per_seed(cell, f"{label_of(method)} {key}={value} on {d} ({shots} shots)", problems))
            if len(datasets) > 1:
                cells["Average"] = _average_cell(cells, datasets)
            variant = variant_suffix([key, value]) + (f"_{method.variant}" if method.variant else "")
            table.rows.append(Row(method, cells, lead=[value], variant=variant, metric=f"accuracy ({key}={value})"))
        tables.append(table)
    return tables


def numeric_values(table: Table) -> bool:
    """Whether an ablation's swept values are all numbers (a linear axis in the plot)."""
    return all(as_number(r.lead[0]) is not None for r in table.rows)


# ------------------------------------------------------------------ all
def build_tables(runs: Sequence[Run], problems: List[str], expected: int = EXPECTED_SEEDS) -> List[Table]:
    """Every table the runs make, in the report's order; offline checks labelled."""
    b2n = base2new_table(runs, problems, expected)
    tables = (fewshot_tables(runs, problems, expected) + ([b2n] if b2n else []) + transfer_tables(runs, problems, expected)
              + ablation_tables(runs, problems, expected))
    for t in tables:
        label_offline(t)
    return tables


def label_offline(table: Table) -> None:
    """A table of offline checks only says so in its title; a table that mixes them labels their rows."""
    methods = table.methods()
    if methods and all(m.offline for m in methods):
        table.title += OFFLINE_TITLE
        return
    for row in table.rows:
        if row.method is not None and row.method.offline:
            row.note = OFFLINE


def average_point(cells: Dict[str, Cell], datasets: List[str]) -> Optional[tuple]:
    """(mean, std over seeds) of the dataset average: the mean of the means, and the std of the per-seed
    averages over the seeds every dataset has (for plots)."""
    stats = [cells[d].stat if d in cells else None for d in datasets]
    if any(s is None for s in stats):
        return None
    mean = statistics.fmean(s.mean for s in stats)
    common = set.intersection(*(set(s.seeds) for s in stats))
    per_seed_avg = [statistics.fmean(dict(zip(s.seeds, s.values))[seed] for s in stats) for seed in sorted(common)]
    return mean, statistics.pstdev(per_seed_avg) if len(per_seed_avg) > 1 else 0.0

"""Plots of the tables: few-shot curves (accuracy vs shots) and ablations (accuracy vs the swept value).

matplotlib is imported only here, and only when a plot is asked for (the tables start quickly).
"""
from __future__ import annotations

import io
import math
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

from clip_adapter.app.results.build import ablation_tables, as_number, average_point, fewshot_tables, numeric_values
from clip_adapter.app.results.labels import label_of, labeller, shots_name
from clip_adapter.app.results.model import Cell
from clip_adapter.app.results.published import PUBLISHED_FILE, Figures, attach, load_published
from clip_adapter.app.results.runs import Method, Run
from clip_adapter.errors import UserError
from clip_adapter.utils import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, plt, path: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _point(cells: Dict[str, Cell], datasets: List[str], panel: str) -> Optional[Tuple[float, float]]:
    """(mean, std over seeds) of one dataset, or of the dataset average."""
    if panel != "Average":
        s = cells[panel].stat if panel in cells else None
        return (s.mean, s.std) if s else None
    return average_point(cells, datasets)


def _published_point(cells: Dict[str, Cell], panel: str) -> Optional[float]:
    cell = cells.get(panel)
    return cell.published.accuracy if cell is not None and cell.published is not None else None


def plot_fewshot(runs: Sequence[Run], path: str, published: bool = False, published_path: str = PUBLISHED_FILE) -> str:
    """Accuracy vs shots, one panel per dataset and one for the average, error bars = std over seeds."""
    tables = [t for t in fewshot_tables(runs, []) if t.shots is not None]
    if not tables:
        raise UserError("nothing to plot: no few-shot runs with a shot count were found (zero-shot alone has no curve)")
    if published:
        attach(tables, Figures(*load_published(published_path)))
    plt = _pyplot()
    datasets = tables[0].datasets
    panels = datasets + (["Average"] if len(datasets) > 1 else [])
    methods: List[Method] = list(OrderedDict.fromkeys(r.method for t in tables for r in t.rows))
    base_label = labeller(methods)
    presets = len({m.preset for m in methods}) > 1
    label = (lambda m: f"{base_label(m)} preset={m.preset or '?'}") if presets else base_label  # the legend has no Preset column
    free = {r.method for r in runs if r.training_free}
    shots_all = [t.shots for t in tables]
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, panel in enumerate(panels):
        ax = axes[i // ncols][i % ncols]
        for j, m in enumerate(methods):
            color = colors[j % len(colors)]
            xs, ys, es, pub = [], [], [], []
            for t in tables:
                row = next((r for r in t.rows if r.method == m), None)
                if row is None:
                    continue
                point = _point(row.cells, datasets, panel)
                if point is not None:
                    xs.append(t.shots)
                    ys.append(point[0])
                    es.append(point[1])
                p = _published_point(row.cells, panel)
                if p is not None:
                    pub.append((t.shots, p))
            if xs and m in free:
                # Training-free (zero-shot): one number whatever the shots, drawn across the axis.
                ax.axhline(ys[0], color=color, linestyle="--", linewidth=1.5, label=label(m))
            elif xs:
                ax.errorbar(xs, ys, yerr=es, color=color, label=label(m), capsize=3, marker="o", markersize=4, linewidth=1.5)
            if pub:
                ax.plot([s for s, _ in pub], [p for _, p in pub], color=color, linestyle=":", marker="x", label=f"{label(m)} published")
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
    return _save(fig, plt, path)


def plot_ablation(runs: Sequence[Run], path: str) -> str:
    """Accuracy against the swept value: one panel per ablation table, one line per dataset (and
    their average), error bars = std over seeds. Numeric values sit on a linear axis, names side by side."""
    tables = ablation_tables(runs, [])
    if not tables:
        raise UserError("nothing to plot: no ablation runs were found (scripts/ablation.sh writes them)")
    plt = _pyplot()
    ncols = min(3, len(tables))
    nrows = math.ceil(len(tables) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 3.8 * nrows), squeeze=False)
    for i, t in enumerate(tables):
        ax = axes[i // ncols][i % ncols]
        values = [r.lead[0] for r in t.rows]
        numeric = numeric_values(t)
        xs = [as_number(v) for v in values] if numeric else list(range(len(values)))
        panels = t.datasets + (["Average"] if len(t.datasets) > 1 else [])
        for panel in panels:
            pts = [(x, _point(r.cells, t.datasets, panel)) for x, r in zip(xs, t.rows)]
            pts = [(x, p) for x, p in pts if p is not None]
            if not pts:
                continue
            style = dict(color="black", linestyle="--") if panel == "Average" else {}
            ax.errorbar([x for x, _ in pts], [m for _, (m, _) in pts], yerr=[e for _, (_, e) in pts], label=panel,
                        capsize=3, marker="o", markersize=4, linewidth=1.5, **style)
        if not numeric:
            ax.set_xlim(-0.5, len(values) - 0.5)
        elif len(xs) > 2 and all(x > 0 and math.log2(x).is_integer() for x in xs):
            ax.set_xscale("log", base=2)  # bottleneck reductions 2, 4, ..., 32: evenly spaced
        ax.set_xticks(xs)
        ax.set_xticklabels(values)
        ax.set_xlabel(t.key)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"{label_of(t.method)}, {shots_name(t.shots)}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    for k in range(len(tables), nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    fig.tight_layout()
    return _save(fig, plt, path)

"""Tables and plots from a tree of run folders: every ``results.json`` under a folder, nothing else.

``python -m clip_adapter.app.results OUTPUT_DIR [--format github|latex|csv|...] [--plot curves.png]
[--published] [--include-offline-checks]`` (``clip-adapter results`` dispatches to :func:`main`).

One job per module: ``runs`` reads results.json files into runs; ``model`` is the table model
(rows x columns of cells, mean ± std over seeds); ``build`` groups runs into the few-shot,
base-to-novel, transfer and ablation tables; ``published`` matches published figures to cells;
``layout`` + ``render_text`` / ``render_latex`` / ``render_csv`` print them; ``plots`` draws them;
``cli`` is the command. A run's variant is named from its opts by ``clip_adapter.app.experiments.naming`` (shared with the planner).
Nothing here imports torch, the engine or the trainers: it reads JSON and starts quickly.
"""
from clip_adapter.app.results.cli import main
from clip_adapter.app.results.plots import plot_ablation, plot_fewshot
from clip_adapter.app.results.published import load_published
from clip_adapter.app.results.render_csv import render_csv
from clip_adapter.app.results.render_text import render_tables
from clip_adapter.app.results.runs import load_runs

__all__ = ["main", "load_runs", "render_tables", "render_csv", "plot_fewshot", "plot_ablation", "load_published"]

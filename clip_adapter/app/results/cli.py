"""``python -m clip_adapter.app.results OUTPUT_DIR`` (``clip-adapter results``): the tables and plots of a run tree.

``main(argv)`` takes a list so tests run it in-process; bad input is one ``error:`` line and exit 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from tabulate import tabulate_formats

from clip_adapter.app.results.labels import EXPECTED_SEEDS
from clip_adapter.app.results.published import PUBLISHED_FILE
from clip_adapter.app.results.runs import RESULTS_FILE, load_runs, without_offline_checks
from clip_adapter.errors import UserError
from clip_adapter.utils import atomic_write_text

PROG = "python -m clip_adapter.app.results"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Few-shot, base-to-novel, transfer and ablation tables (mean ± std over seeds) from every results.json under a folder.",
    )
    p.add_argument("output_dir", help="the folder the scripts wrote (e.g. output/)")
    p.add_argument("--format", default="github",
                   help="csv (long format for spreadsheets), latex / latex_booktabs (escaped tabulars), or any tabulate format: github, plain, ...")
    p.add_argument("--plot", default=None, metavar="PNG", help="also write few-shot curves (accuracy vs shots) to this PNG")
    p.add_argument("--plot-ablation", default=None, metavar="PNG", help="also write the ablations (accuracy vs the swept value) to this PNG")
    p.add_argument("--published", action="store_true", help="compare with the published figures (clip_adapter/published.json)")
    p.add_argument("--published-file", default=PUBLISHED_FILE, help="another published-numbers file in the same format")
    p.add_argument("--include-offline-checks", action="store_true",
                   help="also tabulate runs marked offline_check (smoke data or a tiny backbone), labelled as such")
    p.add_argument("--expected-seeds", type=int, default=EXPECTED_SEEDS, help="cells show n=<seeds> when it differs from this")
    p.add_argument("--out", default=None, metavar="FILE", help="write the tables to this file (atomically) instead of stdout")
    return p


def _offline_note(left_out: int) -> str:
    return (f"{left_out} offline-check run(s) (smoke data or a tiny backbone) left out; --include-offline-checks shows them"
            if left_out else "")


def run(args: argparse.Namespace) -> int:
    from clip_adapter.app.results.plots import plot_ablation, plot_fewshot
    from clip_adapter.app.results.render_csv import render_csv
    from clip_adapter.app.results.render_text import render_tables

    fmt = args.format
    if fmt != "csv" and fmt not in tabulate_formats:
        raise UserError(f"unknown --format {fmt!r}; use csv or one of: {', '.join(sorted(tabulate_formats))}")
    found, problems = load_runs(args.output_dir)
    if not found:
        raise UserError(f"no {RESULTS_FILE} found under {args.output_dir} (finished runs write one; run scripts/main.sh first)")
    runs, left_out = without_offline_checks(found, args.include_offline_checks)
    if not runs:
        raise UserError(f"all {left_out} runs under {args.output_dir} are offline checks (smoke data or a tiny backbone); "
                        "pass --include-offline-checks to tabulate them")
    note = _offline_note(left_out)
    if fmt == "csv":
        text, more = render_csv(runs, args.published, args.published_file, args.expected_seeds)
        if note:
            more.append(note)
    else:
        text, more = render_tables(runs, fmt, args.published, args.expected_seeds, args.published_file)
        head = f"{len(runs)} finished runs under {args.output_dir}" + (f" ({note})" if note else "")
        text = ("% " if fmt.startswith("latex") else "") + head + "\n\n" + text
    for line in problems + more:
        print(f"warning: {line}", file=sys.stderr)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"Wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if args.plot:
        plot_fewshot(runs, args.plot, args.published, args.published_file)
        print(f"Wrote {args.plot}", file=sys.stderr)
    if args.plot_ablation:
        plot_ablation(runs, args.plot_ablation)
        print(f"Wrote {args.plot_ablation}", file=sys.stderr)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

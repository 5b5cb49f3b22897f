"""``python -m clip_adapter.app.doctor`` (``clip-adapter doctor``): the report table, the findings
with their fixes, ``--fix`` and the exit status; ``main(argv)`` takes a list so tests run it in-process."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from typing import List, Optional, Sequence, Tuple

from clip_adapter.app.doctor.cache import check_feature_cache, default_cache_dir
from clip_adapter.app.doctor.datasets import check_dataset, resolve
from clip_adapter.app.doctor.findings import Finding, Report, _examples
from clip_adapter.app.doctor.imagenet_val import DEVKIT, sort_imagenet_val
from clip_adapter.data.splits import DOCTOR
from clip_adapter.errors import UserError

def _cell(found_listed: Optional[Tuple[int, int]]) -> str:
    if not found_listed:
        return "-"
    found, listed = found_listed
    return str(listed) if found == listed else f"{found}/{listed}"


def render(reports: Sequence[Report], fmt: str = "github") -> str:
    from tabulate import tabulate

    rows = [
        [r.dataset, r.status, r.folder, _cell(r.counts.get("train")),
         "= test" if r.val_is_test and r.counts else _cell(r.counts.get("val")), _cell(r.counts.get("test")),
         f"{r.unreadable}/{r.checked_images}" if r.checked_images else "-", r.classes or "-", r.fewshot or "-"]
        for r in reports
    ]
    headers = ["dataset", "status", "folder", "train", "val", "test", "unreadable", "classes", "few-shot files"]
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def render_findings(reports: Sequence[Report], show_missing: bool = True) -> str:
    """Each dataset's problems and fixes; datasets that are simply absent only when ``show_missing``."""
    lines = []
    for r in reports:
        shown = r.findings if (show_missing or r.status != "missing") else []
        if not shown:
            continue
        lines.append(f"{r.dataset} [{r.status}]")
        for f in shown:
            lines.append(f"  {f.level}: {f.text}")
            if f.fix:
                lines.append(f"    fix: {f.fix}")
    return "\n".join(lines)


def apply_fixes(findings: Sequence[Finding]) -> List[str]:
    """Delete what the findings mark as safe to delete (all of it is rebuilt by the next run)."""
    done = []
    for f in findings:
        for path in f.delete:
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
            else:
                continue
            done.append(path)
    return done


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=DOCTOR, description="The dataset doctor: what is wrong with a dataset on disk, with the fix.")
    p.add_argument("names", nargs="*", help="datasets: registered names, config names (caltech101, my_data) or dataset YAML paths; default: all")
    p.add_argument("--root", default=os.environ.get("DATA", ""), help="the folder that holds the datasets ($DATA)")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE", help="config overrides, e.g. DATASET.CUSTOM.PATH my_data")
    p.add_argument("--cache-dir", default=None, help="feature cache to check (default: $CLIP_ADAPTER_FEATURE_CACHE, else ./output/feature_cache)")
    p.add_argument("--sample", type=int, default=0, help="decode only this many images per dataset (default: all)")
    p.add_argument("--workers", type=int, default=8, help="threads decoding images")
    p.add_argument("--fix", action="store_true", help="delete stale few-shot files and damaged or stale cache files (rebuilt on the next run)")
    p.add_argument("--format", default="github", help="table format (tabulate's names)")
    p.add_argument("-v", "--verbose", action="store_true", help="without names: also say how to get each missing dataset")
    g = p.add_argument_group("sort ImageNet's flat validation folder into class folders")
    g.add_argument("--sort-imagenet-val", metavar="VAL_DIR", default="", help="the flat folder (e.g. $DATA/imagenet/images/val)")
    g.add_argument("--devkit", default="", help=f"{DEVKIT} (or its extracted folder): gives each image's class")
    g.add_argument("--labels", default="", help="instead of --devkit: '<image file> <wnid>' lines, or Kaggle's LOC_val_solution.csv")
    g.add_argument("--dry-run", action="store_true", help="print the moves only")
    return p


def run(args) -> int:
    if args.sort_imagenet_val:
        moved = sort_imagenet_val(args.sort_imagenet_val, args.devkit, args.labels, args.dry_run)
        verb = "would move" if args.dry_run else "moved"
        print(f"{verb} {moved} image(s) into class folders under {args.sort_imagenet_val}")
        if not args.dry_run and moved:
            print(f"next: {DOCTOR} ImageNet --root <DATA> (the first run then builds split_built_ImageNet.json)")
        return 0
    from clip_adapter.plugins import load_all

    load_all()  # datasets (and plugins), trainer config nodes: this is an entry point
    from clip_adapter.registry import DATASETS

    if not args.root and not args.names:
        raise UserError("no --root given (and $DATA is not set): pass the folder that holds your datasets")
    root = os.path.abspath(os.path.expanduser(args.root)) if args.root else ""
    named = bool(args.names)
    names = args.names or [n for n in DATASETS.names() if n != "Custom" or any(o.startswith("DATASET.CUSTOM.PATH") for o in args.opts[0::2])]
    reports = []
    for name in names:
        try:
            ds = resolve(name, root, args.opts)
        except UserError as exc:
            if named:
                raise
            reports.append(Report(name, status="broken", findings=[Finding("error", str(exc))]))
            continue
        report = check_dataset(ds, sample=args.sample, workers=args.workers)
        label = os.path.splitext(os.path.basename(name))[0]
        if "".join(ch for ch in label.lower() if ch.isalnum()) not in (report.dataset.lower(), os.path.basename(ds.dataset_dir).lower().replace("-", "")):
            report.dataset = f"{report.dataset} ({label})"  # which of several Custom configs this row is
        reports.append(report)
    print(render(reports, args.format))
    details = render_findings(reports, show_missing=named or args.verbose)
    if details:
        print("\n" + details)
    absent = [r.dataset for r in reports if r.status == "missing"]
    if absent and not (named or args.verbose):
        print(f"\n{len(absent)} dataset(s) not under {root}: clip-adapter download --list says how to get each (-v: per dataset)")

    findings = [f for r in reports for f in r.findings]
    cache_dir = args.cache_dir if args.cache_dir is not None else default_cache_dir()
    if cache_dir:
        if not os.path.isdir(cache_dir):
            print(f"\nfeature cache {cache_dir}: not found (nothing cached yet)")
        else:
            from tabulate import tabulate

            rows, cache_findings = check_feature_cache(cache_dir)
            print(f"\nfeature cache {cache_dir}:")
            if rows:
                print(tabulate(rows, headers=["namespace", "encoder", "transform", "view", "shards", "rows", "damaged", "stale rows"], tablefmt=args.format, disable_numparse=True))
            else:
                print("(empty)")
            for f in cache_findings:
                print(f"  {f.level}: {f.text}" + (f"\n    fix: {f.fix}" if f.fix else ""))
            findings += cache_findings
    if args.fix:
        done = apply_fixes(findings)
        print("\n--fix: " + (f"deleted {len(done)}: {_examples(done)}" if done else "nothing to delete"))
    counted = [r for r in reports if named or r.status != "missing"]
    unusable = [r.dataset for r in counted if not r.usable]
    if unusable:
        print(f"\nunusable: {', '.join(unusable)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        return run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


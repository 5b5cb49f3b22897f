"""``clip-adapter download`` (also ``python -m clip_adapter.app.download``): fetch datasets into $DATA.

The download core (resources, resumable checksummed fetches, extraction) is ``clip_adapter.data.download``;
this is its command line.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from clip_adapter.data.download import DOWNLOADS, download_dataset, downloadable, find_dataset, manual_instructions
from clip_adapter.errors import UserError


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="clip-adapter download", description="Download datasets in CoOp's layout into --root")
    p.add_argument("names", nargs="*", help="datasets (class or CoOp config names), or 'all'")
    p.add_argument("--root", default=os.environ.get("DATA", ""), help="the folder that holds every dataset ($DATA)")
    p.add_argument("--keep-archives", action="store_true", help=f"keep downloaded archives in <dataset>/{DOWNLOADS}/")
    p.add_argument("--list", action="store_true", help="list the datasets and how each is obtained")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from clip_adapter.plugins import load_all

    load_all()  # datasets (and plugins), trainer config nodes: this is an entry point

    try:
        if args.list or not args.names:
            for cls in downloadable():
                how = "by hand" if cls.manual_download and not cls.resources else ("partly by hand" if cls.manual_download else "automatic")
                print(f"{cls.__name__:<20} {cls.dataset_dir + '/':<24} {how}")
            return 0
        if not args.root:
            raise UserError("no --root given (and $DATA is not set): pass the folder that holds your datasets")
        classes = downloadable() if args.names == ["all"] else [find_dataset(n) for n in args.names]
        status = 0
        for cls in classes:
            report = download_dataset(cls, args.root, keep_archives=args.keep_archives)
            if report.manual_missing:
                print(manual_instructions(cls, os.path.abspath(args.root)), file=sys.stderr)
                status = 1
            else:
                print(f"{cls.__name__}: ready in {report.dataset_dir} (fetched {len(report.fetched)}, already present {len(report.present)})")
        return status
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

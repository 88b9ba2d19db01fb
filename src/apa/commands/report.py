"""`apa report RUN_DIR... [--out FILE.md] [--names NAME...]`: the paper's Tables 1-3 from
the evaluations of several runs, beside the published numbers (see apa.evaluation.report)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="run folder holding metrics.json (directly, in eval/, or the one below it) and "
                             "optionally the config.yaml of `apa train`; or a metrics.json file")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.md", help="also write the report here")
    parser.add_argument("--names", nargs="+", default=None, metavar="NAME",
                        help="row names, one per RUN_DIR (default from config.yaml: 'ours FT', 'ours SimPO', "
                             "'ours DPO', or 'zero-shot' without an adapter); single-aspect runs that share "
                             "a name make up one row of Table 3")
    parser.add_argument("--title", default="Results", help="heading of the report")


def run(args: argparse.Namespace) -> int:
    import sys

    from apa.evaluation.report import build_report
    from apa.files import atomic_write_text

    markdown = build_report(args.runs, names=args.names, title=args.title)
    print(markdown, end="")
    if args.out is not None:
        atomic_write_text(args.out, markdown)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0

"""`apa report RUN_DIR... [--out FILE.md] [--names NAME...]`: the paper's Tables 1-3 from
the evaluations of several runs, beside the published numbers (see apa.reporting)."""

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

    from apa.errors import ApaError
    from apa.reporting import build_report

    markdown = build_report(args.runs, names=args.names, title=args.title)
    print(markdown, end="")
    if args.out is not None:
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_name(args.out.name + ".tmp")
            tmp.write_text(markdown, encoding="utf-8")
            tmp.replace(args.out)
        except OSError as e:
            raise ApaError(f"cannot write {args.out}: {e.strerror}; choose another --out") from e
        print(f"wrote {args.out}", file=sys.stderr)
    return 0

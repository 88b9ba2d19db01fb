"""Running a benchmark's cases: each in a fresh subprocess (on a CPU, so that a case's peak
memory is its own), or all in this process sharing one model (on a GPU)."""

from __future__ import annotations

import sys
from typing import Callable, Sequence

import measure
import models


def run_cases(script: str, argv: Sequence[str], args, make_bench: Callable, cases: Sequence[str],
              fields: Callable[[str], dict]) -> tuple[list[dict], str, object, bool]:
    """(results, setup header, device, isolated). A worker process (``--worker CASE``) runs its one
    case, prints the result and exits here. ``fields(case)`` are the keys a case's row needs
    even when its subprocess died."""
    if args.worker:  # one case in this (fresh) process
        bench = make_bench(args)
        print(bench.describe(), file=sys.stderr)
        measure.emit(dict(bench.run(args.worker), setup=bench.describe()))
        sys.exit(0)
    device = models.pick_device(args.device, args.threads)
    isolated = models.use_subprocesses(args, device)
    results = []
    if isolated:
        for case in cases:
            print(f"running {case} ...", file=sys.stderr, flush=True)
            results.append(dict(measure.run_in_subprocess(script, measure.worker_argv(argv), case), **fields(case)))
        setups = [r["setup"] for r in results if r.get("setup")]
        header = (setups[0] if setups else models.describe_setup(args, device, models.pick_dtype(args))) + \
            "\n(each case in a fresh subprocess)"
    else:
        bench = make_bench(args)
        header = bench.describe()
        for case in cases:
            print(f"running {case} ...", file=sys.stderr, flush=True)
            results.append(bench.run(case))
        del bench
    return results, header, device, isolated

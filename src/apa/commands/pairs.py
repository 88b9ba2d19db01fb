"""`apa pairs`: write the simulated preference pairs of one epoch, for inspection.

Example::

    apa pairs --manifest data/train.jsonl --task multi --out pairs.jsonl --seed 0 --epoch 0

Writes one JSON line per utterance (id, chosen, rejected, target, delta, changed), the
fitted slopes next to it (``pairs.slopes.json``), and prints the slopes.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from apa.tasks import TASKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="utterances to build pairs for (JSONL manifest)")
    parser.add_argument("--task", required=True, choices=list(TASKS), help="task whose response format is used")
    parser.add_argument("--out", required=True, help="output JSONL, one pair per utterance")
    parser.add_argument("--train", default=None,
                        help="manifest the consistency slopes are fitted on (default: --manifest)")
    parser.add_argument("--slopes", default=None,
                        help="read slopes from this JSON (as saved by a run or by this command) "
                             "instead of fitting them")
    parser.add_argument("--slopes-out", default=None,
                        help="where to save the slopes (default: OUT with suffix .slopes.json)")
    parser.add_argument("--seed", type=int, default=0, help="pair seed (default 0)")
    parser.add_argument("--epoch", type=int, default=0, help="epoch whose pairs to draw (default 0)")


def run(args: argparse.Namespace) -> int:
    from apa.data.manifest import read_manifest
    from apa.files import atomic_write_lines
    from apa.training.pairs import make_pairs
    from apa.training.slopes import Slopes, fit_slopes

    utterances = read_manifest(args.manifest)
    if args.slopes:
        slopes = Slopes.load(args.slopes)
        source = f"read from {args.slopes}"
    else:
        train = utterances if args.train is None else read_manifest(args.train)
        slopes = fit_slopes(train)
        source = f"fitted on {args.train or args.manifest} ({len(train)} utterances)"
    print(f"slopes {source}:")
    for line in slopes.describe():
        print(f"  {line}")

    pairs = make_pairs(utterances, args.task, slopes, seed=args.seed, epoch=args.epoch)

    out = Path(args.out)
    slopes_out = Path(args.slopes_out) if args.slopes_out else out.with_suffix(".slopes.json")
    atomic_write_lines(out, (json.dumps(pair.to_dict(), ensure_ascii=False) for pair in pairs))
    slopes.save(slopes_out)

    fields = Counter(f"{p.target.level} {p.target.aspect}" for p in pairs)
    propagated = sum(len(p.changed) > 1 for p in pairs)
    print(f"wrote {len(pairs)} pairs (task {args.task}, seed {args.seed}, epoch {args.epoch}) to {out}; "
          f"slopes to {slopes_out}")
    print("targets: " + ", ".join(f"{k} {v}" for k, v in sorted(fields.items())))
    print(f"pairs with propagated changes: {propagated}")
    return 0

"""`apa evaluate`: PCC/SCC/Kendall/RMSE of predictions against a reference manifest.

Writes OUT/metrics.json, OUT/metrics.md (the paper's table layout, our row beside the
published ones) and OUT/plots/*.png, and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from apa.errors import ApaError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, type=Path,
                        help='predictions JSONL: {"id", "output"} per line, optionally "scores", "expected"')
    parser.add_argument("--ref", required=True, type=Path, help="reference manifest (e.g. the test split)")
    parser.add_argument("--task", required=True, help="task the predictions were made for (e.g. multi)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--train", type=Path, default=None,
                        help="training manifest whose per-field means fill missing predictions "
                             "(default: the sibling *_train.jsonl of --ref if present, else the "
                             "reference's own means)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples (over utterances) for the 95%% intervals; 0 turns them off")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the plot jitter")
    parser.add_argument("--no-plots", action="store_true", help="skip the scatter plots")


def sibling_train_manifest(ref: Path) -> Path | None:
    """`X_test.jsonl` (or `test.jsonl`, `X-test.jsonl`) -> the same name with `train`, if it exists."""
    match = re.fullmatch(r"(.*(?:^|[_-]))test(\.jsonl)", ref.name)
    if not match:
        return None
    candidate = ref.with_name(f"{match.group(1)}train{match.group(2)}")
    return candidate if candidate.is_file() else None


def run(args: argparse.Namespace) -> int:
    from apa.data.manifest import read_manifest
    from apa.evaluation.evaluate import FILL_FROM_REFERENCE, metrics_from_matched
    from apa.evaluation.markdown import render_markdown
    from apa.evaluation.match import match_predictions, train_means_from
    from apa.evaluation.metrics import json_safe
    from apa.evaluation.plots import write_plots
    from apa.files import atomic_write_text
    from apa.predictions import read_predictions
    from apa.tasks import get_task

    task = get_task(args.task)
    if args.bootstrap < 0:
        raise ApaError(f"--bootstrap {args.bootstrap}: give 0 (no intervals) or a positive number of resamples")
    references = read_manifest(args.ref)
    predictions = read_predictions(args.pred)

    train_path = args.train if args.train is not None else sibling_train_manifest(args.ref)
    train_means = train_means_from(read_manifest(train_path), task) if train_path is not None else None

    matched = match_predictions(predictions, references, task)
    result = metrics_from_matched(matched, train_means, n_bootstrap=args.bootstrap, seed=args.seed)
    if train_path is not None:
        result["fill"] = f"training-set mean ({train_path})"
    result["inputs"] = {"pred": str(args.pred), "ref": str(args.ref),
                        "train": None if train_path is None else str(train_path)}

    markdown = render_markdown(result, task)
    atomic_write_text(args.out / "metrics.json", json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n")
    atomic_write_text(args.out / "metrics.md", markdown)
    if not args.no_plots:
        try:
            write_plots(matched, result, args.out / "plots", seed=args.seed)
        except OSError as e:
            raise ApaError(f"cannot write plots to {args.out / 'plots'}: {e.strerror}; choose another --out, "
                           "free disk space, or pass --no-plots") from e

    print(markdown)
    parse = result["parse"]
    if train_path is None:
        print(f"warning: no training manifest given (--train) or found beside {args.ref}; missing predictions "
              f"are filled with the {FILL_FROM_REFERENCE.split(' (')[0]}, which flatters the headline numbers",
              file=sys.stderr)
    if parse["unknown_ids"]:
        print(f"warning: {parse['unknown_ids']} prediction ids are not in {args.ref} and were ignored "
              f"(e.g. {', '.join(parse['unknown_id_examples'][:3])})", file=sys.stderr)
    if parse["missing"]:
        print(f"warning: {parse['missing']} of {parse['references']} reference utterances have no prediction "
              f"in {args.pred}; they count against coverage", file=sys.stderr)
    print(f"wrote {args.out / 'metrics.json'}, {args.out / 'metrics.md'}"
          + ("" if args.no_plots else f" and plots in {args.out / 'plots'}"), file=sys.stderr)
    return 0

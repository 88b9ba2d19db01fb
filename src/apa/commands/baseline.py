"""`apa baseline gop --train MANIFEST --test MANIFEST --task TASK --out DIR`: the GOP baseline
(apa.baselines.gop), fitted on the training manifest's evidence, predicting the test manifest.

Writes DIR/pred.jsonl (read by `apa evaluate` like any model's predictions), DIR/config.yaml
(what was fitted: `apa report` names the row from it) and DIR/baseline.json (items per field)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from apa.evidence.extract import default_jobs

    from apa.baselines.gop import REGRESSORS
    from apa.tasks import TASKS

    parser.add_argument("kind", choices=["gop"], help="which baseline: gop (pretrained acoustic model's evidence)")
    parser.add_argument("--train", required=True, metavar="MANIFEST", help="manifest the regression is fitted on")
    parser.add_argument("--test", required=True, metavar="MANIFEST", help="manifest to predict")
    parser.add_argument("--task", required=True, choices=list(TASKS), help="which scores to predict")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (pred.jsonl, config.yaml)")
    parser.add_argument("--regressor", default="linear", choices=list(REGRESSORS),
                        help="linear: ridge regression (default); boosting: gradient-boosted trees")
    parser.add_argument("--jobs", type=int, default=default_jobs(), metavar="N",
                        help="worker processes for evidence not computed yet (apa evidence --jobs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the boosting regressor")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    import yaml

    from apa.baselines.gop import GopBaseline
    from apa.data.manifest import read_manifest
    from apa.evidence.extract import with_evidence
    from apa.files import atomic_write_lines, atomic_write_text
    from apa.tasks import get_task

    task = get_task(args.task)
    started = time.perf_counter()
    train = with_evidence(read_manifest(args.train), args.train, jobs=args.jobs, progress=not args.no_progress)
    test = with_evidence(read_manifest(args.test), args.test, jobs=args.jobs, progress=not args.no_progress)
    baseline = GopBaseline.fit(train, task, regressor=args.regressor, seed=args.seed)
    out = Path(args.out)
    records = [baseline.predict(utt) for utt in test]
    atomic_write_lines(out / "pred.jsonl", (json.dumps(r) for r in records))
    atomic_write_text(out / "config.yaml", yaml.safe_dump(
        {"method": "gop-baseline", "task": task.name, "regressor": args.regressor, "seed": args.seed,
         "train": [{"path": str(args.train), "weight": 1.0}], "test": str(args.test)}, sort_keys=False))
    atomic_write_text(out / "baseline.json", json.dumps(
        {"baseline": "gop", "regressor": args.regressor, "task": task.name, "train_items": baseline.train_items,
         "test_utterances": len(test), "seconds": round(time.perf_counter() - started, 1)}, indent=2))
    print(f"wrote {out / 'pred.jsonl'} ({len(records)} utterances); evaluate it with\n"
          f"  apa evaluate --pred {out / 'pred.jsonl'} --ref {args.test} --task {task.name} --out {out / 'eval'}",
          file=sys.stderr)
    return 0

"""`apa demo`: the whole pipeline offline on CPU in about a minute, through the public commands.

tiny random Qwen2-Audio -> scored clips (generated tones, or real speechocean762 clips with
--so762) -> LoRA SFT -> constrained prediction with expected scores -> evaluation table.
A random tiny model learns next to nothing: the demo shows that every part runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="working folder (default runs/demo)")
    parser.add_argument("--so762", metavar="DIR", help="use real clips from a speechocean762 copy "
                        "(official layout, e.g. ../shared/so762) instead of generated ones")
    parser.add_argument("--task", default="multi", help="task of the task table (default multi)")
    parser.add_argument("--train-clips", type=int, default=16, help="training clips (default 16)")
    parser.add_argument("--test-clips", type=int, default=8, help="test clips (default 8)")
    parser.add_argument("--epochs", type=float, default=3.0, help="training epochs (default 3)")


def _data(args: argparse.Namespace, data_dir: Path) -> tuple[Path, Path]:
    if not args.so762:
        from apa.data.synthetic import make_synthetic_corpus

        return make_synthetic_corpus(data_dir, args.train_clips, args.test_clips)
    from apa.data.manifest import write_manifest
    from apa.data.so762 import read_so762

    splits = read_so762(args.so762, out_dir=data_dir)
    paths = []
    for split, n in (("train", args.train_clips), ("test", args.test_clips)):
        path = data_dir / f"{split}.jsonl"
        write_manifest(path, splits[split][:n])
        paths.append(path)
    return paths[0], paths[1]


def run(args: argparse.Namespace) -> int:
    from apa.cli import main

    out = Path(args.out)
    started = time.perf_counter()

    def step(title: str, argv: list[str]) -> None:
        print(f"\n== {title}: apa {' '.join(argv)}", file=sys.stderr)
        code = main(argv)
        if code:
            raise SystemExit(code)

    step("tiny model", ["tiny-model", str(out / "tiny-model")])
    train, test = _data(args, out / "data")
    print(f"\n== data: {train} and {test}", file=sys.stderr)
    run_dir = out / "train"
    step("train (LoRA SFT)", ["train", "--no-progress", f"model={out / 'tiny-model'}", f"train={train}",
                              f"output_dir={run_dir}", f"task={args.task}", f"epochs={args.epochs}",
                              "batch_size=2", "grad_accum=2", "lr=2e-3", "save_every=0",
                              *(["--resume"] if (run_dir / "checkpoints").exists() else [])])
    pred = run_dir / "pred.jsonl"
    pred.unlink(missing_ok=True)
    step("predict (constrained + expected scores)",
         ["predict", "--model", str(out / "tiny-model"), "--adapter", str(run_dir / "adapter"), "--data", str(test),
          "--task", args.task, "--out", str(pred), "--decoding", "constrained", "--no-progress"])
    step("evaluate", ["evaluate", "--pred", str(pred), "--ref", str(test), "--train", str(train),
                      "--task", args.task, "--out", str(run_dir / "eval"), "--bootstrap", "200"])
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; everything is under {out}", file=sys.stderr)
    return 0

"""`apa tiny-model OUT_DIR`: write a tiny random Qwen2-Audio with its processor, offline."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write the model and processor to")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")


def run(args: argparse.Namespace) -> int:
    from apa.errors import ApaError
    from apa.modeling import build_tiny_model

    try:
        out = build_tiny_model(args.out_dir, seed=args.seed)
    except OSError as e:
        raise ApaError(f"cannot write the tiny model to {args.out_dir}: {e.strerror or e}; "
                       "choose another OUT_DIR") from None
    print(f"wrote a tiny random Qwen2-Audio to {out}; use it with --model {out}")
    return 0

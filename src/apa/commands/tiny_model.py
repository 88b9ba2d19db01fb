"""`apa tiny-model OUT_DIR [--backbone NAME] [--size tiny|small|base] [--window SECONDS]`: a
random model of any backbone with its processor, built offline.

It mirrors the real checkpoint (its config with the sizes shrunk, its chat template, special
tokens and pre-tokenizer; a small BPE vocabulary). ``tiny`` (default) is for tests and the
demo; ``small`` and ``base`` are for training from scratch (the real-data proof), usually with
a window shorter than the real model's (speechocean762 clips are under 21 s, 99% under 11 s),
which makes every encoder pass proportionally cheaper.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from apa.backbones import BACKBONES, DEFAULT_BACKBONE
    from apa.backbones.tiny import SIZES

    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write the model and processor to")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=list(BACKBONES),
                        help=f"model family (default {DEFAULT_BACKBONE})")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    parser.add_argument("--size", default="tiny", choices=list(SIZES),
                        help="tiny (a few hundred thousand parameters: tests and demo), small (CPU training from "
                             "scratch), base (GPU); default tiny")
    parser.add_argument("--window", type=int, default=None, metavar="SECONDS",
                        help="audio window in whole seconds (default: the real model's); longer clips are cut to "
                             "it (backbones that hear any length have no window)")


def run(args: argparse.Namespace) -> int:
    from apa.backbones import backbone_class
    from apa.errors import ApaError

    backbone = backbone_class(args.backbone)
    try:
        out = backbone.build_tiny(args.out_dir, seed=args.seed, size=args.size, window_seconds=args.window)
    except OSError as e:
        raise ApaError(f"cannot write the tiny model to {args.out_dir}: {e.strerror or e}; "
                       "choose another OUT_DIR") from None
    window = f", {args.window} s audio window" if args.window else ""
    print(f"wrote a random {args.size} {backbone.name} ({parameter_count(out) / 1e6:.2f}M parameters{window}) to "
          f"{out}; use it with --model {out}")
    return 0


def parameter_count(model_dir) -> int:
    """Parameters stored in a saved model folder (read from the safetensors headers only)."""
    import math
    from pathlib import Path

    from safetensors import safe_open

    total = 0
    for path in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            total += sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    return total

"""`apa tiny-model OUT_DIR [--size tiny|small|base] [--window SECONDS]`: a random Qwen2-Audio
with its processor, built offline.

``tiny`` (default) is for tests and the demo; ``small`` (1.0M parameters, trainable from
scratch on a CPU) and ``base`` (38M, for a GPU) are for training from scratch, usually with a
window shorter than the real model's 30 s (speechocean762 clips are under 21 s, 99% under
11 s), which makes every encoder pass proportionally cheaper.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from apa.modeling import FULL_WINDOW_SECONDS
    from apa.tiny_model import TINY_SIZES

    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write the model and processor to")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    parser.add_argument("--size", default="tiny", choices=list(TINY_SIZES),
                        help="tiny (0.22M parameters, tests and demo), small (1.0M, CPU training from "
                             "scratch), base (38M, GPU); default tiny")
    parser.add_argument("--window", type=int, default=FULL_WINDOW_SECONDS, metavar="SECONDS",
                        help=f"audio window in whole seconds, 1-{FULL_WINDOW_SECONDS} (default "
                             f"{FULL_WINDOW_SECONDS}, as the real model); longer clips are cut to it")


def run(args: argparse.Namespace) -> int:
    from apa.errors import ApaError
    from apa.tiny_model import build_tiny_model

    try:
        out = build_tiny_model(args.out_dir, seed=args.seed, size=args.size, window_seconds=args.window)
    except OSError as e:
        raise ApaError(f"cannot write the tiny model to {args.out_dir}: {e.strerror or e}; "
                       "choose another OUT_DIR") from None
    print(f"wrote a random {args.size} Qwen2-Audio ({parameter_count(out) / 1e6:.2f}M parameters, "
          f"{args.window} s audio window) to {out}; use it with --model {out}")
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

"""`apa proxy --config configs/proxy/cpu.yaml [key=value ...]`: the real-data proof.

Prepares speechocean762, builds a small random Qwen2-Audio, and for the real audio, a
swapped-audio control and a silence control runs `apa train`, `apa predict` (constrained and
expected-score decoding) and `apa evaluate`; adds a constant train-mean predictor and the
experts' agreement, and writes OUT/results.md (see apa.experiments.proxy and
docs/real-data-proof.md). Finished steps are skipped, so an interrupted run continues.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of experiment settings (configs/proxy/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="settings that win over the YAML file, e.g. out=runs/p2 limit_test=100 "
                             "train.epochs=2")
    parser.add_argument("--root", default=None, help="speechocean762 folder (same as corpus=DIR)")
    parser.add_argument("--out", default=None, help="output folder (same as out=DIR)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="only the first N training and N test utterances (a quick end-to-end check)")
    parser.add_argument("--help-config", action="store_true", help="list every setting with its help")


def run(args: argparse.Namespace) -> int:
    from apa.experiments.proxy.config import load_proxy_config, proxy_config_help
    from apa.experiments.proxy.experiment import run_experiment

    if args.help_config:
        print(proxy_config_help())
        return 0
    overrides = list(args.overrides)
    if args.root is not None:
        overrides.append(f"corpus={args.root}")
    if args.out is not None:
        overrides.append(f"out={args.out}")
    if args.limit is not None:
        overrides += [f"limit_train={args.limit}", f"limit_test={args.limit}"]
    config = load_proxy_config(args.config, overrides)
    results = run_experiment(config)
    for kind, criterion in results["criterion"].items():
        print(f"criterion ({kind} scores): {'met' if criterion['met'] else 'NOT met'}")
    return 0

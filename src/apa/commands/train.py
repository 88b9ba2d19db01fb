"""`apa train --config FILE.yaml [key=value ...] [--resume]`: LoRA fine-tuning (SFT, SimPO, DPO)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of training settings (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="settings that win over the YAML file, e.g. lr=2e-4 epochs=1")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint in output_dir (same weights, data "
                             "position, optimizer and scheduler)")
    parser.add_argument("--help-config", action="store_true", help="list every setting with its help")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs still written)")


def run(args: argparse.Namespace) -> int:
    from apa.training.config import load_train_config, train_config_help

    if args.help_config:
        print(train_config_help())
        return 0
    config = load_train_config(args.config, args.overrides)
    from apa.training.loop import train

    train(config, resume=args.resume, progress=not args.no_progress)
    return 0

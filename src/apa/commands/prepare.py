"""`apa prepare so762 --root DIR --out DIR` (or `--hub`): corpus -> checked, deterministic manifests.

Writes OUT/so762_train.jsonl and OUT/so762_test.jsonl only when the whole corpus is clean;
otherwise exits 2 listing every problem (file, line or utterance, field, fix).
"""

from __future__ import annotations

import argparse
import time

CORPORA = ("so762",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", choices=CORPORA,
                        help="corpus to prepare (so762: speechocean762)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--root", metavar="DIR",
                        help="local copy in the official layout: DIR/train, DIR/test (Kaldi files), "
                             "DIR/resource/scores.json, audio where wav.scp says")
    source.add_argument("--hub", nargs="?", const="mispeech/speechocean762", metavar="NAME",
                        help="read the Hugging Face copy (default mispeech/speechocean762) with the "
                             "`datasets` library (pip install 'apa[hub]'); clips are written as "
                             "16 kHz FLAC under OUT/audio/")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for so762_train.jsonl and so762_test.jsonl (audio paths in them "
                             "are relative to it)")
    parser.add_argument("--no-audio-check", action="store_true",
                        help="with --root: do not open the clips (faster; durations are left empty)")


def run(args: argparse.Namespace) -> int:
    from apa.data import so762, so762_hub

    start = time.perf_counter()
    if args.hub:
        so762_hub.prepare_so762_hub(args.out, name=args.hub)
    else:
        so762.prepare_so762(args.root, args.out, check_audio=not args.no_audio_check)
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0

"""`apa evidence MANIFEST [--out FILE] [--jobs N]`: a pretrained acoustic model's alignment and
Goodness of Pronunciation for every utterance (apa.evidence), written beside the manifest."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from apa.evidence.extract import default_jobs

    parser.add_argument("manifest", metavar="MANIFEST", help="manifest (JSONL) whose utterances get evidence")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="evidence file (default: MANIFEST's name with .evidence.jsonl, beside it); ids "
                             "already in it are skipped (resume)")
    parser.add_argument("--jobs", type=int, default=default_jobs(), metavar="N",
                        help="worker processes (default: the CPU count, at most 8)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N utterances")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import time

    from apa.data.manifest import read_manifest
    from apa.errors import ApaError
    from apa.evidence.extract import extract_manifest
    from apa.evidence.store import evidence_path

    if args.limit is not None and args.limit < 1:
        raise ApaError(f"--limit must be at least 1, got {args.limit}")
    utts = read_manifest(args.manifest)[:args.limit]
    out = args.out or evidence_path(args.manifest)
    started = time.perf_counter()
    summary = extract_manifest(utts, out, args.manifest, jobs=args.jobs, progress=not args.no_progress)
    wall = time.perf_counter() - started
    print(f"wrote {out}: {summary.total} utterances ({summary.new} new, {summary.total - summary.new} already "
          f"there); {summary.failed_alignments} without a phone alignment (scored without per-phone evidence), "
          f"{summary.problems} unusable clips", file=sys.stderr)
    if summary.new and summary.audio_seconds:
        print(f"{summary.audio_seconds:.0f} s of audio in {wall:.1f} s wall, "
              f"{summary.cpu_seconds / summary.audio_seconds:.3f} CPU-seconds per second of audio", file=sys.stderr)
    return 0

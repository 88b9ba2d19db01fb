"""`apa validate MANIFEST... [--check-audio]`: summary of a manifest, or every problem in it.

Any JSONL manifest that passes is a usable corpus (SO762 or custom; a custom one may carry
only sentence and word scores, with ``phone_scores`` null). On problems it prints one line
each, ``FILE:LINE: field: message``, on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifests", nargs="+", metavar="MANIFEST", help="manifest JSONL file(s)")
    parser.add_argument("--check-audio", action="store_true",
                        help="also open every audio file (and measure durations the manifest lacks)")


def summary_lines(path: str, utterances: list, check_audio: bool = False) -> list[str]:
    """Human-readable summary of validated utterances (apa.data.manifest.Utterance)."""
    from apa.targets import has_scores
    from apa.data.manifest import ASPECTS
    from apa.tasks import TASKS

    n = len(utterances)
    words = [w for u in utterances for w in u.words]
    n_phones = sum(len(w.phones) for w in words)
    speakers = {u.speaker for u in utterances if u.speaker is not None}
    lines = [f"{path}: {n:,} utterances, {len(speakers):,} speakers, {len(words):,} words, {n_phones:,} phones"]

    def present(values: list) -> str:
        have = sum(v is not None for v in values)
        return "all" if have == len(values) else f"{have:,}/{len(values):,}"

    fields = []
    for aspect in ASPECTS["sentence"]:
        values = [u.scores.get(aspect) for u in utterances]
        if any(v is not None for v in values):
            fields.append(f"sentence {aspect} ({present(values)})")
    for aspect in ASPECTS["word"]:
        values = [w.scores.get(aspect) for w in words]
        if any(v is not None for v in values):
            fields.append(f"word {aspect} ({present(values)})")
    phone_values = [s for w in words for s in (w.phone_scores or [None] * len(w.phones))]
    if any(v is not None for v in phone_values):
        fields.append(f"phone accuracy ({present(phone_values)})")
    lines.append("  score fields: " + (", ".join(fields) if fields else "none (usable for prediction only)"))

    usable = [name for name, task in TASKS.items() if all(has_scores(u, task) for u in utterances)]
    lines.append("  trainable tasks (every field labelled): " + (", ".join(usable) if usable else "none"))

    durations = [u.duration for u in utterances]
    if check_audio and any(d is None for d in durations):
        from apa.data.audio import audio_info

        durations = [d if d is not None else audio_info(u.audio_path)[0] for u, d in zip(utterances, durations)]
    known = [d for d in durations if d is not None]
    if known:
        total = sum(known)
        lines.append(f"  durations: {len(known):,} clips, {total / 3600:.2f} h, mean {total / len(known):.2f} s, "
                     f"max {max(known):.2f} s" + ("" if len(known) == n else f" ({n - len(known):,} without duration)"))
    else:
        lines.append("  durations: not in the manifest (run with --check-audio to measure)")
    if check_audio:
        lines.append("  audio: every file opens")
    return lines


def run(args: argparse.Namespace) -> int:
    from apa.data.manifest import ManifestProblems, read_manifest
    from apa.errors import ApaError

    problems: list[str] = []
    for path in args.manifests:
        try:
            utterances = read_manifest(path, check_audio=args.check_audio)
        except ManifestProblems as e:
            problems += e.problems
            continue
        except ApaError as e:
            problems.append(str(e))
            continue
        for line in summary_lines(str(Path(path)), utterances, args.check_audio):
            print(line)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        raise ApaError(f"{len(problems)} problem(s) in {', '.join(args.manifests)} (listed above); "
                       "fix them and run `apa validate` again")
    return 0

"""`apa score --audio FILE --text "..."`: score one recording against the text that was read.

Prints the JSON result of apa.inference.score (sentence, word and phone scores, what to
practise), the same schema as ``POST /score`` of ``apa serve``. The inputs (audio file:
missing, unreadable, empty, silent, too long; words not in the dictionary) are checked
before the model is loaded, so a bad input costs a second, not a model load.
"""

from __future__ import annotations

import argparse


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options that `apa score` and `apa serve` share: lexicon, practice threshold, dtype, device."""
    from apa.inference.score import PRACTICE_THRESHOLD

    parser.add_argument("--lexicon", default=None, metavar="FILE",
                        help="extra pronunciations, WORD PHONE PHONE ... per line, used before CMUdict "
                             "(for an SO762-trained model: speechocean762's resource/lexicon.txt)")
    parser.add_argument("--threshold", type=float, default=PRACTICE_THRESHOLD,
                        help=f"accuracy below which words and phones are listed to practise "
                             f"(default {PRACTICE_THRESHOLD:g})")
    parser.add_argument("--dtype", default="auto", help="auto, bf16, fp16 or fp32")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from apa.inference.score import DEFAULT_DECODING, DEFAULT_TASK
    from apa.backbones import default_model
    from apa.tasks import TASKS

    parser.add_argument("--model", default=default_model(),
                        help=f"base model: a directory or hub id (default {default_model()})")
    parser.add_argument("--adapter", default=None, help="LoRA adapter directory saved by `apa train`")
    parser.add_argument("--audio", required=True, metavar="FILE",
                        help="the recording: WAV, FLAC, OGG or MP3, any sample rate, mono or stereo, at most the model's audio window (30 s for Qwen2-Audio)")
    parser.add_argument("--text", required=True, help="the sentence that was read (numbers spelt out as words)")
    parser.add_argument("--task", default=DEFAULT_TASK, choices=list(TASKS),
                        help=f"which scores (default {DEFAULT_TASK}: sentence, word and phone)")
    parser.add_argument("--decoding", default=DEFAULT_DECODING, choices=["constrained", "free"],
                        help="constrained (default): every score valid, with expected scores; "
                             "free: plain greedy text")
    add_model_options(parser)
    parser.add_argument("--compact", action="store_true", help="one-line JSON instead of indented")


def _check_file(path: str) -> None:
    from pathlib import Path

    from apa.errors import ApaError

    file = Path(path)
    if not file.is_file():
        raise ApaError(f"audio file {path} does not exist; check the --audio path")
    if file.stat().st_size == 0:
        raise ApaError(f"audio file {path} is empty (0 bytes); record the utterance again")


def run(args: argparse.Namespace) -> int:
    import json

    from apa.data.audio import load_audio
    from apa.data.lexicon import read_lexicon
    from apa.inference.decoding import resolve_decoding
    from apa.inference.score import score_recordings, text_to_utterance
    from apa.backbones.loading import load_model_and_processor

    decoding = resolve_decoding(args.decoding)
    lexicon = read_lexicon(args.lexicon) if args.lexicon else None
    text_to_utterance(args.text, lexicon)  # unknown words: fail before loading the model
    _check_file(args.audio)
    audio = load_audio(args.audio)  # unreadable, no samples, silent (too long: once the model's window is known)
    model, processor = load_model_and_processor(args.model, adapter=args.adapter, dtype=args.dtype,
                                                device=args.device)
    result = score_recordings(model, processor, [(audio, args.text)], task=args.task, decoding=decoding,
                              lexicon=lexicon, threshold=args.threshold)[0]
    print(json.dumps(result, ensure_ascii=False, indent=None if args.compact else 2))
    return 0

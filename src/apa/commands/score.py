"""`apa score --audio FILE --text "..."`: score one recording against the text that was read.

Prints the JSON result of apa.inference.score (sentence, word and phone scores, what to
practise), the same schema as ``POST /score`` of ``apa serve``; strictly valid JSON (a
score that is not a finite number is null). The text may come from ``--text``, from
standard input (``--text -``) or from a file (``--text-file``). The inputs (audio file:
missing, a folder, unreadable, undecodable, empty, silent, too short, over the service's
caps; words no lexicon knows; the device) are checked before the model is loaded, and
before torch is imported, so a bad input costs a second and tens of MB, not a model load.
The upload is decoded with the service's bounds (apa.data.decode): sample rate and channels
from the header, and never more than ``LONGEST_WINDOW_SECONDS`` (300 s, the longest window
of any backbone) of samples; the model's own limit, as the service applies it (30 s for
Qwen2-Audio, 300 s for Qwen2.5-Omni, 60 s for Phi-4-multimodal and Granite-Speech, which
have no window), is checked once the model is loaded.
"""

from __future__ import annotations

import argparse


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options that `apa score` and `apa serve` share: lexicon, practice threshold, dtype, device, engine."""
    from apa.inference.score import PRACTICE_THRESHOLD

    parser.add_argument("--lexicon", default=None, metavar="FILE",
                        help="pronunciations, WORD PHONE PHONE ... per line, used before CMUdict (default: "
                             "the lexicon.txt saved with the adapter or model by `apa train`, if any)")
    parser.add_argument("--no-guess", action="store_true",
                        help="refuse words no lexicon knows instead of guessing their phones with eSpeak NG")
    parser.add_argument("--threshold", type=float, default=PRACTICE_THRESHOLD,
                        help=f"accuracy below which words and phones are listed to practise "
                             f"(default {PRACTICE_THRESHOLD:g})")
    parser.add_argument("--dtype", default="auto", help="auto, bf16, fp16 or fp32")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    from apa.commands.engine import add_engine_arguments

    add_engine_arguments(parser)


def model_lexicon(args: argparse.Namespace) -> dict[str, list[str]] | None:
    """``--lexicon``, else the training lexicon saved in ``--adapter`` or a ``--model``
    folder (apa.data.lexicon.model_lexicon_path), else None (CMUdict only)."""
    import sys

    from apa.data.lexicon import model_lexicon_path, read_lexicon

    if args.lexicon:
        return read_lexicon(args.lexicon)
    path = model_lexicon_path(args.adapter, args.model)
    if path is None:
        return None
    print(f"pronunciations from {path} (the model's training lexicon), then CMUdict", file=sys.stderr)
    return read_lexicon(path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from apa.inference.score import DEFAULT_DECODING, DEFAULT_TASK
    from apa.backbones import default_model
    from apa.tasks import TASKS

    parser.add_argument("--model", default=default_model(),
                        help=f"base model: a directory or hub id (default {default_model()})")
    parser.add_argument("--adapter", default=None, help="LoRA adapter directory saved by `apa train`")
    parser.add_argument("--audio", required=True, metavar="FILE",
                        help="the recording: WAV, FLAC, Ogg/Opus, MP3, WebM/Opus or MP4/AAC, 8-192 kHz, 1-8 "
                             "channels, at most the model's audio window (30 s for Qwen2-Audio, 300 s for "
                             "Qwen2.5-Omni, 60 s for Phi-4-multimodal and Granite-Speech)")
    text = parser.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", help="the sentence that was read, as typed (numbers and punctuation are fine); "
                                     "- reads it from standard input")
    text.add_argument("--text-file", metavar="FILE", help="read the sentence from this UTF-8 file")
    parser.add_argument("--task", default=DEFAULT_TASK, choices=list(TASKS),
                        help=f"which scores (default {DEFAULT_TASK}: sentence, word and phone)")
    parser.add_argument("--decoding", default=DEFAULT_DECODING, choices=["constrained", "constrained-sequential", "free"],
                        help="constrained (default): every score valid, with expected scores, in a handful of "
                             "parallel passes; constrained-sequential: the same, slot by slot; free: plain greedy text")
    add_model_options(parser)
    parser.add_argument("--compact", action="store_true", help="one-line JSON instead of indented")


def read_text(args: argparse.Namespace) -> str:
    import sys
    from pathlib import Path

    from apa.errors import ApaError

    if args.text_file is None:
        return sys.stdin.read() if args.text == "-" else args.text
    path = Path(args.text_file)
    if not path.is_file():
        raise ApaError(f"text file {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ApaError(f"text file {path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as e:
        raise ApaError(f"cannot read text file {path}: {e.strerror}") from None


def run(args: argparse.Namespace) -> int:
    import json

    from apa.data.audio import LONGEST_WINDOW_SECONDS, check_clip, decode_clip

    text = read_text(args)
    # The bounded decode first, with only numpy and the decoders imported: a hostile file is
    # refused before torch (hundreds of MB) is even imported.
    clip = decode_clip(args.audio, f"audio {args.audio}", LONGEST_WINDOW_SECONDS)

    from apa.distributed import resolve_device
    from apa.inference.decoding import resolve_decoding
    from apa.commands.engine import load_for_inference
    from apa.inference.score import clip_limit, prepare_recording, score_prepared

    decoding = resolve_decoding(args.decoding)
    device = resolve_device(args.device)
    lexicon = model_lexicon(args)
    recording = prepare_recording(clip.samples, text, lexicon, name=args.audio, guess=not args.no_guess)
    recording.notes = clip.notes
    model, processor = load_for_inference(args, device)
    check_clip(recording.audio, args.audio, clip_limit(processor))
    result = score_prepared(model, processor, [recording], args.task, decoding, args.threshold)[0]
    print(json.dumps(result, ensure_ascii=False, allow_nan=False, indent=None if args.compact else 2), flush=True)
    return 0

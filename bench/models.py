"""Benchmark models and the command-line options every benchmark shares.

``--backbone NAME`` picks the model family (apa.backbones; default qwen2-audio). ``--shape``:
``tiny`` / ``small`` / ``base`` are the family's tiny models (float32); ``real`` has the real
checkpoint's dimensions (Qwen2-Audio-7B: a Whisper-large-v3-style encoder, 32 layers, d_model
1280; a 7B text model, hidden 4096, 32 layers, vocabulary 156032; 8.4B parameters) and RANDOM
weights, built directly on the device in bf16 (no CPU copy, no checkpoint: an H100
initialises it in seconds). Random weights cost exactly the arithmetic of real ones. Every
shape uses the tiny model's processor (the family's real feature extractor and the tiny BPE
tokenizer, whose ids all lie inside the real vocabulary).
"""

from __future__ import annotations

import argparse
import os
import sys

from inputs import DEFAULT_AUDIO_SECONDS, DEFAULT_PROMPT_TOKENS, DEFAULT_TARGET_TOKENS

SHAPES = ("tiny", "small", "base", "real")


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    from apa.backbones import BACKBONES, DEFAULT_BACKBONE

    parser.add_argument("--backbone", choices=list(BACKBONES), default=DEFAULT_BACKBONE,
                        help=f"model family (default {DEFAULT_BACKBONE})")
    parser.add_argument("--shape", choices=SHAPES, default="tiny",
                        help="model shape: tiny/small/base random test models (float32), or real: the real "
                             "checkpoint's dimensions with random weights (bf16; meant for a GPU)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtype", default=None, choices=("bfloat16", "float16", "float32"),
                        help="default: bfloat16 for real, float32 for the test shapes")
    parser.add_argument("--layers", type=int, default=None,
                        help="real only: build this many text and audio layers (a quick check that the path "
                             "works, or the per-call cost of the real widths on a CPU)")
    parser.add_argument("--audio-seconds", type=float, default=DEFAULT_AUDIO_SECONDS,
                        help="clip length; 25 audio tokens per second (default %(default)s)")
    parser.add_argument("--prompt-tokens", type=int, default=DEFAULT_PROMPT_TOKENS,
                        help="text tokens of the prompt, special tokens included, audio tokens not "
                             "(default %(default)s: SO762 test mean for `multi`, see bench/inputs.py)")
    parser.add_argument("--target-tokens", type=int, default=DEFAULT_TARGET_TOKENS,
                        help="tokens of the response, end-of-turn included (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--isolate", choices=("auto", "always", "never"), default="auto",
                        help="run each case in a fresh subprocess (auto: on CPU, where peak memory is the "
                             "process's resident set; on a GPU all cases share one model)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU only: torch threads (default 1; 0: torch's default). On a small machine "
                             "shared with other jobs, two threads made a tiny-model step 40x slower than "
                             "one (OpenMP threads waiting for a busy core)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)


def check_common_arguments(parser: argparse.ArgumentParser, args) -> None:
    if args.layers is not None and (args.shape != "real" or args.layers < 1):
        parser.error("--layers needs --shape real and a positive number")
    if args.threads < 0:
        parser.error("--threads must be 0 (torch's default) or more")
    if not 0.1 <= args.audio_seconds <= 30:
        parser.error("--audio-seconds must lie in 0.1-30 (the encoder's window is 30 s)")
    if args.prompt_tokens < 32 or args.target_tokens < 2:
        parser.error("--prompt-tokens must be at least 32 and --target-tokens at least 2")


def pick_device(name: str | None, threads: int = 0):
    """The device to run on; on CPU also sets torch's thread count (``threads`` > 0)."""
    import torch

    device = torch.device(name if name is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    if device.type == "cpu" and threads > 0:
        torch.set_num_threads(threads)
    return device


def pick_dtype(args):
    import torch

    if args.dtype is None:
        return torch.bfloat16 if args.shape == "real" else torch.float32
    return getattr(torch, args.dtype)


def use_subprocesses(args, device) -> bool:
    return args.isolate == "always" or (args.isolate == "auto" and device.type == "cpu")


def setup(args):
    """(device, dtype, model, processor) of a benchmark's arguments; torch seeded."""
    import torch

    device = pick_device(args.device, args.threads)
    dtype = pick_dtype(args)
    torch.manual_seed(args.seed)
    model, processor = build_model(args, device, dtype)
    return device, dtype, model, processor


def build_model(args, device, dtype):
    """(model, processor) of ``args.backbone`` and ``args.shape`` on ``device`` in ``dtype``, eval mode."""
    from apa.backbones import backbone_class

    backbone = backbone_class(args.backbone)
    if args.shape != "real":
        model, processor = backbone.make_tiny(seed=args.seed, size=args.shape)
        return model.to(device=device, dtype=dtype).eval(), processor
    tiny, processor = backbone.make_tiny(seed=args.seed)
    del tiny
    return backbone.real_shape_model(processor, args.layers, device, dtype, args.seed), processor


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def describe_setup(args, device, dtype, model=None) -> str:
    import torch
    import transformers

    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} (CUDA)"
    else:
        where = f"CPU, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads"
    shape = f"{args.backbone} {args.shape}" + (f" ({args.layers} layers)" if args.layers else "")
    text = f"device: {where}; shape: {shape}; dtype: {str(dtype).replace('torch.', '')}"
    if model is not None:
        text += f"; parameters: {parameter_count(model) / 1e6:,.1f}M"
    return text + f"; torch {torch.__version__}, transformers {transformers.__version__}"

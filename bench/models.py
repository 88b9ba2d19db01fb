"""Benchmark models and the command-line options every benchmark shares.

``--shape``: ``tiny`` / ``small`` / ``base`` are the tiny models of apa.backbones.qwen2_audio
(float32); ``7b`` is a Qwen2-Audio with the real 7B dimensions (docs/method.md; Whisper-
large-v3-style encoder, 32 layers, d_model 1280, 20 heads, FFN 5120, 128 mel bins, 30 s
window; Qwen-7B text model, hidden 4096, 32 layers, 32 heads, 32 KV heads, FFN 11008,
vocabulary 156032; 8.4B parameters) and RANDOM weights, built directly on the device in
bf16 (no CPU copy, no checkpoint: an H100 initialises it in seconds). Random weights cost
exactly the arithmetic of real ones. Every shape uses the tiny model's processor (a real
Whisper feature extractor, 128 mel bins, 30 s window, and the tiny BPE tokenizer, whose ids
all lie inside the 7B vocabulary).
"""

from __future__ import annotations

import argparse
import os
import sys

from inputs import DEFAULT_AUDIO_SECONDS, DEFAULT_PROMPT_TOKENS, DEFAULT_TARGET_TOKENS

# The 7B shape (docs/method.md, Model; Qwen2-Audio-7B-Instruct's config.json).
SEVEN_B_AUDIO = dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                     num_mel_bins=128, max_source_positions=1500, scale_embedding=False,
                     activation_function="gelu")
SEVEN_B_TEXT = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                    intermediate_size=11008, vocab_size=156032, max_position_embeddings=8192,
                    rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                    use_sliding_window=False)
SHAPES = ("tiny", "small", "base", "7b")


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", choices=SHAPES, default="tiny",
                        help="model shape: tiny/small/base random test models (float32), or 7b: the real "
                             "Qwen2-Audio-7B dimensions with random weights (bf16; meant for a GPU)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtype", default=None, choices=("bfloat16", "float16", "float32"),
                        help="default: bfloat16 for 7b, float32 for the test shapes")
    parser.add_argument("--layers", type=int, default=None,
                        help="7b only: build this many text and audio layers instead of 32 (a quick check "
                             "that the path works; its timings are not the 7B's)")
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
    if args.layers is not None and (args.shape != "7b" or args.layers < 1):
        parser.error("--layers needs --shape 7b and a positive number")
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
        return torch.bfloat16 if args.shape == "7b" else torch.float32
    return getattr(torch, args.dtype)


def use_subprocesses(args, device) -> bool:
    return args.isolate == "always" or (args.isolate == "auto" and device.type == "cpu")


def seven_b_config(processor, layers: int | None = None):
    """Qwen2AudioConfig with the real 7B dimensions and the tiny tokenizer's special ids."""
    from transformers import Qwen2AudioConfig

    from apa.backbones.qwen2_audio import SPECIAL_TOKENS

    ids = {t: processor.tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    audio = dict(SEVEN_B_AUDIO)
    text = dict(SEVEN_B_TEXT, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    if layers is not None:
        audio["encoder_layers"] = layers
        text["num_hidden_layers"] = layers
    config = Qwen2AudioConfig(audio_config=audio, text_config=text, audio_token_index=ids["<|AUDIO|>"])
    config.pad_token_id = ids["<|endoftext|>"]
    return config


def build_model(args, device, dtype):
    """(model, processor) of ``args.shape`` on ``device`` in ``dtype``, eval mode."""
    import torch
    from transformers import GenerationConfig, Qwen2AudioForConditionalGeneration

    from apa.backbones.qwen2_audio import Qwen2Audio

    if args.shape != "7b":
        model, processor = Qwen2Audio.make_tiny(seed=args.seed, size=args.shape)
        return model.to(device=device, dtype=dtype).eval(), processor

    tiny, processor = Qwen2Audio.make_tiny(seed=args.seed)
    config = seven_b_config(processor, args.layers)
    torch.manual_seed(args.seed)
    # Allocated and initialised on the device itself, in the target dtype: no 34 GB float32
    # copy in host memory and no host-to-device transfer (a minute saved per run).
    with torch.device(device):
        model = Qwen2AudioForConditionalGeneration._from_config(config, dtype=dtype)
    tokenizer = processor.tokenizer
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                                               pad_token_id=tokenizer.pad_token_id,
                                               bos_token_id=tokenizer.pad_token_id, do_sample=False)
    del tiny
    return model.eval(), processor


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def describe_setup(args, device, dtype, model=None) -> str:
    import torch
    import transformers

    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} (CUDA)"
    else:
        where = f"CPU, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads"
    shape = args.shape + (f" ({args.layers} layers)" if args.layers else "")
    text = f"device: {where}; shape: {shape}; dtype: {str(dtype).replace('torch.', '')}"
    if model is not None:
        text += f"; parameters: {parameter_count(model) / 1e6:,.1f}M"
    return text + f"; torch {torch.__version__}, transformers {transformers.__version__}"

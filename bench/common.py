"""Shared helpers of bench/train_throughput.py and bench/inference_throughput.py.

What both scripts need, in one place:

- **Model shapes** (``--shape``): ``tiny`` / ``small`` / ``base`` are apa.modeling's random
  test models (float32); ``7b`` is a Qwen2-Audio with the real 7B dimensions (METHOD.md
  section 1: Whisper-large-v3-style encoder, 32 layers, d_model 1280, 20 heads, FFN 5120,
  128 mel bins, 30 s window; Qwen-7B text model, hidden 4096, 32 layers, 32 heads, 32 KV
  heads, FFN 11008, vocabulary 156032; 8.4B parameters) and RANDOM weights, built directly
  on the device in bf16 (no CPU copy, no checkpoint: an H100 initialises it in seconds).
  Random weights cost exactly the arithmetic of real ones. Every shape uses the tiny
  model's processor (a real Whisper feature extractor, 128 mel bins, 30 s window, and the
  tiny BPE tokenizer, whose ids all lie inside the 7B vocabulary).
- **Inputs of realistic length.** The real tokenizer is not available offline, so lengths
  are flags, and the token ids are real ones from the tiny tokenizer, cut or repeated to
  those lengths (``resize``): the prompt is the real ``multi`` prompt of a benchmark
  utterance, the response its real score text. What a step or a decode costs depends on
  the lengths (and shapes), not on which ids fill them. The audio is a 4 s speech-like
  signal through the real feature extractor, so the encoder sees the real 3000-frame input
  and the prompt holds 4 s x 25 = 100 audio tokens.
- **Memory.** GPU: ``torch.cuda.max_memory_allocated`` (reset before each case). CPU:
  the process's peak resident set size (VmHWM), reset before each case where Linux allows
  it; by default each case runs in a fresh subprocess (``--isolate``), so a case's peak is
  its own and memory a previous case freed but the allocator kept does not count.
- **Out-of-memory** is caught and reported as ``OOM`` in the table (a subprocess killed by
  the kernel's OOM killer too), never a crash of the whole run.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import subprocess
import sys
import time
from typing import Callable, Sequence

import numpy as np

SAMPLE_RATE = 16000
AUDIO_TOKENS_PER_SECOND = 25  # Qwen2-Audio: 100 mel frames/s, /2 by the conv stride, /2 by pooling
RESULT_MARK = "BENCH_RESULT "

# ---------------------------------------------------------------------------------------
# Default lengths: a typical speechocean762 (SO762) test utterance under the `multi` task.
#
# Audio: test clips last 3.9 s on average (median 3.5 s) -> 4 s = 100 audio tokens.
# Prompt: the `multi` instruction with its reference text and phone sequence. Counted over
#   the SO762 test set with the Qwen2 pre-tokenizer (the real tokenizer makes at least one
#   token per pre-token, and exactly one when each piece is in its vocabulary, which holds
#   for ordinary English words), the text of the prompt is at least 395 tokens on average
#   (364-441; the tiny tokenizer, trained on these very prompts, gives 408), so 400 text
#   tokens (special tokens included, audio tokens not), not the ~300 sometimes quoted.
# Response: the issue's ~230 tokens for the real tokenizer. The pre-token lower bound over
#   the SO762 test set is 171 on average (tiny tokenizer: 184); 230 is on the long side.
# ---------------------------------------------------------------------------------------
DEFAULT_AUDIO_SECONDS = 4.0
DEFAULT_PROMPT_TOKENS = 400
DEFAULT_TARGET_TOKENS = 230

# The 7B shape (METHOD.md section 1; Qwen2-Audio-7B-Instruct's config.json).
SEVEN_B_AUDIO = dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                     num_mel_bins=128, max_source_positions=1500, scale_embedding=False,
                     activation_function="gelu")
SEVEN_B_TEXT = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                    intermediate_size=11008, vocab_size=156032, max_position_embeddings=8192,
                    rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                    use_sliding_window=False)
SHAPES = ("tiny", "small", "base", "7b")

# Words of the benchmark utterance, SO762-style phones (stress mark 0, as in the corpus).
BENCH_WORDS = (
    ("MARK", "M AA0 R K"), ("IS", "IH0 Z"), ("GOING", "G OW0 IH0 NG"), ("TO", "T UW0"), ("SEE", "S IY0"),
    ("THE", "DH AH0"), ("WEATHER", "W EH0 DH ER0"), ("IS", "IH0 Z"), ("NICE", "N AY0 S"),
    ("TODAY", "T AH0 D EY0"), ("WE", "W IY0"), ("CALL", "K AO0 L"), ("IT", "IH0 T"), ("BEAR", "B EH0 R"),
    ("I", "AY0"), ("LIKE", "L AY0 K"), ("THIS", "DH IH0 S"), ("BOOK", "B UH0 K"), ("VERY", "V EH0 R IY0"),
    ("MUCH", "M AH0 CH"),
)


# ---------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------
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
                             "(default %(default)s: SO762 test mean for `multi`, see bench/common.py)")
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


# ---------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------
def seven_b_config(processor, layers: int | None = None):
    """Qwen2AudioConfig with the real 7B dimensions and the tiny tokenizer's special ids."""
    from transformers import Qwen2AudioConfig

    from apa.modeling import SPECIAL_TOKENS

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

    from apa.modeling import make_tiny_model

    if args.shape != "7b":
        model, processor = make_tiny_model(seed=args.seed, size=args.shape)
        return model.to(device=device, dtype=dtype).eval(), processor

    tiny, processor = make_tiny_model(seed=args.seed)
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


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------
# (F1, F2) of a few vowels, Hz: each syllable of the clip takes one.
_VOWEL_FORMANTS = ((730, 1090), (270, 2290), (530, 1840), (300, 870), (640, 1190), (490, 1350), (660, 1720))


def speech_like_clip(seconds: float = DEFAULT_AUDIO_SECONDS, seed: int = 0) -> np.ndarray:
    """A float32 16 kHz clip that looks like read speech to a feature extractor: a voiced
    source (harmonics of a moving pitch) shaped by vowel formants, in syllables of ~250 ms
    with fricative noise between them, and short silences at both ends."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    f0 = 130 + 25 * np.sin(2 * np.pi * 0.6 * t) + 8 * np.sin(2 * np.pi * 2.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    syllable = np.floor(t * 4).astype(int)
    formants = np.array(_VOWEL_FORMANTS)[rng.integers(0, len(_VOWEL_FORMANTS), syllable.max() + 1)][syllable]
    voiced = np.zeros(n)
    for k in range(1, 40):
        fk = k * f0
        gain = sum(np.exp(-((fk - formants[:, i]) / (60 + 0.08 * formants[:, i])) ** 2) for i in range(2))
        voiced += (gain + 0.02) * np.sin(k * phase) / k ** 0.5
    position = (t * 4) % 1.0
    vowel = np.where(position < 0.75, np.sin(np.pi * np.clip(position / 0.75, 0, 1)) ** 0.5, 0.0)
    fricative = np.where(position >= 0.8, 1.0, 0.0) * np.diff(rng.normal(0, 0.05, n + 1))
    signal = vowel * voiced + fricative
    edge = int(0.15 * SAMPLE_RATE)
    signal[:edge] = 0
    signal[-edge:] = 0
    signal += rng.normal(0, 1e-3, n)  # room noise
    return (0.5 * signal / np.abs(signal).max()).astype(np.float32)


def bench_utterance(tokenizer, task, target_tokens: int = DEFAULT_TARGET_TOKENS):
    """A synthetic utterance whose response under ``task`` has about ``target_tokens`` tokens
    (end-of-turn included) with ``tokenizer``: the number of words of BENCH_WORDS (cycled)
    that comes closest. Scores are SO762-like (mostly 10s, a few 8s)."""
    from apa.data.manifest import Utterance, Word
    from apa.prompts import END_OF_TURN
    from apa.targets import format_scores

    def make(n_words: int) -> Utterance:
        words = []
        for i in range(n_words):
            text, phones = BENCH_WORDS[i % len(BENCH_WORDS)]
            accuracy = 8 if i % 3 == 2 else 10
            phone_list = phones.split()
            words.append(Word(text, phone_list, {"accuracy": accuracy, "stress": 10, "total": accuracy},
                              [8 if (i + j) % 5 == 4 else 10 for j in range(len(phone_list))]))
        return Utterance(id="bench", audio="bench.wav", text=" ".join(w.text for w in words), words=words,
                         duration=DEFAULT_AUDIO_SECONDS,
                         scores={"accuracy": 8, "fluency": 9, "prosody": 9, "completeness": 10, "total": 8})

    def length(utt) -> int:
        return len(tokenizer(format_scores(utt, task) + END_OF_TURN, add_special_tokens=False)["input_ids"])

    previous = None
    for n_words in range(1, 200):
        utt = make(n_words)
        n = length(utt)
        if n >= target_tokens:
            if previous is not None and target_tokens - length(previous) < n - target_tokens:
                return previous
            return utt
        previous = utt
    raise ValueError(f"cannot build an utterance with {target_tokens} response tokens")


def pretoken_count(text: str) -> int:
    """Qwen2 pre-tokens of ``text`` (special tokens count one each): a lower bound on the
    REAL tokenizer's token count, equal to it when every piece is one vocabulary entry
    (true for digits, punctuation, ordinary words; phone names like " IY" likely too)."""
    import regex
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    special = re.compile(r"<\|[A-Za-z_]+\|>")
    pattern = regex.compile(PRETOKENIZE_REGEX)
    return len(special.findall(text)) + sum(len(pattern.findall(piece)) for piece in special.split(text))


def resize(ids: Sequence[int], n: int) -> list[int]:
    """``ids`` cut to ``n`` tokens, or repeated (cyclically) until there are ``n``."""
    ids = list(ids)
    if not ids:
        raise ValueError("nothing to resize")
    return (ids * math.ceil(n / len(ids)))[:n]


def _resized_prompt(prompt: list[int], audio_id: int, end_id: int, prompt_tokens: int) -> list[int]:
    """The prompt's text (not its audio tokens) brought to ``prompt_tokens`` tokens.

    The head (system turn up to the audio) and the tail (from the user turn's end-of-turn to
    "assistant\\n") stay exact; the instruction between them is cut or repeated."""
    audio = [i for i, t in enumerate(prompt) if t == audio_id]
    first, last = audio[0], audio[-1]
    after = prompt[last + 1:]
    tail_start = max(i for i, t in enumerate(after) if t == end_id)
    head, middle, tail = prompt[:first], after[:tail_start], after[tail_start:]
    n_middle = prompt_tokens - len(head) - len(tail)
    if n_middle < 1:
        raise ValueError(f"--prompt-tokens {prompt_tokens} is shorter than the chat template's fixed "
                         f"parts ({len(head) + len(tail) + 1} tokens)")
    return head + prompt[first:last + 1] + resize(middle, n_middle) + tail


def sample_row(processor, task, clip: np.ndarray, utt, prompt_tokens: int, target_tokens: int) -> dict:
    """One training sample (batch of 1, CPU tensors) of the requested lengths.

    Built by the project's own collate (apa.collate.build_training_batch: real prompt with
    the audio expanded to its tokens, real response, labels on the response only), then the
    prompt text and the response are resized: the prompt as in ``_resized_prompt``, the
    response by cutting or repeating its score text before its end-of-turn token.
    Keys: input_ids, attention_mask, labels, input_features, feature_attention_mask, and
    prompt_ids (the prompt alone, for generation)."""
    import torch

    from apa.collate import IGNORE_INDEX, build_training_batch

    batch = build_training_batch(processor, [utt], task, audios=[clip])
    ids = batch["input_ids"][0].tolist()
    labels = batch["labels"][0].tolist()
    start = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    tokenizer = processor.tokenizer
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompt = _resized_prompt(ids[:start], tokenizer.convert_tokens_to_ids("<|AUDIO|>"), end_id, prompt_tokens)
    response = resize(ids[start:-1], target_tokens - 1) + [end_id]
    row = prompt + response
    return {"input_ids": torch.tensor([row]), "attention_mask": torch.ones(1, len(row), dtype=torch.long),
            "labels": torch.tensor([[IGNORE_INDEX] * len(prompt) + response]),
            "input_features": batch["input_features"], "feature_attention_mask": batch["feature_attention_mask"],
            "prompt_ids": torch.tensor([prompt])}


def repeat_rows(sample: dict, batch_size: int, keys: Sequence[str]) -> dict:
    """``batch_size`` copies of a one-row batch (equal lengths: no padding)."""
    return {k: sample[k].repeat(batch_size, *([1] * (sample[k].dim() - 1))) for k in keys}


def count_audio_tokens(sample: dict, processor) -> int:
    return int((sample["input_ids"][0] == processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")).sum())


# ---------------------------------------------------------------------------------------
# Time and memory
# ---------------------------------------------------------------------------------------
def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_high_water() -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(r"VmHWM:\s+(\d+)\s+kB", f.read())
        return int(match.group(1)) * 1024 if match else None
    except OSError:
        return None


def _reset_rss_high_water() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux >= 4.0: reset the peak resident set size to the current one
        return True
    except OSError:
        return False


def memory_now(device) -> int:
    """Bytes in use now: allocated CUDA memory, or the resident set on CPU."""
    import torch

    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)\s+kB", f.read()).group(1)) * 1024
    except (OSError, AttributeError):
        return 0


def reset_peak_memory(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _reset_rss_high_water()


def peak_memory(device) -> int:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    high = _rss_high_water()
    return high if high is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def free_memory(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_oom(error: BaseException) -> bool:
    import torch

    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                                or "defaultcpuallocator" in text)


def measure(device, run_case: Callable[[], dict]) -> dict:
    """Run one case with the peak-memory counter reset; OOM becomes {"status": "OOM"}."""
    free_memory(device)
    baseline = memory_now(device)
    reset_peak_memory(device)
    oom = False
    try:
        result = run_case()
    except Exception as error:  # noqa: BLE001 - only OOM is swallowed
        if not is_oom(error):
            raise
        oom, result = True, {"error": str(error).strip().splitlines()[0][:200]}
    if oom:  # outside the except block, so the failed step's tensors can be freed
        free_memory(device)
        return {"status": "OOM", **result}
    result.update(status="ok", peak_bytes=peak_memory(device), baseline_bytes=baseline)
    return result


def timed(device, fn: Callable[[], object]) -> float:
    """Seconds ``fn`` takes, the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------
# Cases in subprocesses
# ---------------------------------------------------------------------------------------
def emit(result: dict) -> None:
    print(RESULT_MARK + json.dumps(result), flush=True)


def run_in_subprocess(script: str, argv: Sequence[str], case: str) -> dict:
    """Run ``script argv --worker case`` and return the result it emits. A worker killed by
    the OOM killer (or one that died of a memory error) gives {"status": "OOM"}."""
    command = [sys.executable, script, *argv, "--worker", case]
    proc = subprocess.run(command, capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    stderr = proc.stderr.strip()
    if proc.returncode in (-9, 137) or "out of memory" in stderr.lower() or "MemoryError" in stderr:
        return {"status": "OOM", "error": f"worker exited with {proc.returncode}"}
    sys.stderr.write(stderr[-3000:] + "\n")
    last = stderr.splitlines()[-1] if stderr else f"exit status {proc.returncode}"
    return {"status": "error", "error": last[:200]}


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The command line without any --worker option (the parent adds its own)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--worker":
            skip = True
            continue
        if item.startswith("--worker="):
            continue
        out.append(item)
    return out


# ---------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------
def format_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / (1 << 20):.0f} MiB"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


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


def memory_label(device, isolated: bool) -> str:
    if device.type == "cuda":
        return "peak memory = torch.cuda.max_memory_allocated during the case (weights included)"
    if isolated:
        return "peak memory = peak resident set (VmHWM) of the case's own process (weights, libraries included)"
    return "peak memory = peak resident set since the case began, in one shared process (freed memory " \
           "the allocator kept still counts)"

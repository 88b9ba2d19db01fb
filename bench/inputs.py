"""Benchmark inputs of realistic length: a speech-like clip, a benchmark utterance, and one
training row brought to the requested prompt and response lengths.

The real tokenizer is not available offline, so lengths are flags, and the token ids are
real ones from the tiny tokenizer, cut or repeated to those lengths (``resize``): the prompt
is the real ``multi`` prompt of a benchmark utterance, the response its real score text.
What a step or a decode costs depends on the lengths (and shapes), not on which ids fill
them. The audio is a 4 s speech-like signal through the real feature extractor, so the
encoder sees the real 3000-frame input and the prompt holds 4 s x 25 = 100 audio tokens.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

SAMPLE_RATE = 16000

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
DEFAULT_AUDIO_SECONDS = 4.0
DEFAULT_PROMPT_TOKENS = 400
DEFAULT_TARGET_TOKENS = 230

# Words of the benchmark utterance, SO762-style phones (stress mark 0, as in the corpus).
BENCH_WORDS = (
    ("MARK", "M AA0 R K"), ("IS", "IH0 Z"), ("GOING", "G OW0 IH0 NG"), ("TO", "T UW0"), ("SEE", "S IY0"),
    ("THE", "DH AH0"), ("WEATHER", "W EH0 DH ER0"), ("IS", "IH0 Z"), ("NICE", "N AY0 S"),
    ("TODAY", "T AH0 D EY0"), ("WE", "W IY0"), ("CALL", "K AO0 L"), ("IT", "IH0 T"), ("BEAR", "B EH0 R"),
    ("I", "AY0"), ("LIKE", "L AY0 K"), ("THIS", "DH IH0 S"), ("BOOK", "B UH0 K"), ("VERY", "V EH0 R IY0"),
    ("MUCH", "M AH0 CH"),
)

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


def bench_utterance(processor, task, target_tokens: int = DEFAULT_TARGET_TOKENS):
    """A synthetic utterance whose response under ``task`` has about ``target_tokens`` tokens
    (end-of-turn included) with the processor's tokenizer: the number of words of BENCH_WORDS
    (cycled) that comes closest. Scores are SO762-like (mostly 10s, a few 8s)."""
    from apa.data.manifest import Utterance, Word
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
        return len(processor.tokenizer(format_scores(utt, task), add_special_tokens=False)["input_ids"]) + 1

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


def pretoken_count(tokenizer, text: str) -> int:
    """Pre-tokens of ``text`` under ``tokenizer``'s own pre-tokenizer (the real one: every tiny
    tokenizer keeps its family's), special tokens one each: a lower bound on the REAL
    tokenizer's token count, equal to it when every piece is one vocabulary entry (true for
    digits, punctuation, ordinary words; phone names like " IY" likely too)."""
    pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
    special = re.compile("(" + "|".join(map(re.escape, tokenizer.all_special_tokens + [
        t for t in tokenizer.get_added_vocab()])) + ")")
    count = 0
    for piece in special.split(text):
        if special.fullmatch(piece):
            count += 1
        elif piece:
            count += len(pre_tokenizer.pre_tokenize_str(piece))
    return count


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
    Keys: input_ids, attention_mask, labels, prompt_ids (the prompt alone, for generation),
    and under "audio" the backbone's own audio inputs (its processor's names and shapes)."""
    import torch

    from apa.collate import IGNORE_INDEX, build_training_batch

    batch = build_training_batch(processor, [utt], task, audios=[clip])
    ids = batch["input_ids"][0].tolist()
    labels = batch["labels"][0].tolist()
    start = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    end_id = processor.end_of_turn_id
    prompt = _resized_prompt(ids[:start], processor.audio_token_id, end_id, prompt_tokens)
    response = resize(ids[start:-1], target_tokens - 1) + [end_id]
    row = prompt + response
    return {"input_ids": torch.tensor([row]), "attention_mask": torch.ones(1, len(row), dtype=torch.long),
            "labels": torch.tensor([[IGNORE_INDEX] * len(prompt) + response]),
            "prompt_ids": torch.tensor([prompt]),
            "audio": {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "labels")}}


def repeat_rows(rows: dict, batch_size: int) -> dict:
    """``batch_size`` copies of a one-row batch (equal lengths: no padding); every tensor's
    first dimension is its rows (or clips: one per row)."""
    return {k: v.repeat(batch_size, *([1] * (v.dim() - 1))) if hasattr(v, "repeat") else v for k, v in rows.items()}


def count_audio_tokens(sample: dict, processor) -> int:
    return int((sample["input_ids"][0] == processor.audio_token_id).sum())

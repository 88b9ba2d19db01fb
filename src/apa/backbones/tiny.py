"""What the tiny offline models of every backbone share: their tokenizer's training texts, BPE
training under a backbone's own pre-tokenizer, the size presets and Whisper positions.

A tiny model mirrors its real checkpoint: the real config with the sizes shrunk, the real chat
template and special tokens (in the real order), and a tokenizer whose pre-tokenizer is the
real one, so that text splits where the real tokenizer splits it (digits one by one in Qwen's,
up to three together in Phi-4's). Only the vocabulary is small: a byte-level BPE trained here
on apa's own prompts and score texts.
"""

from __future__ import annotations

import json
import re
from typing import Callable, Sequence

from apa.errors import ApaError

TINY_BPE_VOCAB = 800
SIZES = ("tiny", "small", "base")
EXAMPLE_SENTENCES = (
    ("WE CALL IT BEAR", ("W IY0", "K AO0 L", "IH0 T", "B EH0 R")),
    ("MARK IS GOING TO SEE ELEPHANT", ("M AA0 R K", "IH0 Z", "G OW0 IH0 NG", "T UW0", "S IY0",
                                       "EH0 L AH0 F AH0 N T")),
    ("I LIKE THIS BOOK VERY MUCH", ("AY0", "L AY0 K", "DH IH0 S", "B UH0 K", "V EH0 R IY0", "M AH0 CH")),
    ("THE WEATHER IS NICE TODAY", ("DH AH0", "W EH0 DH ER0", "IH0 Z", "N AY0 S", "T AH0 D EY0")),
)
# ARPAbet as used by SO762 (stress marks 0-2), listed so every phone symbol has tokens.
ARPABET = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH "
           "UH UW V W Y Z ZH").split()


def tokenizer_corpus(render: Callable[[str], str], end_of_turn: str) -> list[str]:
    """Texts a tiny tokenizer is trained on: every task's prompts (rendered by the backbone's
    chat template) and score texts, phones, digits and letters."""
    from apa.data.manifest import Utterance, Word
    from apa.prompts import instruction_for
    from apa.targets import ScoreSet, format_scores
    from apa.tasks import TASKS

    texts: list[str] = []
    for text, phone_groups in EXAMPLE_SENTENCES:
        words = [Word(text=w, phones=p.split()) for w, p in zip(text.split(), phone_groups)]
        utt = Utterance(id="x", audio="x.wav", text=text, words=words)
        for value in range(11):
            scores = ScoreSet(sentence={a: value for a in ("accuracy", "fluency", "prosody", "completeness", "total")},
                              words=[{"accuracy": value, "stress": 10 if value > 5 else 5, "total": value}
                                     for _ in words],
                              phones=[[(value + j) % 11 for j in range(len(w.phones))] for w in words])
            for task in TASKS.values():
                texts.append(format_scores(utt, task, scores) + end_of_turn)
        for task in TASKS.values():
            texts.append(render(instruction_for(task, utt.text, utt.phone_sequence)))
    phones = [p + s for p in ARPABET for s in ("", "0", "1", "2")]
    texts.append(" ".join(phones))
    texts.append(" ".join(f"{p}/{v}" for p in phones for v in (0, 5, 10)))
    texts.append(" ".join("0123456789"))
    texts.append(" ".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ") + " " + " ".join("abcdefghijklmnopqrstuvwxyz"))
    return texts


def train_byte_level_bpe(pre_tokenizer, corpus: Sequence[str], special_tokens: Sequence[str],
                         vocab_size: int = TINY_BPE_VOCAB, normalizer=None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a byte-level BPE trained on ``corpus`` under ``pre_tokenizer`` (a
    ``tokenizers`` pre-tokenizer that ends in ByteLevel), special tokens appended after the
    learnt vocabulary in the given order (the real tokenizers keep them at the end too)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False, byte_fallback=False))
    if normalizer is not None:
        raw.normalizer = normalizer
    raw.pre_tokenizer = pre_tokenizer
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    # Special tokens must not be learnt as text: cut them out of the corpus.
    special = re.compile("|".join(re.escape(t) for t in special_tokens))
    raw.train_from_iterator([piece for text in corpus for piece in special.split(text) if piece], trainer=trainer)
    state = json.loads(raw.to_str())["model"]
    vocab = dict(state["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    for token in special_tokens:
        vocab[token] = len(vocab)
    return vocab, merges


def check_size(size: str) -> None:
    if size not in SIZES:
        raise ApaError(f"unknown model size {size!r}; choose one of: {', '.join(SIZES)}")


def check_window(window_seconds, most: int) -> None:
    if isinstance(window_seconds, bool) or not isinstance(window_seconds, int) or not 1 <= window_seconds <= most:
        raise ApaError(f"audio window must be a whole number of seconds from 1 to {most}, got {window_seconds!r}")


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0):
    """Whisper's sinusoidal position table (a from-scratch encoder's positions stay frozen)."""
    import math

    import torch

    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2, dtype=torch.float32))
    scaled = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


def seeded(seed: int):
    """A context in which torch's random generator starts at ``seed``, the caller's state kept."""
    import torch

    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    fork = torch.random.fork_rng(devices=devices)

    class _Seeded:
        def __enter__(self):
            fork.__enter__()
            torch.manual_seed(seed)

        def __exit__(self, *exc):
            return fork.__exit__(*exc)

    return _Seeded()

"""A tiny random Qwen2-Audio with a real processor, built offline (`apa tiny-model`).

``build_tiny_model`` writes a randomly initialised Qwen2-Audio with a real processor
(Whisper features, 128 mel bins; a byte-level BPE tokenizer with Qwen2's pre-tokenizer,
trained offline on our own prompt and score texts): ``size="tiny"`` (a few hundred
thousand parameters, 30 s window) for tests and the demo, ``"small"`` / ``"base"`` for
models trained from scratch (the real-data proof, apa.experiments.proxy), optionally with
an audio window shorter than 30 s (``window_seconds``), processor padding and encoder
positions kept in agreement.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from apa.errors import ApaError
from apa.modeling import ENCODER_POSITIONS_PER_SECOND, FULL_WINDOW_SECONDS, SPECIAL_TOKENS

TINY_AUDIO_CONFIG = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                         num_mel_bins=128, max_source_positions=1500, scale_embedding=False,
                         activation_function="gelu")
TINY_TEXT_CONFIG = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=128, max_position_embeddings=4096, rope_theta=10000.0,
                        tie_word_embeddings=False, rms_norm_eps=1e-6, use_sliding_window=False)
# Sizes of the random Qwen2-Audio-shaped models: name -> (audio encoder, text model) overrides
# of the tiny configs. "tiny": tests and the demo (0.22M parameters). "small" (1.0M): trained
# from scratch on a 2-core CPU, where featurising and encoding the padded audio window cost as
# much as the model: a speechocean762 epoch takes 2 minutes on an idle machine, 15 on a busy one.
# "base" (38M): the same on a GPU.
TINY_SIZES: dict[str, tuple[dict, dict]] = {
    "tiny": ({}, {}),
    "small": (dict(d_model=128, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=256),
              dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=384)),
    "base": (dict(d_model=384, encoder_layers=6, encoder_attention_heads=6, encoder_ffn_dim=1536),
             dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
                  intermediate_size=1536)),
}
TINY_BPE_VOCAB = 800
_EXAMPLE_SENTENCES = (
    ("WE CALL IT BEAR", ("W IY0", "K AO0 L", "IH0 T", "B EH0 R")),
    ("MARK IS GOING TO SEE ELEPHANT", ("M AA0 R K", "IH0 Z", "G OW0 IH0 NG", "T UW0", "S IY0",
                                       "EH0 L AH0 F AH0 N T")),
    ("I LIKE THIS BOOK VERY MUCH", ("AY0", "L AY0 K", "DH IH0 S", "B UH0 K", "V EH0 R IY0", "M AH0 CH")),
    ("THE WEATHER IS NICE TODAY", ("DH AH0", "W EH0 DH ER0", "IH0 Z", "N AY0 S", "T AH0 D EY0")),
)
# ARPAbet as used by SO762 (stress marks 0-2), listed so every phone symbol has tokens.
_ARPABET = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH "
            "UH UW V W Y Z ZH").split()


def _tokenizer_corpus() -> list[str]:
    """Texts the tiny tokenizer is trained on: our prompts, score texts, phones, digits, letters."""
    from apa.data.manifest import Utterance, Word
    from apa.prompts import chat_messages, instruction_for, render_chat
    from apa.targets import ScoreSet, format_scores
    from apa.tasks import TASKS

    texts: list[str] = []
    for text, phone_groups in _EXAMPLE_SENTENCES:
        words = [Word(text=w, phones=p.split()) for w, p in zip(text.split(), phone_groups)]
        utt = Utterance(id="x", audio="x.wav", text=text, words=words)
        for value in range(11):
            scores = ScoreSet(sentence={a: value for a in ("accuracy", "fluency", "prosody", "completeness", "total")},
                              words=[{"accuracy": value, "stress": 10 if value > 5 else 5, "total": value}
                                     for _ in words],
                              phones=[[(value + j) % 11 for j in range(len(w.phones))] for w in words])
            for task in TASKS.values():
                texts.append(format_scores(utt, task, scores) + "<|im_end|>")
        for task in TASKS.values():
            prompt = render_chat(chat_messages(instruction_for(task, utt.text, utt.phone_sequence)))
            texts.append(prompt)
    phones = [p + s for p in _ARPABET for s in ("", "0", "1", "2")]
    texts.append(" ".join(phones))
    texts.append(" ".join(f"{p}/{v}" for p in phones for v in (0, 5, 10)))
    texts.append(" ".join("0123456789"))
    texts.append(" ".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ") + " " + " ".join("abcdefghijklmnopqrstuvwxyz"))
    return texts


def build_tiny_tokenizer(vocab_size: int = TINY_BPE_VOCAB):
    """A small byte-level BPE tokenizer with Qwen2's pre-tokenizer (digits split one per
    token), trained offline on ``_tokenizer_corpus()``; returns a Qwen2Tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from apa.prompts import CHAT_TEMPLATE

    raw = Tokenizer(models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False, byte_fallback=False))
    raw.normalizer = normalizers.NFC()
    raw.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    # Special tokens must not be learnt as text: cut them out of the corpus.
    special = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
    corpus = [piece for text in _tokenizer_corpus() for piece in special.split(text) if piece]
    raw.train_from_iterator(corpus, trainer=trainer)

    model_state = __import__("json").loads(raw.to_str())["model"]
    vocab = model_state["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_state["merges"]]
    for token in SPECIAL_TOKENS:  # appended in the real tokenizer's order, after the BPE vocab
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", bos_token=None,
                               additional_special_tokens=list(SPECIAL_TOKENS[1:]),
                               model_max_length=32768, errors="replace")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _check_size_and_window(size: str, window_seconds: int) -> None:
    if size not in TINY_SIZES:
        raise ApaError(f"unknown model size {size!r}; choose one of: {', '.join(TINY_SIZES)}")
    if isinstance(window_seconds, bool) or not isinstance(window_seconds, int) \
            or not 1 <= window_seconds <= FULL_WINDOW_SECONDS:
        raise ApaError(f"audio window must be a whole number of seconds from 1 to {FULL_WINDOW_SECONDS}, "
                       f"got {window_seconds!r}")


def tiny_configs(size: str = "tiny", window_seconds: int = FULL_WINDOW_SECONDS) -> tuple[dict, dict]:
    """(audio encoder config, text config) of a tiny-builder model of ``size`` and window."""
    _check_size_and_window(size, window_seconds)
    audio_extra, text_extra = TINY_SIZES[size]
    audio = dict(TINY_AUDIO_CONFIG, **audio_extra,
                 max_source_positions=window_seconds * ENCODER_POSITIONS_PER_SECOND)
    return audio, dict(TINY_TEXT_CONFIG, **text_extra)


def _sinusoids(length: int, channels: int, max_timescale: float = 10000.0):
    """Whisper's sinusoidal position table (a from-scratch encoder's positions stay frozen)."""
    import math

    import torch

    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2, dtype=torch.float32))
    scaled = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


def make_tiny_model(seed: int = 0, size: str = "tiny", window_seconds: int = FULL_WINDOW_SECONDS):
    """A random Qwen2-Audio of ``size`` and its processor, in memory (see build_tiny_model)."""
    import torch
    from transformers import (GenerationConfig, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration,
                              Qwen2AudioProcessor, WhisperFeatureExtractor)

    from apa.prompts import CHAT_TEMPLATE

    audio_config, text_extra = tiny_configs(size, window_seconds)
    tokenizer = build_tiny_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    # The real model's feature extractor: 128 mel bins, 25 ms windows every 10 ms; its
    # window (chunk_length) is what the encoder's positions cover: chunk_length * 100 mel
    # frames = max_source_positions * 2.
    feature_extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160,
                                                chunk_length=window_seconds, n_fft=400, padding_value=0.0,
                                                return_attention_mask=True)
    processor = Qwen2AudioProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer,
                                    chat_template=CHAT_TEMPLATE)

    text_config = dict(text_extra, vocab_size=len(tokenizer), bos_token_id=ids["<|endoftext|>"],
                       eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    config = Qwen2AudioConfig(audio_config=audio_config, text_config=text_config,
                              audio_token_index=ids["<|AUDIO|>"])
    config.pad_token_id = ids["<|endoftext|>"]
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):  # leave the caller's random state alone
        torch.manual_seed(seed)
        model = Qwen2AudioForConditionalGeneration(config).float().eval()
        # With the default init (std 0.02) a frozen random LM head caps the logits at about
        # +-1.3 (RMS-normed hidden of norm ~8 times rows of norm ~0.16), so LoRA cannot fit any
        # target below ~5 nats per token. A pretrained head is not so flat; give the random
        # one rows of norm ~2.4 so that LoRA fine-tuning of the tiny model behaves like that.
        with torch.no_grad():
            model.lm_head.weight.normal_(0.0, 0.3)
    if size != "tiny":  # models meant to learn get Whisper's sinusoidal (frozen) encoder positions
        positions = model.model.audio_tower.embed_positions
        with torch.no_grad():
            positions.weight.copy_(_sinusoids(*positions.weight.shape))
    model.generation_config = GenerationConfig(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                                               bos_token_id=ids["<|endoftext|>"], do_sample=False)
    return model, processor


def build_tiny_model(out_dir: str | os.PathLike, seed: int = 0, size: str = "tiny",
                     window_seconds: int = FULL_WINDOW_SECONDS) -> Path:
    """Write a random Qwen2-Audio (model + processor) to ``out_dir``; returns the path.

    ``size="tiny"``: about 220k parameters, Whisper-style encoder (d_model 32, 2 layers,
    2 heads, 128 mel bins) and a Qwen2 text model (hidden 64, 2 layers, 4 heads, 2 KV heads,
    FFN 128). ``"small"`` (1.0M) and ``"base"`` (38M) are larger (``TINY_SIZES``), for
    training from scratch; they get Whisper's sinusoidal encoder positions (frozen, as in
    Qwen2-Audio) instead of random ones. Every size uses the tiny tokenizer's vocabulary.

    ``window_seconds`` (whole seconds, default 30 as in the real model): the processor pads
    and cuts clips to this length (``chunk_length``; ``window_seconds * 100`` mel frames) and
    the encoder has ``window_seconds * 50`` positions, which is what Qwen2-Audio checks;
    a full window gives ``window_seconds * 25`` audio tokens. Clips longer than the window
    are cut by the processor: callers that care count them (see apa.experiments.proxy).

    Deterministic: the same seed gives identical weights and tokenizer. Loadable with
    ``Qwen2AudioForConditionalGeneration.from_pretrained(out_dir)`` and
    ``AutoProcessor.from_pretrained(out_dir)``.
    """
    model, processor = make_tiny_model(seed, size=size, window_seconds=window_seconds)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out

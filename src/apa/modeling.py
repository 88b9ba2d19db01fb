"""The only module that knows Qwen2-Audio: loading, LoRA, and a tiny random test model.

Everything else talks to ``(model, processor)`` pairs through apa.collate and
apa.inference, so a different backbone would only need a new version of this file.

- ``load_model_and_processor`` loads ``Qwen2AudioForConditionalGeneration`` and its
  processor (bf16 on a GPU that has it, float32 otherwise), optionally with a LoRA adapter,
  and turns "no network" / "no such directory" into one clear ApaError.
- ``add_lora`` puts LoRA on the language model's linear layers only (METHOD.md section 1):
  a plain PEFT name list (``["q_proj", ...]``) would also match the audio encoder's
  ``q_proj``/``k_proj``/``v_proj``, so the targets are given as a regex anchored at the
  language model's module path.
- ``build_tiny_model`` writes a randomly initialised Qwen2-Audio with a real processor
  (Whisper features, 128 mel bins; a byte-level BPE tokenizer trained offline on our own
  prompt and score texts): ``size="tiny"`` (a few hundred thousand parameters, 30 s window)
  for tests and the demo, ``"small"`` / ``"base"`` for models trained from scratch (the
  real-data proof, apa.experiments.proxy), optionally with an audio window shorter than
  30 s (``window_seconds``), processor padding and encoder positions kept in agreement.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

from apa.errors import ApaError

DEFAULT_MODEL = "Qwen/Qwen2-Audio-7B-Instruct"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The audio encoder's (Whisper) linear layers, targeted only with train_audio=True.
AUDIO_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

# Special tokens in the order (and roles) of the real Qwen2-Audio tokenizer (ids 151643...).
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>",
                  "<|audio_eos|>")


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------

def resolve_dtype(dtype: Any = "auto", device: str | None = None):
    """"auto": bf16 on a CUDA device that supports it, float32 otherwise (CPU included)."""
    import torch

    if dtype is None or dtype == "auto":
        if device is not None and str(device).startswith("cuda") and torch.cuda.is_available() \
                and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
             "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
    if dtype not in names:
        raise ApaError(f"unknown dtype {dtype!r}; choose one of: auto, {', '.join(names)}")
    return names[dtype]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _looks_local(name: str) -> bool:
    """A path rather than a hub id: exists, is absolute/relative-explicit, or has >1 slash."""
    return (os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1
            or "\\" in name)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _load_error(name: str, error: Exception) -> ApaError:
    first_line = _first_line(error)
    if _looks_local(name):
        return ApaError(f"cannot load a Qwen2-Audio model from {name}: {first_line}. "
                        "Pass --model DIR with a directory written by save_pretrained or "
                        "`huggingface-cli download`, or run `apa tiny-model DIR` for a random test model")
    return ApaError(f"cannot load {name}: no such directory, not in the local cache, and the hub could not "
                    f"provide it ({first_line}). "
                    f"Download it on a connected machine (huggingface-cli download {name} --local-dir DIR), "
                    "then pass --model DIR; or run `apa tiny-model DIR` for a random test model")


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an invalid repo id, an unreadable cache: treat as not cached
        return False


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hugging Face hub can be reached, decided in seconds (a plain download
    retries for minutes before it gives up without a network)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy resolves names itself; let the download try
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_pretrained(name: str, torch_dtype, device: str, local_files_only: bool):
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    processor = AutoProcessor.from_pretrained(name, local_files_only=local_files_only)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": local_files_only}
    if str(device).startswith("cuda"):
        kwargs["device_map"] = {"": device}
    model = Qwen2AudioForConditionalGeneration.from_pretrained(name, **kwargs)
    return model, processor


def load_model_and_processor(name_or_path: str | os.PathLike = DEFAULT_MODEL, adapter: str | os.PathLike | None = None,
                             dtype: Any = "auto", device: str | None = None):
    """Load ``(model, processor)`` for inference or training; the model is in eval mode.

    ``name_or_path`` is a directory or a hub id (from the local cache when it is there,
    else downloaded). ``adapter`` is a LoRA adapter directory saved by PEFT. ``device``
    defaults to CUDA when available. Raises ApaError (one line, no traceback) when the
    model cannot be found or downloaded.
    """
    name = str(name_or_path)
    local = _looks_local(name)
    if local and not os.path.isdir(os.path.expanduser(name)):
        raise ApaError(f"model directory {name} does not exist; pass --model with a downloaded "
                       f"{DEFAULT_MODEL} (huggingface-cli download {DEFAULT_MODEL} --local-dir DIR) "
                       "or run `apa tiny-model DIR` for a random test model")
    name = os.path.expanduser(name)
    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    try:
        if local:
            model, processor = _from_pretrained(name, torch_dtype, device, local_files_only=True)
        else:
            try:
                if not _in_hub_cache(name):
                    raise OSError("not in the local cache")
                model, processor = _from_pretrained(name, torch_dtype, device, local_files_only=True)
            except OSError as e:
                if not hub_reachable():
                    raise ApaError(f"cannot download {name}: no network ({_first_line(e)}), and there is no "
                                   f"directory {name} here. Download it on a connected "
                                   f"machine (huggingface-cli download {name} --local-dir DIR), copy DIR here "
                                   "and pass --model DIR; or run `apa tiny-model DIR` for a random test model") \
                        from None
                model, processor = _from_pretrained(name, torch_dtype, device, local_files_only=False)
    except ApaError:
        raise
    except (OSError, ValueError) as e:  # hub and file errors subclass these
        raise _load_error(name, e) from None
    if not str(device).startswith("cuda"):
        model.to(device)
    _check_model_matches_processor(model, processor, name)
    if adapter is not None:
        model = load_adapter(model, adapter)
    model.eval()
    return model, processor


def _check_model_matches_processor(model, processor, name: str) -> None:
    tokenizer = processor.tokenizer
    audio_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    if audio_id != model.config.audio_token_id:
        raise ApaError(f"{name}: the tokenizer's <|AUDIO|> id {audio_id} differs from the model config's "
                       f"audio_token_id {model.config.audio_token_id}; the model and processor do not belong together")
    if len(tokenizer) > model.config.text_config.vocab_size:
        raise ApaError(f"{name}: tokenizer has {len(tokenizer)} tokens but the model only "
                       f"{model.config.text_config.vocab_size}; the model and processor do not belong together")


def load_adapter(model, adapter_dir: str | os.PathLike, is_trainable: bool = False):
    """Wrap ``model`` with a saved LoRA adapter (PeftModel.from_pretrained)."""
    from peft import PeftModel

    path = Path(adapter_dir)
    if not (path / "adapter_config.json").is_file():
        raise ApaError(f"adapter directory {path} has no adapter_config.json; pass --adapter with a "
                       "directory saved by `apa train` (or leave it out to use the base model)")
    try:
        return PeftModel.from_pretrained(model, str(path), is_trainable=is_trainable)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ApaError(f"cannot load adapter {path} onto this model: {_first_line(e)}; "
                       "was it trained on the same base model?") from None


# --------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------

def module_path(model, module) -> str:
    """The dotted name of ``module`` inside ``model`` (as PEFT sees it)."""
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise ValueError("module is not part of the model")


def language_model_path(model) -> str:
    """Dotted path of the text model (``model.language_model`` in transformers 5.17)."""
    inner = getattr(model, "model", model)
    return module_path(model, inner.language_model)


def audio_tower_path(model) -> str:
    inner = getattr(model, "model", model)
    return module_path(model, inner.audio_tower)


def lora_target_regex(model, target_modules: Iterable[str] = LORA_TARGETS, train_audio: bool = False) -> str:
    """A regex PEFT full-matches against module names: the LM's (and optionally the audio
    encoder's) linear layers whose last name is in ``target_modules``."""
    parts = [rf"{re.escape(language_model_path(model))}\..*\.({'|'.join(map(re.escape, target_modules))})"]
    if train_audio:
        parts.append(rf"{re.escape(audio_tower_path(model))}\..*\.({'|'.join(AUDIO_LORA_TARGETS)})")
    return "^(" + "|".join(parts) + ")$"


def add_lora(model, r: int = 8, alpha: int = 16, dropout: float = 0.05,
             target_modules: Iterable[str] = LORA_TARGETS, train_audio: bool = False):
    """Wrap ``model`` in a PeftModel with LoRA on the language model's linear layers.

    With ``train_audio`` the audio encoder's attention and FFN linears get LoRA too; the
    projector never does. Returns the PeftModel (base weights frozen).
    """
    from peft import LoraConfig, get_peft_model

    target_modules = tuple(target_modules)
    pattern = lora_target_regex(model, target_modules, train_audio)
    matched = [n for n, _ in model.named_modules() if re.fullmatch(pattern, n)]
    if not matched:
        raise ApaError(f"LoRA targets {', '.join(target_modules)} match no module of the language model; "
                       "check the names (e.g. q_proj, gate_proj)")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern,
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


# --------------------------------------------------------------------------------------
# Tiny random model
# --------------------------------------------------------------------------------------

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
# Qwen2-Audio's audio front end: 100 mel frames per second; the encoder's stride-2 conv
# halves them (max_source_positions = 50 per second), pooling halves them again (25 audio
# tokens per second). The real model's window is 30 s.
MEL_FRAMES_PER_SECOND = 100
ENCODER_POSITIONS_PER_SECOND = 50
FULL_WINDOW_SECONDS = 30
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


def audio_window_seconds(processor) -> float:
    """The longest clip the processor's feature extractor keeps (longer ones are cut there)."""
    extractor = processor.feature_extractor
    return extractor.n_samples / extractor.sampling_rate


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

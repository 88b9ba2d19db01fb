"""Decoding modes and one batch of decoding: the shared entry of `apa predict`, `score`, `serve`.

A decoder takes (model, processor, batch, utts, task, max_new_tokens) and returns one dict
per row with the response text under "output" and, when the mode computes them, expected
scores under "expected" (a ScoreSet dict). The text is always read back with
apa.targets.parse_scores, the one parser.

- ``free``: plain greedy decoding (apa.inference.free), the paper's decoding and the
  zero-shot row;
- ``constrained``: the reference fixes everything but the score values, the model chooses
  only valid values, with their distribution (apa.inference.constrained).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np

from apa.collate import build_generation_batch, move_to
from apa.data.manifest import Utterance
from apa.errors import ApaError
from apa.tasks import Task

Decoder = Callable[..., list[dict]]


def _free(*args, **kwargs) -> list[dict]:
    from apa.inference.free import free_decode

    return free_decode(*args, **kwargs)


def _constrained(*args, **kwargs) -> list[dict]:
    from apa.inference.constrained import constrained_decode

    return constrained_decode(*args, **kwargs)


DECODERS: dict[str, Decoder] = {"free": _free, "constrained": _constrained}


def resolve_decoding(decoding: str) -> str:
    """``decoding`` if it is a known mode, else an ApaError listing the modes."""
    if decoding not in DECODERS:
        raise ApaError(f"unknown decoding mode {decoding!r}; choose one of: {', '.join(DECODERS)}")
    return decoding


def model_device_dtype(model):
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def _text_model(model):
    """The module every sequential model call goes through: the language model (the
    constrained decoder calls it directly; ``generate`` calls it from the full model)."""
    found = [m for name, m in model.named_modules() if name.split(".")[-1] == "language_model"]
    return found[0] if found else model


@contextmanager
def calling_between(model, between_calls: Callable[[], None] | None) -> Iterator[None]:
    """Run ``between_calls()`` before every call of ``model``'s language model while inside.

    A forward pre-hook rather than an argument of each decoder: it reaches every decoder
    (constrained and free) without changing them, and it fires between model calls, so an
    exception raised there stops a batch within one call. A decoder that learns to report
    its own steps can call the same callback instead."""
    if between_calls is None:
        yield
        return
    handle = _text_model(model).register_forward_pre_hook(lambda module, args: between_calls())
    try:
        yield
    finally:
        handle.remove()


def decode_batch(model, processor, utts: Sequence[Utterance], task: Task,
                 audios: Sequence[np.ndarray] | None = None, max_new_tokens: int | None = None,
                 decoding: str = "free", between_calls: Callable[[], None] | None = None) -> list[dict]:
    """Decoder results for one batch of utterances (all decoded together, left-padded).

    ``between_calls``, when given, runs before each sequential model call (see
    calling_between): it may count calls, wait, or raise to abandon the batch."""
    decoder = DECODERS[resolve_decoding(decoding)]
    batch = build_generation_batch(processor, utts, task, audios=audios)
    device, dtype = model_device_dtype(model)
    batch = move_to(batch, device, dtype)
    with calling_between(model, between_calls):
        return decoder(model, processor, batch, utts, task, max_new_tokens)


def generate_texts(model, processor, utts: Sequence[Utterance], task: Task,
                   audios: Sequence[np.ndarray] | None = None, max_new_tokens: int | None = None,
                   decoding: str = "free") -> list[str]:
    """Response texts only (see decode_batch)."""
    return [d["output"] for d in decode_batch(model, processor, utts, task, audios, max_new_tokens, decoding)]

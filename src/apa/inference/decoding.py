"""Decoding modes and one batch of decoding: the shared entry of `apa predict`, `score`, `serve`.

A decoder takes (model, processor, batch, utts, task, max_new_tokens) and returns one dict
per row with the response text under "output" and, when the mode computes them, expected
scores under "expected" (a ScoreSet dict). The text is always read back with
apa.targets.parse_scores, the one parser.

- ``free``: plain greedy decoding (apa.inference.free), the paper's decoding and the
  zero-shot row;
- ``constrained``: the reference fixes everything but the score values, the model chooses
  only valid values, with their distribution; found in a handful of parallel passes
  (apa.inference.constrained_parallel);
- ``constrained-sequential``: the same values, slot by slot, two model calls per slot
  (apa.inference.constrained_sequential).

Every sequential model call of a batch goes through the backbone's text model once, so a
forward pre-hook there counts the calls (``DecodeStats``) and lets a caller act between them
(``between_calls``: wait for a more urgent batch, or raise to abandon this one).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from apa.collate import build_generation_batch, load_audios, move_to
from apa.data.manifest import Utterance
from apa.errors import ApaError
from apa.tasks import Task

Decoder = Callable[..., list[dict]]


def _free(*args, **kwargs) -> list[dict]:
    from apa.inference.free import free_decode

    return free_decode(*args, **kwargs)


def _constrained(*args, **kwargs) -> list[dict]:
    from apa.inference.constrained_parallel import decode

    return decode(*args, **kwargs)


def _constrained_sequential(*args, **kwargs) -> list[dict]:
    from apa.inference.constrained_sequential import decode

    return decode(*args, **kwargs)


DECODERS: dict[str, Decoder] = {"free": _free, "constrained": _constrained,
                                "constrained-sequential": _constrained_sequential}


def resolve_decoding(decoding: str) -> str:
    """``decoding`` if it is a known mode, else an ApaError listing the modes."""
    if decoding not in DECODERS:
        raise ApaError(f"unknown decoding mode {decoding!r}; choose one of: {', '.join(DECODERS)}")
    return decoding


def model_device_dtype(model):
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


@dataclass
class DecodeStats:
    """What decoding cost: sequential model calls (a prefill and the passes, or one call per
    slot or per token) and token positions processed (padding included), per batch; and per
    row, the calls a row would need alone (when the decoder reports it)."""

    batches: int = 0
    model_calls: int = 0
    calls_per_batch: list[int] = field(default_factory=list)
    tokens_per_batch: list[int] = field(default_factory=list)
    calls_per_row: list[int] = field(default_factory=list)


@contextmanager
def calling_between(model, processor, between_calls: Callable[[], None] | None) -> Iterator[list[int]]:
    """Count the sequential model calls made inside (yields a one-item list that holds the
    count) and run ``between_calls()`` before each. A forward pre-hook on the backbone's text
    model reaches every decoder (constrained and free) without changing them; an exception
    raised there stops a batch within one call."""
    calls = [0, 0]  # model calls, token positions

    def before_call(module, args, kwargs):
        if between_calls is not None:
            between_calls()
        calls[0] += 1
        inputs = kwargs.get("inputs_embeds")
        inputs = inputs if inputs is not None else kwargs.get("input_ids", args[0] if args else None)
        if inputs is not None:
            calls[1] += int(inputs.shape[0]) * int(inputs.shape[1])

    handle = processor.text_model(model).register_forward_pre_hook(before_call, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def decode_batch(model, processor, utts: Sequence[Utterance], task: Task,
                 audios: Sequence[np.ndarray] | None = None, max_new_tokens: int | None = None,
                 decoding: str = "free", between_calls: Callable[[], None] | None = None,
                 stats: DecodeStats | None = None, **decoder_options) -> list[dict]:
    """Decoder results for one batch of utterances (all decoded together, left-padded).

    ``between_calls``, when given, runs before each sequential model call (see
    calling_between): it may wait, or raise to abandon the batch. ``stats`` adds up the
    batch's model calls and tokens. ``decoder_options`` go to the decoder (the parallel
    decoder's ``initial`` guesses). ``model`` may also be an engine that decodes by itself
    (``is_engine``: --engine vllm), which gets the batch as it is."""
    if getattr(model, "is_engine", False):  # another engine that decodes by itself (apa.inference.vllm_engine)
        if between_calls is not None:
            between_calls()  # its steps run inside the engine: the hook runs once, before the batch
        return model.decode(utts, task, audios if audios is not None else load_audios(utts),
                            max_new_tokens=max_new_tokens, decoding=resolve_decoding(decoding), stats=stats)
    decoder = DECODERS[resolve_decoding(decoding)]
    batch = build_generation_batch(processor, utts, task, audios=audios)
    device, dtype = model_device_dtype(model)
    batch = move_to(batch, device, dtype)
    with calling_between(model, processor, between_calls) as calls:
        results = decoder(model, processor, batch, utts, task, max_new_tokens, **decoder_options)
    row_calls = [row.pop("calls") for row in results if "calls" in row]
    if stats is not None:
        stats.batches += 1
        stats.model_calls += calls[0]
        stats.calls_per_batch.append(calls[0])
        stats.tokens_per_batch.append(calls[1])
        stats.calls_per_row += row_calls
    return results


def generate_texts(model, processor, utts: Sequence[Utterance], task: Task,
                   audios: Sequence[np.ndarray] | None = None, max_new_tokens: int | None = None,
                   decoding: str = "free") -> list[str]:
    """Response texts only (see decode_batch)."""
    return [d["output"] for d in decode_batch(model, processor, utts, task, audios, max_new_tokens, decoding)]

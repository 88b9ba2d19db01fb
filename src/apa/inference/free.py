"""Free decoding: plain greedy generation with transformers' ``generate``.

Greedy means greedy: the generation config is built here from nothing, and the
checkpoint's own ``generation_config.json`` is kept out of the call. A released checkpoint
may ship sampling settings, a ``repetition_penalty`` or a ``no_repeat_ngram_size``;
``generate`` fills every field a passed config leaves unset from the model's config, and
"10 10 10" is a repetition, so any such setting would silently bias zero-shot scores.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

from apa.data.manifest import Utterance
from apa.backbones.base import unwrap
from apa.targets import ScoreSet, format_scores
from apa.data.manifest import SCORE_RANGE
from apa.tasks import Task


def widest_scores(utt: Utterance, task: Task) -> ScoreSet:
    """A ScoreSet with the widest value (10) in every field: the longest possible response."""
    top = int(SCORE_RANGE[1])
    return ScoreSet(sentence={a: top for a in task.sentence},
                    words=[{a: top for a in task.word} for _ in utt.words],
                    phones=[[top] * len(w.phones) for w in utt.words])


def default_max_new_tokens(processor, utt: Utterance, task: Task) -> int:
    """Token budget for free decoding: 1.5 x the longest well-formed response + 16, so a
    model that never stops is cut off instead of running forever."""
    text = format_scores(utt, task, widest_scores(utt, task))
    n = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1  # + end of turn
    return int(n * 1.5) + 16


def greedy_generation_config(processor, max_new_tokens: int):
    """Greedy search, one beam, no penalty, no forced or suppressed token; stops at the end
    of the assistant turn (or the tokenizer's end of text)."""
    from transformers import GenerationConfig

    tokenizer = processor.tokenizer
    stop = [processor.end_of_turn_id]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in stop:
        stop.append(tokenizer.eos_token_id)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    # Sampling fields are left unset: with the checkpoint's config kept out of the call
    # (checkpoint_generation_defaults_ignored) they take transformers' defaults, which greedy
    # search never reads; the penalties are neutral by value.
    return GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=int(max_new_tokens), repetition_penalty=1.0,
        encoder_repetition_penalty=1.0, length_penalty=1.0, no_repeat_ngram_size=0,
        encoder_no_repeat_ngram_size=0, renormalize_logits=False, remove_invalid_values=False,
        eos_token_id=stop, pad_token_id=pad, use_cache=True, num_return_sequences=1)


@contextmanager
def checkpoint_generation_defaults_ignored(model) -> Iterator[None]:
    """While inside, ``generate`` sees an empty model generation config, so nothing of the
    checkpoint's (a suppressed token, a forced first token, a penalty) fills our fields."""
    from transformers import GenerationConfig

    inner = unwrap(model)
    saved = inner.generation_config
    inner.generation_config = GenerationConfig()
    try:
        yield
    finally:
        inner.generation_config = saved


def free_decode(model, processor, batch: dict, utts: Sequence[Utterance], task: Task,
                max_new_tokens: int | None = None) -> list[dict]:
    """Plain greedy decoding: the response texts (special tokens dropped, stripped)."""
    import torch

    if max_new_tokens is None:
        max_new_tokens = max(default_max_new_tokens(processor, utt, task) for utt in utts)
    config = greedy_generation_config(processor, max_new_tokens)
    with torch.inference_mode(), checkpoint_generation_defaults_ignored(model):
        sequences = model.generate(**processor.generate_inputs(batch), generation_config=config)
    new_tokens = sequences[:, batch["input_ids"].shape[1]:]
    texts = processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [{"output": t.strip()} for t in texts]

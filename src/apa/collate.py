"""Utterances -> model inputs, for training and generation, through the backbone's processor.

The prompt is the task's instruction (apa.prompts) rendered by the backbone's chat template
(``processor.render``); ``processor.encode`` expands each audio placeholder to the clip's
audio tokens and computes the audio features (one entry per clip under
``processor.clip_keys``).

Training batches are padded on the RIGHT; their labels are -100 everywhere except the
assistant response and its end-of-turn token. The response is tokenized on its own and its
ids appended to the prompt's, so the boundary between prompt and response is exact by
construction (tokenizing prompt and prompt+response separately could merge tokens across
it). Generation batches are padded on the LEFT (the text only: audio features are per clip)
so that every row ends at its prompt's end.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from apa.data.audio import SAMPLE_RATE, load_audio
from apa.data.manifest import Utterance
from apa.prompts import instruction
from apa.targets import format_scores
from apa.tasks import Task

IGNORE_INDEX = -100


def load_audios(utts: Sequence[Utterance]) -> list[np.ndarray]:
    """Decode each utterance's clip (float32 mono 16 kHz)."""
    return [load_audio(utt.audio_path) for utt in utts]


def _audios(utts: Sequence[Utterance], audios: Sequence[np.ndarray] | None) -> list[np.ndarray]:
    if audios is None:
        return load_audios(utts)
    if len(audios) != len(utts):
        raise ValueError(f"{len(audios)} audio arrays for {len(utts)} utterances")
    return [np.asarray(a, dtype=np.float32) for a in audios]


def _warn_if_cut(processor, utts: Sequence[Utterance], audios: list[np.ndarray]) -> None:
    """A processor cuts clips to the model's audio window without a word (30 s for Qwen2-Audio,
    less for the from-scratch models): say so, once per clip."""
    window = processor.audio_window_seconds
    if window is None:
        return
    for utt, audio in zip(utts, audios):
        if len(audio) > window * SAMPLE_RATE and utt.id not in _WARNED:
            _WARNED.add(utt.id)
            warnings.warn(f"{utt.id}: {len(audio) / SAMPLE_RATE:.1f} s clip is cut to the model's "
                          f"{window:.0f} s audio window", stacklevel=3)


_WARNED: set[str] = set()


def prompt_text(processor, task: Task, utt: Utterance) -> str:
    """The full model input text of ``utt`` (before the audio placeholder is expanded)."""
    return processor.render(instruction(task, utt))


def build_generation_batch(processor, utts: Sequence[Utterance], task: Task,
                           audios: Sequence[np.ndarray] | None = None) -> dict:
    """Left-padded prompts with audio: input_ids, attention_mask and the clips' audio entries."""
    texts = [prompt_text(processor, task, utt) for utt in utts]
    audios = _audios(utts, audios)
    _warn_if_cut(processor, utts, audios)
    return processor.encode(texts, audios, padding_side="left")


def response_ids(processor, response: str) -> list[int]:
    """Token ids of an assistant response followed by its end-of-turn token."""
    return list(processor.tokenizer(response, add_special_tokens=False)["input_ids"]) + [processor.end_of_turn_id]


def build_training_batch(processor, utts: Sequence[Utterance], task: Task,
                         targets: Sequence[str] | None = None,
                         audios: Sequence[np.ndarray] | None = None,
                         rejected_targets: Sequence[str] | None = None) -> dict:
    """Right-padded prompt + response (+ end of turn) with labels.

    ``targets`` are the response texts (default: the reference scores of each utterance,
    ``format_scores(utt, task)``). Labels are -100 on the prompt and padding, so the loss
    covers exactly the response and its end token. Keys: input_ids, attention_mask, labels
    and the clips' audio entries (the response positions are ``labels != -100``).

    With ``rejected_targets`` (preference pairs) the batch holds 2B rows, chosen then
    rejected, over the B clips featurised once, and a ``clip_of_row`` tensor maps each row to
    its clip (for apa.forward, which encodes each clip once).
    """
    if targets is None:
        targets = [format_scores(utt, task) for utt in utts]
    if len(targets) != len(utts):
        raise ValueError(f"{len(targets)} targets for {len(utts)} utterances")
    import torch

    audios = _audios(utts, audios)
    _warn_if_cut(processor, utts, audios)
    prompts = processor.encode([prompt_text(processor, task, utt) for utt in utts], audios, padding_side="right")
    pad = processor.pad_token_id
    clip_of_row = list(range(len(utts)))
    if rejected_targets is not None:
        if len(rejected_targets) != len(utts):
            raise ValueError(f"{len(rejected_targets)} rejected targets for {len(utts)} utterances")
        targets = list(targets) + list(rejected_targets)
        clip_of_row += clip_of_row
    rows, labels = [], []
    for target, i in zip(targets, clip_of_row):
        prompt = prompts["input_ids"][i][prompts["attention_mask"][i].bool()].tolist()
        response = response_ids(processor, target)
        rows.append(prompt + response)
        labels.append([IGNORE_INDEX] * len(prompt) + response)
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    label_tensor = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
    for i, (row, label) in enumerate(zip(rows, labels)):
        input_ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, :len(row)] = 1
        label_tensor[i, :len(label)] = torch.tensor(label, dtype=torch.long)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": label_tensor,
             **{key: prompts[key] for key in processor.clip_keys}}
    if rejected_targets is not None:
        batch["clip_of_row"] = torch.tensor(clip_of_row, dtype=torch.long)
    return batch


def move_to(batch: dict, device, dtype=None) -> dict:
    """Move tensors to ``device``; floating-point audio features also to ``dtype``."""
    out = {}
    for key, value in batch.items():
        if hasattr(value, "to"):
            value = value.to(device)
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
        out[key] = value
    return out

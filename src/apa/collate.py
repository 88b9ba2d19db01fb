"""Utterances -> model inputs, for training and generation, through the model's processor.

The processor renders nothing itself: the chat text comes from apa.prompts.prompt_text, the
processor expands ``<|AUDIO|>`` to one token per 40 ms of audio and computes the Whisper
features (always padded to the encoder's window, 30 s = 3000 frames for Qwen2-Audio, with
a ``feature_attention_mask`` marking the real frames).

Training batches are padded on the RIGHT; their labels are -100 everywhere except the
assistant response and its ``<|im_end|>``. The response is tokenized on its own and its ids
appended to the prompt's, so the boundary between prompt and response is exact by
construction (tokenizing prompt and prompt+response separately could merge tokens across
it). Generation batches are padded on the LEFT so that every row ends at its prompt's end.
"""

from __future__ import annotations

import warnings

from typing import Sequence

import numpy as np

from apa.data.audio import SAMPLE_RATE, load_audio
from apa.data.manifest import Utterance
from apa.prompts import END_OF_TURN, prompt_text
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
    """The processor silently cuts clips to the model's audio window (30 s for Qwen2-Audio,
    less for the from-scratch models): say so, once per clip."""
    window = processor.feature_extractor.n_samples
    for utt, audio in zip(utts, audios):
        if len(audio) > window and utt.id not in _WARNED:
            _WARNED.add(utt.id)
            warnings.warn(f"{utt.id}: {len(audio) / SAMPLE_RATE:.1f} s clip is cut to the model's "
                          f"{window / SAMPLE_RATE:.0f} s audio window", stacklevel=3)


_WARNED: set[str] = set()


def _process(processor, texts: list[str], audios: list[np.ndarray], padding_side: str):
    return processor(text=texts, audio=audios, sampling_rate=SAMPLE_RATE, padding=True,
                     padding_side=padding_side, return_tensors="pt")


def pad_token_id(processor) -> int:
    tokenizer = processor.tokenizer
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.convert_tokens_to_ids("<|endoftext|>")


def build_generation_batch(processor, utts: Sequence[Utterance], task: Task,
                           audios: Sequence[np.ndarray] | None = None) -> dict:
    """Left-padded prompts with audio, ready for ``model.generate(**batch)``.

    Keys: input_ids, attention_mask, input_features, feature_attention_mask.
    """
    texts = [prompt_text(task, utt) for utt in utts]
    audios = _audios(utts, audios)
    _warn_if_cut(processor, utts, audios)
    batch = _process(processor, texts, audios, padding_side="left")
    return dict(batch)


def response_ids(processor, response: str) -> list[int]:
    """Token ids of an assistant response followed by its end-of-turn token."""
    return list(processor.tokenizer(response + END_OF_TURN, add_special_tokens=False)["input_ids"])


def build_training_batch(processor, utts: Sequence[Utterance], task: Task,
                         targets: Sequence[str] | None = None,
                         audios: Sequence[np.ndarray] | None = None,
                         rejected_targets: Sequence[str] | None = None) -> dict:
    """Right-padded prompt + response (+ ``<|im_end|>``) with labels, ready for ``model(**batch)``.

    ``targets`` are the response texts (default: the reference scores of each utterance,
    ``format_scores(utt, task)``). Labels are -100 on the prompt and padding, so the loss
    covers exactly the response and its end token. Keys: input_ids, attention_mask, labels,
    input_features, feature_attention_mask (only model inputs; the response positions are
    ``labels != -100``).

    With ``rejected_targets`` (preference pairs) the batch holds 2B rows, chosen then
    rejected, over the B clips featurised once, and a ``clip_of_row`` tensor maps each row to
    its clip (for apa.forward, which encodes each clip once); such a batch is not for the
    stock ``model(**batch)``.
    """
    if targets is None:
        targets = [format_scores(utt, task) for utt in utts]
    if len(targets) != len(utts):
        raise ValueError(f"{len(targets)} targets for {len(utts)} utterances")
    import torch

    audios = _audios(utts, audios)
    _warn_if_cut(processor, utts, audios)
    prompts = _process(processor, [prompt_text(task, utt) for utt in utts], audios, padding_side="right")
    pad = pad_token_id(processor)
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
             "input_features": prompts["input_features"],
             "feature_attention_mask": prompts["feature_attention_mask"]}
    if rejected_targets is not None:
        batch["clip_of_row"] = torch.tensor(clip_of_row, dtype=torch.long)
    return batch


def move_to(batch: dict, device, dtype=None) -> dict:
    """Move tensors to ``device``; floating-point audio features also to ``dtype``."""
    out = {}
    for key, value in batch.items():
        if hasattr(value, "to"):
            value = value.to(device)
            if dtype is not None and key == "input_features":
                value = value.to(dtype)
        out[key] = value
    return out

"""Batches for training and generation (apa.collate)."""

from __future__ import annotations

import pytest
import torch

from apa.collate import IGNORE_INDEX, build_generation_batch, build_training_batch, load_audios
from apa.targets import format_scores
from apa.tasks import TASKS


def test_training_labels_cover_exactly_response_and_end_token(tiny_model, utterances):
    model, processor = tiny_model
    task = TASKS["multi"]
    batch = build_training_batch(processor, utterances, task)
    tokenizer = processor.tokenizer
    pad = tokenizer.pad_token_id
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    for i, utt in enumerate(utterances):
        labels, ids, mask = batch["labels"][i], batch["input_ids"][i], batch["attention_mask"][i]
        kept = labels != IGNORE_INDEX
        assert tokenizer.decode(labels[kept]) == format_scores(utt, task) + processor.end_of_turn
        assert torch.equal(labels[kept], ids[kept])
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # right padding
        assert (ids[n:] == pad).all()
        positions = kept.nonzero().flatten()
        # the response is one contiguous run that ends at the last real token
        assert positions[-1] == n - 1 and len(positions) == positions[-1] - positions[0] + 1
        assert tokenizer.decode(ids[:positions[0]]).endswith("<|im_start|>assistant\n")
    assert (batch["attention_mask"][:, -1] == 0).any()  # lengths differ, so some padding exists


def test_training_prompt_equals_generation_prompt(tiny_processor, utterances):
    task = TASKS["word_accuracy"]
    audios = load_audios(utterances)
    train = build_training_batch(tiny_processor, utterances, task, audios=audios)
    gen = build_generation_batch(tiny_processor, utterances, task, audios=audios)
    for i in range(len(utterances)):
        prompt_len = int((train["labels"][i] == IGNORE_INDEX)[train["attention_mask"][i].bool()].sum())
        train_prompt = train["input_ids"][i][:prompt_len]
        gen_prompt = gen["input_ids"][i][gen["attention_mask"][i].bool()]
        assert torch.equal(train_prompt, gen_prompt)
    assert torch.equal(train["input_features"], gen["input_features"])
    assert torch.equal(train["feature_attention_mask"], gen["feature_attention_mask"])


def test_custom_targets_and_loss(tiny_model, utterances):
    model, processor = tiny_model
    task = TASKS["sentence_fluency"]
    targets = ["Sentence Scores: 3", "Sentence Scores: 10", "Sentence Scores: 7", "x"]
    batch = build_training_batch(processor, utterances, task, targets=targets)
    for i, target in enumerate(targets):
        kept = batch["labels"][i] != IGNORE_INDEX
        assert processor.tokenizer.decode(batch["labels"][i][kept]) == target + processor.end_of_turn
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss) and loss > 0


def test_generation_batch_is_left_padded(tiny_processor, utterances):
    batch = build_generation_batch(tiny_processor, utterances, TASKS["multi"])
    assert set(batch) == {"input_ids", "attention_mask", "input_features", "feature_attention_mask"}
    mask = batch["attention_mask"]
    assert mask[:, -1].all()  # every prompt ends at the last column
    assert not mask[:, 0].all()  # and the shorter ones are padded on the left
    for row, ids in zip(mask, batch["input_ids"]):
        n = int(row.sum())
        assert not row[:len(row) - n].any() and row[len(row) - n:].all()
        assert (ids[:len(row) - n] == tiny_processor.tokenizer.pad_token_id).all()
    tail = tiny_processor.tokenizer.decode(batch["input_ids"][0, -3:])
    assert tail.endswith("<|im_start|>assistant\n")


def test_preloaded_audio_equals_loading(tiny_processor, utterances):
    task = TASKS["sentence_total"]
    a = build_generation_batch(tiny_processor, utterances[:2], task)
    b = build_generation_batch(tiny_processor, utterances[:2], task, audios=load_audios(utterances[:2]))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_clips_longer_than_the_audio_window_are_cut_with_a_warning(utterances, make_sine):
    from apa.backbones.qwen2_audio import Qwen2Audio

    model, processor = Qwen2Audio.make_tiny(window_seconds=1)
    long_clip = make_sine(1.5)
    with pytest.warns(UserWarning, match=r"utt3: 1.5 s clip is cut to the model's 1 s audio window"):
        batch = build_generation_batch(processor, [utterances[2]], TASKS["sentence_total"], audios=[long_clip])
    assert batch["input_features"].shape[-1] == 100  # 1 s of mel frames, what the encoder expects

"""Batched, resumable prediction (apa.inference.predict and `apa predict`)."""

from __future__ import annotations

import json

import pytest

from apa.cli import main
from apa.errors import ApaError
from apa.inference.decoding import generate_texts
from apa.inference.free import default_max_new_tokens
from apa.inference.predict import length_sorted_batches, predict_manifest
from apa.predictions import read_records as read_predictions
from apa.targets import format_scores
from apa.tasks import TASKS




def _records(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_batched_equals_one_by_one(tiny_model, utterances):
    model, processor = tiny_model
    task = TASKS["word_sentence"]
    batched = generate_texts(model, processor, utterances, task, max_new_tokens=12)
    single = [generate_texts(model, processor, [utt], task, max_new_tokens=12)[0] for utt in utterances]
    assert batched == single
    assert all(isinstance(t, str) and t for t in batched)


def test_predict_cli_resumes_without_duplicates(tiny_model_dir, corpus_manifest, utterances, tmp_path, capsys):
    out = tmp_path / "pred.jsonl"
    common = ["predict", "--model", str(tiny_model_dir), "--data", str(corpus_manifest), "--task", "multi",
              "--out", str(out), "--max-new-tokens", "8", "--no-progress"]
    assert main(common + ["--limit", "2", "--batch-size", "2"]) == 0
    first = _records(out)
    assert [r["id"] for r in first] == ["utt1", "utt2"]
    assert main(common + ["--batch-size", "3"]) == 0
    records = _records(out)
    assert [r["id"] for r in records] == [u.id for u in utterances]  # manifest order, no duplicates
    assert records[:2] == first
    for record in records:
        assert set(record) == {"id", "output", "scores", "problems"}
        assert set(record["scores"]) == {"sentence", "words", "phones"}
        assert record["problems"]  # a random model does not write valid score text
    printed = capsys.readouterr().out
    assert "2 predicted, 2 already in" in printed and "parse rate: 0.0% (0/4" in printed


def test_resume_keeps_existing_records_and_repairs_cut_line(tiny_model, utterances, tmp_path):
    model, processor = tiny_model
    task = TASKS["sentence_accuracy"]
    out = tmp_path / "pred.jsonl"
    good = {"id": "utt3", "output": "Sentence Scores: 7", "scores": {}, "problems": []}
    out.write_text(json.dumps(good) + "\n" + '{"id": "utt1", "outp', encoding="utf-8")  # crash mid-line
    summary = predict_manifest(model, processor, utterances, task, out, batch_size=2, max_new_tokens=4,
                               progress=False)
    assert (summary.new, summary.skipped, summary.total, summary.parsed) == (3, 1, 4, 1)
    assert summary.parse_rate == 0.25
    records = read_predictions(out)
    assert [r["id"] for r in records] == ["utt1", "utt2", "utt3", "utt4"]
    assert records[2] == good


def test_reference_target_parses_and_fits_default_budget(tiny_processor, utterances):
    from apa.predictions import prediction_record

    for task in TASKS.values():
        for utt in utterances:
            target = format_scores(utt, task)
            n = len(tiny_processor.tokenizer(target)["input_ids"]) + 1
            assert n + 16 <= default_max_new_tokens(tiny_processor, utt, task) <= 2 * n + 40
            record = prediction_record(utt, task, target)
            assert record["problems"] == []


def test_length_sorted_batches():
    batches = length_sorted_batches([5, 50, 7, 40, 6], batch_size=2)
    assert batches == [[1, 3], [2, 4], [0]]


def test_missing_model_exits_2_with_message(corpus_manifest, tmp_path, capsys):
    code = main(["predict", "--model", str(tmp_path / "absent"), "--data", str(corpus_manifest),
                 "--task", "multi", "--out", str(tmp_path / "p.jsonl")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model directory") and "apa tiny-model" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_unknown_decoding_mode(tiny_model, utterances):
    model, processor = tiny_model
    with pytest.raises(ApaError, match="decoding mode"):
        generate_texts(model, processor, utterances[:1], TASKS["multi"], decoding="beam")


def test_tiny_model_command(tmp_path, capsys):
    assert main(["tiny-model", str(tmp_path / "m"), "--seed", "3"]) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert (tmp_path / "m" / "tokenizer.json").is_file()
    assert "--model" in capsys.readouterr().out


def test_predict_with_adapter(fresh_tiny_model, tiny_model, tiny_model_dir, corpus_manifest, utterances, tmp_path):
    import torch

    from apa.backbones.lora import add_lora

    model, processor = fresh_tiny_model
    peft_model = add_lora(model, processor, r=4, alpha=8)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 1.0)
    peft_model.save_pretrained(tmp_path / "adapter")
    out = tmp_path / "pred.jsonl"
    assert main(["predict", "--model", str(tiny_model_dir), "--adapter", str(tmp_path / "adapter"),
                 "--data", str(corpus_manifest), "--task", "sentence_total", "--out", str(out),
                 "--limit", "1", "--max-new-tokens", "6", "--no-progress"]) == 0
    with_adapter = _records(out)[0]["output"]
    base, processor = tiny_model
    without = generate_texts(base, processor, utterances[:1], TASKS["sentence_total"], max_new_tokens=6)[0]
    assert with_adapter != without


def test_free_decoding_ignores_the_checkpoints_generation_settings(fresh_tiny_model, utterances):
    """Greedy means greedy: sampling and repetition penalties shipped in a checkpoint's
    generation_config.json (which would turn "10 10 10" into something else) change nothing.
    The planted no_repeat_ngram_size=1 forbids any repeated token, so it provably changes what
    generate writes when generate reads it: the clean greedy output repeats tokens."""
    import torch

    from apa.collate import build_generation_batch
    from apa.inference.decoding import decode_batch
    from apa.tasks import TASKS

    model, processor = fresh_tiny_model
    task, new = TASKS["multi"], 24
    clean = [r["output"] for r in decode_batch(model, processor, utterances, task, decoding="free",
                                               max_new_tokens=new)]
    batch = build_generation_batch(processor, utterances, task)
    with torch.no_grad():
        greedy = model.generate(**batch, do_sample=False, max_new_tokens=new)[:, batch["input_ids"].shape[1]:]
    pad = processor.tokenizer.pad_token_id

    def repeats(row) -> bool:  # a token written twice (padding after the end does not count)
        ids = [t for t in row.tolist() if t != pad]
        return len(set(ids)) < len(ids)

    assert any(repeats(row) for row in greedy)  # something for the penalty to forbid
    model.generation_config.repetition_penalty = 5.0
    model.generation_config.no_repeat_ngram_size = 1
    with torch.no_grad():
        penalised = model.generate(**batch, max_new_tokens=new)[:, batch["input_ids"].shape[1]:]
    assert not any(repeats(row) for row in penalised)  # generate reads the checkpoint's settings
    for key, value in dict(do_sample=True, temperature=5.0, top_k=3).items():
        setattr(model.generation_config, key, value)
    again = [r["output"] for r in decode_batch(model, processor, utterances, task, decoding="free",
                                               max_new_tokens=new)]
    assert again == clean

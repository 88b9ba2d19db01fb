from pathlib import Path

import pytest

from apa.errors import ApaError
from apa.tasks import TASKS
from apa.training.config import load_train_config as load_config
from apa.training.data import Source, epoch_batches, epoch_examples
from helpers import bear_utterance

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name.startswith("so762_")], ids=lambda p: p.name)
def test_paper_configs_resolve_to_the_papers_values(path):
    config = load_config(path)
    assert config.model == "Qwen/Qwen2-Audio-7B-Instruct"
    assert config.task in TASKS
    assert (config.lora_r, config.batch_size, config.grad_accum, config.lr) == (8, 1, 8, 1e-4)
    assert (config.warmup_ratio, config.scheduler) == (0.1, "cosine")
    assert config.lora_targets == [] and not config.train_audio  # the backbone's projections
    assert config.epochs == (2 if "plus_custom" in path.name else 3)
    assert config.dtype == "auto"
    # the evidence variants differ from the paper's run in the evidence alone (and where they write)
    assert config.evidence == ("gop" if path.stem.endswith("_gop") else "none")
    if config.method == "simpo":
        assert (config.beta, config.gamma, config.ce_weight, config.simpo_form) == (0.1, 0.5, 0.1, "paper")
    if config.method == "dpo":
        assert config.beta == 0.1
        assert config.task in ("word_accuracy", "sentence_accuracy", "sentence_fluency", "sentence_prosody",
                               "sentence_total")


def test_every_paper_run_has_a_config():
    names = {p.stem for p in CONFIGS}
    expected = {"so762_multi_sft", "so762_multi_simpo", "so762_word_sentence_sft", "so762_word_sentence_simpo"}
    for task in ("word_accuracy", "sentence_accuracy", "sentence_fluency", "sentence_prosody", "sentence_total"):
        expected |= {f"so762_{task}_sft", f"so762_{task}_dpo"}
    assert expected <= names
    assert {"smoke", "smoke_simpo", "smoke_dpo"} <= names


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name.startswith("smoke")], ids=lambda p: p.name)
def test_smoke_configs_parse(path):
    config = load_config(path)
    assert config.model == "runs/tiny-model" and config.limit > 0


def test_overrides_win_and_are_typed(tmp_path):
    config = load_config(CONFIGS[0], ["lr=2e-4", "epochs=1", "method=dpo", "train=x.jsonl"])
    assert config.lr == 2e-4 and config.epochs == 1.0 and config.method == "dpo"
    assert config.train == [{"path": "x.jsonl", "weight": 1.0}]


@pytest.mark.parametrize("overrides, message", [
    (["lr"], "key=value"), (["learning_rate=1"], "unknown config field"), (["method=ppo"], "sft, simpo or dpo"),
    (["task=nope"], "unknown task"), (["train=[]"], "no training data"),
])
def test_bad_configs_say_what_is_wrong(overrides, message):
    with pytest.raises(ApaError, match=message):
        load_config(CONFIGS[0], overrides)


def _corpus(prefix, n, seconds=1.0):
    utts = []
    for i in range(n):
        utt = bear_utterance(f"{prefix}{i:03d}")
        utt.duration = seconds + i % 7
        utts.append(utt)
    return utts


def test_weighted_mixture_and_fresh_draws_each_epoch():
    a, b = _corpus("a", 10), _corpus("b", 20)
    sources = [Source(a, 2.0), Source(b, 0.5)]
    epoch0, epoch1 = epoch_examples(sources, 0, 0), epoch_examples(sources, 0, 1)
    assert len(epoch0) == 2 * 10 + 10
    assert sum(u.id.startswith("a") for u in epoch0) == 20
    assert {u.id for u in epoch0 if u.id.startswith("b")} != {u.id for u in epoch1 if u.id.startswith("b")}
    assert [u.id for u in epoch0] == [u.id for u in epoch_examples(sources, 0, 0)]


def test_length_grouping_reduces_padding_and_keeps_every_example():
    utts = _corpus("u", 64)
    grouped = epoch_batches(utts, 4, seed=1, epoch=0, group_by_length=True)
    plain = epoch_batches(utts, 4, seed=1, epoch=0, group_by_length=False)
    assert sorted(u.id for b in grouped for u in b) == sorted(u.id for u in utts)

    def waste(batches):
        return sum(max(u.duration for u in b) * len(b) - sum(u.duration for u in b) for b in batches)

    assert waste(grouped) < waste(plain) / 2


def test_two_processes_see_the_same_steps_as_one():
    utts = _corpus("u", 32)
    single = epoch_batches(utts, 2, 3, 0, True, grad_accum=4)
    rank0 = epoch_batches(utts, 2, 3, 0, True, grad_accum=2, rank=0, world_size=2)
    rank1 = epoch_batches(utts, 2, 3, 0, True, grad_accum=2, rank=1, world_size=2)
    for step in range(len(single) // 4):
        one = {u.id for b in single[step * 4:(step + 1) * 4] for u in b}
        two = {u.id for b in rank0[step * 2:(step + 1) * 2] + rank1[step * 2:(step + 1) * 2] for u in b}
        assert one == two

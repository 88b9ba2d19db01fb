"""Wrong-text readings (apa.data.wrong_text) and the training option that adds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from apa.data.manifest import Utterance, Word, read_manifest
from apa.data.wrong_text import wrong_text_pairs, wrong_text_reading
from apa.errors import ApaError
from apa.tasks import get_task
from apa.training.data import epoch_examples, load_sources
from helpers import bear_utterance


def _utterance(uid: str, text: str) -> Utterance:
    words = [Word(w, ["AH0"] * (1 + len(w) % 3), {"accuracy": 8, "stress": 10, "total": 8},
                  [9.0] * (1 + len(w) % 3)) for w in text.split()]
    return Utterance(id=uid, audio=f"/clips/{uid}.wav", text=text, words=words, duration=2.0,
                     scores={"accuracy": 8, "fluency": 7, "prosody": 6, "completeness": 10, "total": 8})


TEXTS = ["THE CAT SAT", "A DOG RAN HOME", "THE SUN IS HOT", "BIRDS FLY SOUTH", "WE CALL IT BEAR",
         "MY DAUGHTER READS", "THE RAIN FELL", "OPEN THE DOOR", "GOOD MORNING TEACHER", "ZERO ONE TWO"]


@pytest.fixture
def corpus() -> list[Utterance]:
    return [_utterance(f"{k:09d}", text) for k, text in enumerate(TEXTS * 3)]


def test_a_reading_of_another_text_is_labelled_as_words_not_said():
    clip, other = bear_utterance(), _utterance("000020001", "THE SUN IS HOT")
    pair = wrong_text_reading(clip, other)
    assert pair.id == "000010011~000020001"
    assert pair.text == "THE SUN IS HOT" and [w.text for w in pair.words] == ["THE", "SUN", "IS", "HOT"]
    assert [w.phones for w in pair.words] == [w.phones for w in other.words]
    assert pair.scores == {"accuracy": 0, "fluency": 9, "prosody": 9, "completeness": 0, "total": 0}
    for word in pair.words:
        assert word.scores == {"accuracy": 0, "stress": 5, "total": 0}
        assert word.phone_scores == [0] * len(word.phones)
    assert pair.duration == clip.duration and pair.speaker == clip.speaker
    assert Path(pair.audio).is_absolute()
    assert clip.scores["accuracy"] == 8 and clip.words[0].scores["accuracy"] == 10  # the clip is untouched


def test_pairs_take_the_share_asked_are_deterministic_and_avoid_shared_words(corpus):
    pairs = wrong_text_pairs(corpus, 0.4, seed=3)
    assert len(pairs) == 12
    assert [p.id for p in pairs] == [p.id for p in wrong_text_pairs(corpus, 0.4, seed=3)]
    assert [p.id for p in pairs] != [p.id for p in wrong_text_pairs(corpus, 0.4, seed=4)]
    by_id = {u.id: u for u in corpus}
    for pair in pairs:
        clip_id, text_id = pair.id.split("~")
        assert by_id[clip_id].text != pair.text == by_id[text_id].text
        assert not {w.text for w in by_id[clip_id].words} & {w.text for w in pair.words}
    assert len({p.id.split("~")[0] for p in pairs}) == len(pairs)  # each clip at most once
    assert wrong_text_pairs(corpus, 0.0, seed=0) == []


def test_impossible_shares_and_single_sentence_corpora_are_refused(corpus):
    with pytest.raises(ApaError, match="between 0 and 1"):
        wrong_text_pairs(corpus, 1.5, seed=0)
    with pytest.raises(ApaError, match="two different sentences"):
        wrong_text_pairs([_utterance(f"{k:09d}", "THE CAT SAT") for k in range(4)], 0.5, seed=0)


def test_the_training_option_adds_the_pairs_as_a_source_and_writes_them(tmp_path, corpus):
    from apa.data.manifest import write_manifest

    manifest = tmp_path / "train.jsonl"
    write_manifest(manifest, corpus)
    task = get_task("multi")
    plain = load_sources([{"path": str(manifest)}], task, log=lambda m: None)
    with_pairs = load_sources([{"path": str(manifest)}], task, log=lambda m: None, wrong_text=0.2,
                              wrong_text_manifest=tmp_path / "run" / "wrong_text.jsonl", seed=0)
    assert len(plain) == 1 and len(with_pairs) == 2
    pairs = with_pairs[1].utterances
    assert len(pairs) == 6 and all(p.scores["accuracy"] == 0 for p in pairs)
    # every epoch sees them: the option changes what the model is trained on
    examples = epoch_examples(with_pairs, seed=0, epoch=0)
    assert len(examples) == len(corpus) + 6 and sum("~" in u.id for u in examples) == 6
    written = read_manifest(tmp_path / "run" / "wrong_text.jsonl")  # a valid manifest, the same pairs
    assert [u.to_dict() for u in written] == [p.to_dict() for p in pairs]


def test_the_training_config_refuses_a_share_outside_0_to_1():
    from apa.training.config import TrainConfig

    with pytest.raises(ApaError, match="wrong_text"):
        TrainConfig(wrong_text=2.0).validate()

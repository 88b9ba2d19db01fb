"""The lexicon travels with the model: `apa train` saves the pronunciations of its training
manifests beside the adapter, and `apa score` uses them by default (a model trained on
speechocean762 keeps SO762's phones), before CMUdict, unless --lexicon is given."""

from __future__ import annotations

import json
from pathlib import Path

from apa.cli import main
from apa.data.lexicon import MODEL_LEXICON, corpus_lexicon, read_lexicon


def test_corpus_lexicon_takes_each_words_commonest_phones(utterances):
    lexicon = corpus_lexicon(utterances)
    assert lexicon["BEAR"] == ["B", "EH0", "R"] and lexicon["CALL"] == ["K", "AO0", "L"]


def test_training_saves_the_lexicon_and_scoring_uses_it(tmp_path, tiny_model_dir, corpus_manifest, make_sine,
                                                        write_wav, capsys):
    out = tmp_path / "run"
    config = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    assert main(["train", "--config", str(config), "--no-progress", f"model={tiny_model_dir}",
                 f"train={corpus_manifest}", f"output_dir={out}", "max_steps=1"]) == 0
    saved = read_lexicon(out / "adapter" / MODEL_LEXICON)
    assert saved["BEAR"] == ["B", "EH0", "R"]  # the manifest's phones, not CMUdict's B EH1 R
    capsys.readouterr()
    audio = write_wav(tmp_path / "a.wav", make_sine(1.0))
    common = ["score", "--model", str(tiny_model_dir), "--adapter", str(out / "adapter"), "--audio", str(audio),
              "--text", "We call it bear.", "--device", "cpu", "--dtype", "fp32", "--compact"]
    assert main(common) == 0
    captured = capsys.readouterr()
    assert "the model's training lexicon" in captured.err
    assert json.loads(captured.out)["words"][3]["phones"] == ["B", "EH0", "R"]
    (tmp_path / "mine.txt").write_text("BEAR B EH1 R\n")
    assert main(common + ["--lexicon", str(tmp_path / "mine.txt")]) == 0
    assert json.loads(capsys.readouterr().out)["words"][3]["phones"] == ["B", "EH1", "R"]

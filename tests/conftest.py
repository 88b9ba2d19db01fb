"""Shared fixtures: a tiny random Qwen2-Audio built once per session, sine-wave clips, and a
small scored corpus (manifest + audio) covering every level.

Fixtures
- ``tiny_model_dir`` (session): Path of a tiny model written by apa.backbones.qwen2_audio.Qwen2Audio.build_tiny(seed=0).
- ``tiny_model`` (session): ``(model, processor)`` loaded from it, float32, CPU, eval mode.
  Shared by many tests: do not modify it (no LoRA, no training): use ``fresh_tiny_model``.
- ``tiny_processor`` (session): the processor of ``tiny_model``.
- ``fresh_tiny_model`` (function): a new ``(model, processor)`` copy that a test may modify.
- ``make_sine`` : ``make_sine(seconds, freq=220.0, amplitude=0.3) -> float32 array`` at 16 kHz.
- ``write_wav`` : ``write_wav(path, samples, rate=16000) -> Path`` (16-bit PCM).
- ``corpus_manifest`` (session): Path of manifest.jsonl with 4 scored utterances (clips of
  1.2, 0.6, 2.0 and 0.9 s, different texts), audio beside it.
- ``utterances`` (session): those 4 Utterance records (read_manifest of corpus_manifest).
- ``utterance`` : the first of them ("WE CALL IT BEAR").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

SAMPLE_RATE = 16000


def sine_wave(seconds: float, freq: float = 220.0, amplitude: float = 0.3, rate: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(int(round(seconds * rate)), dtype=np.float64) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_wav(path, samples, rate: int = SAMPLE_RATE) -> Path:
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(samples, dtype=np.float32), rate, subtype="PCM_16")
    return path


# (id, text, phones per word, seconds, freq, sentence scores, word scores, phone scores)
_CORPUS = [
    ("utt1", "WE CALL IT BEAR", ["W IY0", "K AO0 L", "IH0 T", "B EH0 R"], 1.2, 220.0,
     {"accuracy": 8, "fluency": 9, "prosody": 9, "completeness": 10, "total": 8},
     [(10, 10, 10), (10, 10, 10), (10, 10, 10), (6, 10, 6)],
     [[10, 10], [10, 9, 9], [10, 10], [10, 5, 5]]),
    ("utt2", "I LIKE IT", ["AY0", "L AY0 K", "IH0 T"], 0.6, 330.0,
     {"accuracy": 6.5, "fluency": 7, "prosody": 6, "completeness": 10, "total": 6.4},
     [(7, 10, 7), (5.5, 5, 5), (9, 10, 9)],
     [[7], [6, 5, 4], [9, 9]]),
    ("utt3", "MARK IS GOING TO SEE ELEPHANT", ["M AA0 R K", "IH0 Z", "G OW0 IH0 NG", "T UW0", "S IY0",
                                               "EH0 L AH0 F AH0 N T"], 2.0, 180.0,
     {"accuracy": 3, "fluency": 4, "prosody": 4, "completeness": 8.3, "total": 3},
     [(2, 10, 2), (4, 10, 4), (3, 5, 3), (8, 10, 8), (1, 10, 1), (0, 5, 0)],
     [[2, 2, 1, 3], [4, 5], [3, 3, 2, 4], [8, 8], [1, 2], [0, 1, 0, 0, 1, 0, 0]]),
    ("utt4", "THE BOOK", ["DH AH0", "B UH0 K"], 0.9, 440.0,
     {"accuracy": 10, "fluency": 10, "prosody": 9, "completeness": 10, "total": 10},
     [(10, 10, 10), (9, 10, 9)],
     [[10, 10], [9, 9, 10]]),
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from apa.backbones.qwen2_audio import Qwen2Audio

    return Qwen2Audio.build_tiny(tmp_path_factory.mktemp("tiny_model"), seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from apa.backbones.loading import load_model_and_processor

    return load_model_and_processor(tiny_model_dir, dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def tiny_processor(tiny_model):
    return tiny_model[1]


@pytest.fixture
def fresh_tiny_model(tiny_model_dir):
    from apa.backbones.loading import load_model_and_processor

    return load_model_and_processor(tiny_model_dir, dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def make_sine():
    return sine_wave


@pytest.fixture(scope="session")
def write_wav():
    return _write_wav


@pytest.fixture(scope="session")
def corpus_manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    lines = []
    for utt_id, text, phones, seconds, freq, sentence, words, phone_scores in _CORPUS:
        _write_wav(root / "wav" / f"{utt_id}.wav", sine_wave(seconds, freq))
        record = {
            "id": utt_id, "audio": f"wav/{utt_id}.wav", "text": text, "speaker": "s1", "duration": seconds,
            "scores": sentence,
            "words": [{"text": w, "phones": p.split(),
                       "scores": {"accuracy": s[0], "stress": s[1], "total": s[2]}, "phone_scores": ps}
                      for w, p, s, ps in zip(text.split(), phones, words, phone_scores)],
        }
        lines.append(json.dumps(record))
    path = root / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def utterances(corpus_manifest):
    from apa.data.manifest import read_manifest

    return read_manifest(corpus_manifest)


@pytest.fixture
def utterance(utterances):
    return utterances[0]

"""A generated corpus for the offline demo and smoke runs: tones that carry their scores.

Each phone is a short tone whose pitch depends on the phone and whose clarity depends on its
score (a badly pronounced phone is noisier and quieter); pauses between words grow as
fluency drops. Nothing here resembles speech: it exists so that the whole pipeline can run
end to end without any corpus, with labels that are at least learnable from the audio.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from apa.data.audio import SAMPLE_RATE
from apa.data.lexicon import pronounce
from apa.data.manifest import Utterance, Word, write_manifest

SENTENCES = (
    "WE CALL IT BEAR", "I LIKE TO READ BOOKS", "THE WEATHER IS NICE TODAY", "SHE HAS A RED CAR",
    "MY FATHER WORKS IN A BANK", "WHERE IS THE STATION", "HE PLAYS FOOTBALL EVERY DAY",
    "THIS IS MY FAVORITE SONG", "WE WENT TO THE PARK", "PLEASE OPEN THE DOOR",
)


def _tone(phone: str, score: float, rng: np.random.Generator, seconds: float = 0.09) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 180.0 + (zlib.crc32(phone.encode()) % 40) * 15.0
    clarity = score / 10.0
    tone = np.sin(2 * np.pi * pitch * t) * (0.2 + 0.3 * clarity)
    noise = rng.normal(0.0, 0.25 * (1.0 - clarity) + 0.01, size=t.shape)
    envelope = np.minimum(1.0, np.minimum(t, t[::-1]) * 100)
    return (tone + noise) * envelope


def make_utterance(uid: str, text: str, rng: np.random.Generator) -> tuple[Utterance, np.ndarray]:
    skill = rng.uniform(2.0, 10.0)  # one speaker-level ability drives all the scores
    words, pieces = [], []
    fluency = float(np.clip(round(skill + rng.normal(0, 1)), 0, 10))
    for token in text.split():
        phones = pronounce([token])[0]
        phone_scores = [float(np.clip(round(skill + rng.normal(0, 2)), 0, 10)) for _ in phones]
        accuracy = float(np.clip(round(np.mean(phone_scores) + rng.normal(0, 0.5)), 0, 10))
        stress = 10 if rng.random() < 0.9 else 5
        total = float(np.clip(round(0.8 * accuracy + 0.2 * stress), 0, 10))
        words.append(Word(token, phones, {"accuracy": accuracy, "stress": stress, "total": total}, phone_scores))
        pieces += [_tone(p, s, rng) for p, s in zip(phones, phone_scores)]
        pieces.append(np.zeros(int(SAMPLE_RATE * (0.05 + 0.05 * (10 - fluency)))))
    accuracy = float(np.clip(round(np.mean([w.scores["accuracy"] for w in words])), 0, 10))
    prosody = float(np.clip(round(skill + rng.normal(0, 1)), 0, 10))
    total = float(np.clip(round((accuracy + fluency + prosody) / 3), 0, 10))
    samples = np.concatenate([np.zeros(SAMPLE_RATE // 10), *pieces]).astype(np.float32)
    utt = Utterance(id=uid, audio=f"audio/{uid}.wav", text=text, words=words, speaker=f"synth{uid[-2:]}",
                    duration=round(len(samples) / SAMPLE_RATE, 3),
                    scores={"accuracy": accuracy, "fluency": fluency, "prosody": prosody,
                            "completeness": 10, "total": total})
    return utt, samples


def make_synthetic_corpus(out_dir: str | Path, n_train: int = 16, n_test: int = 8, seed: int = 0) -> tuple[Path, Path]:
    """Write OUT/audio/*.wav, OUT/train.jsonl and OUT/test.jsonl; deterministic for a seed."""
    import soundfile as sf

    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for split, n in (("train", n_train), ("test", n_test)):
        utterances = []
        for i in range(n):
            uid = f"{split}{i:04d}"
            utt, samples = make_utterance(uid, SENTENCES[(i + (split == "test") * 3) % len(SENTENCES)], rng)
            sf.write(out / utt.audio, samples, SAMPLE_RATE, subtype="PCM_16")
            utterances.append(utt)
        path = out / f"{split}.jsonl"
        write_manifest(path, utterances)
        paths.append(path)
    return paths[0], paths[1]

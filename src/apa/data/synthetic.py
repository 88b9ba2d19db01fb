"""A generated corpus for the offline demo and smoke runs: clips whose scores can be heard.

Nothing here resembles speech. Each phone is a short tone (its pitch depends on the phone),
and one hidden "skill" per utterance drives both the labels and what the clip sounds like,
so that a model can learn the labels from the audio alone:

- **accuracy** (phone, word, sentence): a phone scored low is buried in noise, and the whole
  clip has a noise floor that rises as skill falls;
- **fluency**: the pauses between words grow as fluency drops (0.03 s to 0.33 s);
- **prosody**: the speaking rate: every tone lasts longer as prosody drops;
- **completeness**: a speaker of low skill skips words (silence where they would be); a
  skipped word scores 0;
- **stress**: a word with correct stress (10) has its first phone louder and longer.

What a model learns from these clips is how noisy, slow, broken up and complete a clip is,
not pronunciation: the demo shows that training, decoding and evaluation work together and
that the model hears the audio. Deterministic for a seed.
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
LEAD_SECONDS = 0.1  # silence before the first word


def _score(value: float) -> float:
    return float(np.clip(round(value), 0, 10))


def _tone(phone: str, score: float, seconds: float, loudness: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 180.0 + (zlib.crc32(phone.encode()) % 40) * 15.0
    clarity = score / 10.0
    tone = np.sin(2 * np.pi * pitch * t) * (0.15 + 0.25 * clarity) * loudness
    noise = rng.normal(0.0, 0.2 * (1.0 - clarity), size=t.shape)
    envelope = np.minimum(1.0, np.minimum(t, t[::-1]) * 100)
    return (tone + noise) * envelope


def make_utterance(uid: str, text: str, rng: np.random.Generator) -> tuple[Utterance, np.ndarray]:
    skill = rng.uniform(0.0, 10.0)  # one hidden ability drives every score and the sound
    fluency = _score(skill + rng.normal(0, 0.7))
    prosody = _score(skill + rng.normal(0, 0.7))
    phone_seconds = 0.06 + 0.004 * (10 - prosody)
    pause_seconds = 0.03 + 0.03 * (10 - fluency)
    skip_chance = max(0.0, 0.35 - 0.07 * skill)  # below skill 5, words may be left out
    words, pieces = [], [np.zeros(int(SAMPLE_RATE * LEAD_SECONDS))]
    spoken = 0
    for token in text.split():
        phones = pronounce([token])[0]
        if rng.random() < skip_chance:
            words.append(Word(token, phones, {"accuracy": 0.0, "stress": 5, "total": 0.0}, [0.0] * len(phones)))
            pieces.append(np.zeros(int(SAMPLE_RATE * phone_seconds * len(phones))))
        else:
            spoken += 1
            phone_scores = [_score(skill + rng.normal(0, 1.2)) for _ in phones]
            accuracy = _score(np.mean(phone_scores) + rng.normal(0, 0.4))
            stress = 10 if rng.random() < 0.8 else 5
            total = _score(0.8 * accuracy + 0.2 * stress)
            words.append(Word(token, phones, {"accuracy": accuracy, "stress": stress, "total": total}, phone_scores))
            for j, (phone, score) in enumerate(zip(phones, phone_scores)):
                emphasis = j == 0 and stress == 10
                pieces.append(_tone(phone, score, phone_seconds * (1.4 if emphasis else 1.0),
                                    1.8 if emphasis else 1.0, rng))
        pieces.append(np.zeros(int(SAMPLE_RATE * pause_seconds)))
    samples = np.concatenate(pieces)
    samples = samples + rng.normal(0.0, 0.004 + 0.012 * (10 - skill) / 10, size=samples.shape)
    samples = (samples / max(1.0, float(np.abs(samples).max()) / 0.9)).astype(np.float32)
    accuracy = _score(np.mean([w.scores["accuracy"] for w in words]))
    completeness = _score(10 * spoken / len(words))
    total = _score((accuracy + fluency + prosody) / 3)
    utt = Utterance(id=uid, audio=f"audio/{uid}.wav", text=text, words=words, speaker=f"synth{uid[-2:]}",
                    duration=round(len(samples) / SAMPLE_RATE, 3),
                    scores={"accuracy": accuracy, "fluency": fluency, "prosody": prosody,
                            "completeness": completeness, "total": total})
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

"""The controls of the real-data proof: which clips fit the window, swapped audio, silence.

- ``swapped``: every utterance's audio is replaced by another random utterance's of the same
  split (a derangement: no clip keeps its own audio): realistic speech carrying no
  information about the labels; the prompt still gives the utterance's own text.
- ``silence``: every clip replaced by near-silence (faint white noise at -54 dBFS, since
  apa.data.audio rightly refuses digital silence; 16-bit FLAC) of exactly the same number of
  samples: how much the duration alone explains.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from apa.data.manifest import Utterance
from apa.errors import ApaError
from apa.files import atomic_write

# Near-silence: white noise at this RMS (-54 dBFS), above apa.data.audio.SILENCE_PEAK at its peaks.
SILENCE_RMS = 2e-3


@dataclass
class WindowFit:
    """Which clips fit the audio window: ``kept`` utterances, and the ids of long clips that
    were left out (``skipped``) or kept to be cut by the processor (``truncated``)."""

    window_seconds: float
    kept: list[Utterance]
    skipped: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)


def clip_seconds(utt: Utterance) -> float:
    if utt.duration is not None:
        return float(utt.duration)
    from apa.data.audio import audio_info

    return audio_info(utt.audio_path)[0]


def fit_to_window(utts: Sequence[Utterance], window_seconds: float, long_clips: str = "skip") -> WindowFit:
    """Count the clips longer than the window; ``long_clips="skip"`` leaves them out (training:
    their labels describe audio the model would not hear), ``"truncate"`` keeps them (test: every
    utterance is scored; the processor keeps the first ``window_seconds``)."""
    if long_clips not in ("skip", "truncate"):
        raise ValueError(f"long_clips must be skip or truncate, not {long_clips!r}")
    fit = WindowFit(window_seconds=float(window_seconds), kept=[])
    for utt in utts:
        if clip_seconds(utt) > window_seconds:
            if long_clips == "skip":
                fit.skipped.append(utt.id)
                continue
            fit.truncated.append(utt.id)
        fit.kept.append(utt)
    return fit


def derangement(n: int, seed: int) -> np.ndarray:
    """A uniformly random permutation of range(n) without fixed points (rejection sampling)."""
    if n < 2:
        raise ApaError(f"cannot swap audio among {n} utterance(s): need at least 2")
    rng = np.random.default_rng([seed, n])
    identity = np.arange(n)
    while True:
        order = rng.permutation(n)
        if not np.any(order == identity):
            return order


def _audio_relative_to(utt: Utterance, folder: Path) -> str:
    return os.path.relpath(utt.audio_path.resolve(), folder.resolve())


def swapped_audio(utts: Sequence[Utterance], seed: int, manifest_dir: str | os.PathLike) -> list[Utterance]:
    """Each utterance with the audio (and duration) of another one of ``utts``: labels, text and
    words stay; ``audio`` is written relative to ``manifest_dir`` (where the manifest goes)."""
    folder = Path(manifest_dir)
    donors = derangement(len(utts), seed)
    return [dataclasses.replace(utt, audio=_audio_relative_to(utts[d], folder), duration=utts[d].duration,
                                base_dir=folder.resolve())
            for utt, d in zip(utts, donors)]


def silence_audio(utts: Sequence[Utterance], audio_dir: str | os.PathLike, manifest_dir: str | os.PathLike,
                  seed: int, rms: float = SILENCE_RMS) -> list[Utterance]:
    """Each utterance with a near-silent clip (white noise at ``rms``) of exactly its clip's
    number of 16 kHz samples, written once as AUDIO_DIR/ID.flac (16-bit FLAC: fast to write
    and read, and exact in length)."""
    import soundfile as sf

    from apa.data.audio import SAMPLE_RATE

    audio_dir, folder = Path(audio_dir), Path(manifest_dir)
    audio_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for utt in utts:
        info = sf.info(str(utt.audio_path))
        n = int(round(info.frames * SAMPLE_RATE / info.samplerate))
        path = audio_dir / f"{utt.id}.flac"
        if not path.is_file() or sf.info(str(path)).frames != n:
            rng = np.random.default_rng([seed, zlib.crc32(utt.id.encode())])
            samples = (rng.standard_normal(n) * rms).astype(np.float32)
            with atomic_write(path, "wb") as f:
                sf.write(f, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        out.append(dataclasses.replace(utt, audio=os.path.relpath(path.resolve(), folder.resolve()),
                                       duration=round(n / SAMPLE_RATE, 4), base_dir=folder.resolve()))
    return out

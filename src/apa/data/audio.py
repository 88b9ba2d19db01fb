"""Audio loading: any accepted format (apa.data.decode), mixed to mono, resampled to 16 kHz,
checked.

Every failure names the file and what to do, so a bad clip in a 5,000-clip corpus is found
at once instead of crashing a training run an hour later, and a bad upload gets a message a
learner can act on. The checks (:func:`check_samples`, :func:`check_clip`): finite samples
within ``MAX_PEAK`` of full scale, at least
``MIN_SECONDS``, at most the caller's ``max_seconds`` (the model's audio window, which only
the caller knows: ``processor.audio_window_seconds`` of apa.backbones.base.Processor), not digital silence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from apa.data.decode import AudioError, decode, probe, too_long_message

SAMPLE_RATE = 16000
# Peak amplitude under which a clip counts as silent (about -60 dBFS).
SILENCE_PEAK = 1e-3
# Shortest clip scored. One short word said alone takes about 0.3 s, and the shortest of
# speechocean762's 5,000 clips is 1.59 s; under 0.2 s there is no word to score, only a click
# or the tail of a tap on the record button.
MIN_SECONDS = 0.2
# The longest clip scored when the model itself has no window (Phi-4-multimodal and
# Granite-Speech would hear an hour).
LONGEST_RECORDING_SECONDS = 60.0
# The longest window of any backbone (Qwen2.5-Omni's processor cuts at 300 s): the most
# `apa score` decodes before the model, and with it the window, is loaded.
LONGEST_WINDOW_SECONDS = 300.0
# Largest sample magnitude accepted, full scale being 1. Integer formats cannot pass 1; a
# float file may, a little, after gain in an editor (+6 dB is 2). Far beyond, the file is
# damaged or written with the wrong scale (a float WAV whose samples reach 1e19 was scored
# 0 everywhere with no problem noted): refused rather than normalised, because a rescaled
# damaged file would get believable scores for audio nobody said.
MAX_PEAK = 2.0
TRUNCATED_NOTE = ("the recording ends early: its file is cut short and only the first {seconds:.1f} s could be "
                  "decoded; if more was said, record or upload it again")


@dataclass
class Clip:
    """Decoded 16 kHz mono samples and what the learner should know about them (``notes``:
    a cut upload), which the result's ``problems`` carry."""

    samples: np.ndarray
    notes: list[str] = field(default_factory=list)


def audio_info(path: str | Path) -> tuple[float, int]:
    """(duration in seconds, sample rate) from the container, without decoding the samples
    (decoded when the container gives no duration)."""
    _check_path(path)
    facts = probe(path, name=f"audio {path}")
    if facts.duration is None:
        samples, rate, _ = decode(path, str(path), None)
        return len(samples) / rate, rate
    if facts.duration <= 0:
        raise AudioError(f"audio {path} is empty (0 samples); record the utterance again", "empty")
    return facts.duration, facts.sample_rate


def audio_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be used as a clip, or None when it opens and has samples."""
    try:
        audio_info(path)
    except AudioError as e:
        return str(e)
    return None


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    if rate == target:
        return samples
    import soxr

    return soxr.resample(samples, rate, target, quality="HQ").astype(np.float32)


def check_samples(samples: np.ndarray, name: str) -> None:
    """Refuse NaN, infinite and out-of-range samples (``MAX_PEAK``)."""
    if not np.isfinite(samples).all():
        raise AudioError(f"{name} holds NaN or infinite samples; it is damaged: export or record it again",
                         "non_finite")
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak > MAX_PEAK:
        raise AudioError(f"{name} has samples up to {peak:.3g} times full scale (at most {MAX_PEAK:g} is "
                         "accepted); it is damaged or wrongly scaled: export it again as 16-bit PCM", "out_of_range")


def to_mono_16k(samples: np.ndarray, rate: int, name: str = "audio") -> np.ndarray:
    """Mix channels to mono and resample to 16 kHz; float32 in [-1, 1]. Non-finite samples
    and out-of-range samples are refused here, before resampling spreads them over the clip."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if samples.size == 0:
        raise AudioError(f"{name} is empty (0 samples); record the utterance again", "empty")
    check_samples(samples, name)
    return resample(samples, rate)


def check_clip(samples: np.ndarray, name: str, max_seconds: float | None = None,
               min_seconds: float = MIN_SECONDS) -> None:
    """Refuse non-finite or out-of-range samples, a clip shorter than ``min_seconds`` or
    longer than ``max_seconds`` (None: no limit here, the processor cuts and warns), and
    silence."""
    check_samples(samples, name)
    seconds = len(samples) / SAMPLE_RATE
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(too_long_message(name, f"{seconds:.1f} s long", max_seconds), "too_long")
    if seconds < min_seconds:
        raise AudioError(f"{name} is {seconds:.2f} s long; at least {min_seconds:g} s is needed: "
                         "record the whole sentence", "too_short")
    if float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise AudioError(f"{name} is silent (peak below -60 dBFS); check the microphone and record again", "silent")


def _check_path(path: str | Path) -> None:
    file = Path(path)
    if file.is_dir():
        raise AudioError(f"{path} is a folder, not an audio file; give the recording's file", "not_a_file")
    if not file.exists():
        raise AudioError(f"audio file {path} does not exist", "not_a_file")
    if file.stat().st_size == 0:
        raise AudioError(f"audio file {path} is empty (0 bytes); record the utterance again", "empty")


def decode_clip(source, name: str, max_seconds: float | None = None, check: bool = True) -> Clip:
    """A file path or the bytes of a file -> a checked 16 kHz mono Clip; with ``max_seconds``,
    no more than that is ever decoded. A cut upload keeps what decoded, with a note."""
    if not isinstance(source, (bytes, bytearray, memoryview)):
        _check_path(source)
    samples, rate, truncated = decode(source, name=name, max_seconds=max_seconds)
    seconds = len(samples) / rate
    samples = to_mono_16k(samples, rate, name=name)
    if check:
        check_clip(samples, name, max_seconds)
    return Clip(samples, [TRUNCATED_NOTE.format(seconds=seconds)] if truncated else [])


def load_audio(path: str | Path, check: bool = True, max_seconds: float | None = None) -> np.ndarray:
    """Read a clip as float32 mono 16 kHz samples; with ``max_seconds``, no more than that is
    ever decoded."""
    return decode_clip(path, f"audio {path}", max_seconds, check).samples


def decode_audio_bytes(data: bytes, name: str = "upload", max_seconds: float | None = None,
                       check: bool = True) -> np.ndarray:
    """Decode an audio file held in memory (an upload, a clip embedded in a dataset); with
    ``max_seconds``, no more than that is ever decoded."""
    return decode_clip(data, name, max_seconds, check).samples

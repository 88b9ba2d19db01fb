"""Audio loading: any accepted format (apa.data.decode, PyAV), mixed to mono, resampled to
16 kHz, checked.

Every failure names the file and what to do, so a bad clip in a 5,000-clip corpus is found
at once instead of crashing a training run an hour later, and a bad upload gets a message a
learner can act on. The checks (:func:`check_clip`): finite samples, at least
``MIN_SECONDS``, at most the caller's ``max_seconds`` (the model's audio window, which only
the caller knows: ``processor.audio_window_seconds`` of apa.backbones.base.Processor), not digital silence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apa.errors import ApaError

SAMPLE_RATE = 16000
# Peak amplitude under which a clip counts as silent (about -60 dBFS).
SILENCE_PEAK = 1e-3
# Shortest clip scored. One short word said alone takes about 0.3 s, and the shortest of
# speechocean762's 5,000 clips is 1.59 s; under 0.2 s there is no word to score, only a click
# or the tail of a tap on the record button.
MIN_SECONDS = 0.2


class AudioError(ApaError):
    """An unusable clip. ``reason`` says which check refused it (format, sample_rate,
    channels, too_long, too_short, empty, silent, non_finite): the service answers 415 for
    ``format`` and counts refusals by reason."""

    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.reason = reason


def audio_info(path: str | Path) -> tuple[float, int]:
    """(duration in seconds, sample rate) from the container, without decoding the samples
    (decoded when the container gives no duration)."""
    from apa.data.decode import probe

    _check_path(path)
    facts = probe(path, name=f"audio {path}")
    if facts.duration is None:
        samples, rate = _decode(path, str(path), None)
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


def check_finite(samples: np.ndarray, name: str) -> None:
    if not np.isfinite(samples).all():
        raise AudioError(f"{name} holds NaN or infinite samples; it is damaged: export or record it again",
                         "non_finite")


def to_mono_16k(samples: np.ndarray, rate: int, name: str = "audio") -> np.ndarray:
    """Mix channels to mono and resample to 16 kHz; float32 in [-1, 1]. Non-finite samples
    are refused here, before resampling spreads a NaN over the whole clip."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if samples.size == 0:
        raise AudioError(f"{name} is empty (0 samples); record the utterance again", "empty")
    check_finite(samples, name)
    return resample(samples, rate)


def check_clip(samples: np.ndarray, name: str, max_seconds: float | None = None,
               min_seconds: float = MIN_SECONDS) -> None:
    """Refuse non-finite samples, a clip shorter than ``min_seconds`` or longer than
    ``max_seconds`` (None: no limit here, the processor cuts and warns), and silence."""
    from apa.data.decode import too_long_message

    check_finite(samples, name)
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


def _decode(source, name: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    from apa.data.decode import decode

    return decode(source, name=name, max_seconds=max_seconds)


def load_audio(path: str | Path, check: bool = True, max_seconds: float | None = None) -> np.ndarray:
    """Read a clip as float32 mono 16 kHz samples; with ``max_seconds``, no more than that is
    ever decoded."""
    _check_path(path)
    samples, rate = _decode(path, f"audio {path}", max_seconds)
    samples = to_mono_16k(samples, rate, name=str(path))
    if check:
        check_clip(samples, str(path), max_seconds)
    return samples


def decode_audio_bytes(data: bytes, name: str = "upload", max_seconds: float | None = None,
                       check: bool = True) -> np.ndarray:
    """Decode an audio file held in memory (an upload, a clip embedded in a dataset); with
    ``max_seconds``, no more than that is ever decoded."""
    samples, rate = _decode(data, name, max_seconds)
    samples = to_mono_16k(samples, rate, name=name)
    if check:
        check_clip(samples, name, max_seconds)
    return samples

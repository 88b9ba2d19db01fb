"""Audio loading: any format libsndfile reads, mixed to mono, resampled to 16 kHz, checked.

Every failure names the file and what to do, so a bad clip in a 5,000-clip corpus is found
at once instead of crashing a training run an hour later.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apa.errors import ApaError

SAMPLE_RATE = 16000
# Peak amplitude under which a clip counts as silent (about -60 dBFS).
SILENCE_PEAK = 1e-3


class AudioError(ApaError):
    pass


def _reason(error: Exception) -> str:
    """libsndfile's message without its trailing full stop (it is followed by the fix)."""
    return str(error).strip().rstrip(".")


def audio_info(path: str | Path) -> tuple[float, int]:
    """(duration in seconds, sample rate) without decoding the samples."""
    import soundfile as sf

    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise AudioError(f"audio file {path} is empty (0 bytes); record the utterance again")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types for unreadable files
        raise AudioError(f"cannot read audio {path}: {_reason(e)}; give a WAV, FLAC, OGG or MP3 file") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(f"audio {path} is empty (0 samples); record the utterance again")
    return info.frames / info.samplerate, info.samplerate


def audio_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be used as a clip, or None when it opens and has samples."""
    if not Path(path).is_file():
        return f"audio file {path} does not exist"
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


def to_mono_16k(samples: np.ndarray, rate: int, name: str = "audio") -> np.ndarray:
    """Mix channels to mono and resample to 16 kHz; float32 in [-1, 1]."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if samples.size == 0:
        raise AudioError(f"{name} is empty (0 samples); record the utterance again")
    return resample(samples, rate)


def check_clip(samples: np.ndarray, name: str, max_seconds: float | None = None) -> None:
    """Refuse a silent clip, and one longer than ``max_seconds`` (the model's audio window,
    which the caller knows; None: no limit here, the processor cuts and warns)."""
    seconds = len(samples) / SAMPLE_RATE
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"{name} is {seconds:.1f} s long; the model hears at most {max_seconds:.0f} s: "
                         "cut it into shorter utterances")
    if float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise AudioError(f"{name} is silent (peak below -60 dBFS); check the microphone and record again")


def load_audio(path: str | Path, check: bool = True, max_seconds: float | None = None) -> np.ndarray:
    """Read a clip as float32 mono 16 kHz samples."""
    import soundfile as sf

    if not Path(path).is_file():
        raise AudioError(f"audio file {path} does not exist; check the manifest's audio path")
    if Path(path).stat().st_size == 0:
        raise AudioError(f"audio file {path} is empty (0 bytes); record the utterance again")
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except Exception as e:
        raise AudioError(f"cannot read audio {path}: {_reason(e)}; give a WAV, FLAC, OGG or MP3 file") from None
    samples = to_mono_16k(samples, rate, name=str(path))
    if check:
        check_clip(samples, str(path), max_seconds)
    return samples


def decode_audio_bytes(data: bytes, name: str = "upload", max_seconds: float | None = None,
                       check: bool = True) -> np.ndarray:
    """Decode an audio file held in memory (an upload, a clip embedded in a dataset)."""
    import io

    import soundfile as sf

    if not data:
        raise AudioError(f"{name} is empty (0 bytes); give the recording's file")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except Exception as e:
        raise AudioError(f"cannot decode {name}: {_reason(e)}; give WAV, FLAC, OGG or MP3") from None
    samples = to_mono_16k(samples, rate, name=name)
    if check:
        check_clip(samples, name, max_seconds)
    return samples

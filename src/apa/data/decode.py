"""Bounded decoding of audio files and uploads: WAV, FLAC, Ogg/Opus, MP3 with libsndfile,
WebM/Opus (Chrome and Firefox recordings) and MP4/AAC (Safari recordings) with PyAV (FFmpeg).

Two decoders behind one function, each for a reason. libsndfile (soundfile) is what every
corpus clip, manifest duration and trained model so far was read with: the formats it reads
stay with it, sample for sample (FFmpeg's Opus decoder differs in the last bits and counts
the pre-skip in durations, which would move every result). It reads none of the browsers'
MediaRecorder formats, which PyAV, one pip wheel with FFmpeg inside, decodes from memory.
Both report the container's facts before any sample is decoded, and both are bounded here
(libsndfile put no bound on what a header asks for: a 20 KB WAV that claimed 1 Hz made soxr
ask for 6 GB).

The bounds, in order:

1. only the listed demuxers (FFmpeg's ``format_whitelist``) and decoders (checked here as
   well: ``codec_whitelist`` does not reach PyAV's own decoder) are opened;
2. from the header, before decoding: a sample rate in [8 kHz, 192 kHz] (below 8 kHz speech
   is unintelligible; above, the sample cap below would stop meaning anything), 1-8
   channels, and a duration that is not clearly over ``max_seconds``;
3. while decoding: decoding stops as soon as more than ``max_seconds`` of samples have come
   out (header durations are hints: MediaRecorder WebM has none, Chromium's is short by
   one block, FFmpeg estimates some from the bit rate), and after ``DECODE_BUDGET_S`` of
   wall time. At most ``max_seconds x rate`` mono float32 samples are ever held (5.8 MB at
   48 kHz for 30 s), whatever the file says.

Channels are mixed to mono while decoding, one block (libsndfile, ``BLOCK_FRAMES``) or one
frame (FFmpeg) at a time, by the mean over channels as training clips always were: all
channels at full rate are never held (an 8-channel 192 kHz FLAC of 29 s was 178 MB of
float32 before the mix; now one 64 Ki-frame block, 2 MiB). The exception is Ogg through
libsndfile, read in one call (it reads Ogg/Opus wrongly in blocks: samples differ after
the first block); Ogg with more than two channels goes to FFmpeg instead, so that one
call holds at most twice the mono samples.

A stream cut short after some audio decoded keeps what decoded (a half-uploaded
recording) and says so (:attr:`Decoded.truncated`: the result carries a problem). Every
failure is an :class:`AudioError` whose message names the input and the format problem:
FFmpeg's or libsndfile's reason, never an errno or an object's repr.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np

from apa.errors import ApaError

MIN_RATE = 8000
MAX_RATE = 192000
MAX_CHANNELS = 8
DECODE_BUDGET_S = 10.0  # a 30 s clip decodes in well under 0.3 s; a file that takes longer is hostile
BLOCK_FRAMES = 65536  # frames libsndfile reads per block before the mix to mono
ACCEPTED = "WAV, FLAC, Ogg/Opus, MP3, WebM/Opus or MP4/AAC"

FORMATS = "wav,flac,ogg,mp3,matroska,webm,mov,mp4,m4a,aac"
CODECS = frozenset(("pcm_s16le pcm_s24le pcm_s32le pcm_f32le pcm_f64le pcm_u8 pcm_s16be pcm_s24be pcm_mulaw "
                    "pcm_alaw flac opus libopus vorbis mp3 mp3float aac aac_fixed alac").split())
# Probing reads at most this much before the stream facts are known (FFmpeg's defaults are 5 MB / 5 s).
_OPEN_OPTIONS = {"format_whitelist": FORMATS, "codec_whitelist": ",".join(sorted(CODECS)),
                 "probesize": "1000000", "analyzeduration": "2000000"}

Source = Union[bytes, str, Path]


class AudioError(ApaError):
    """An unusable clip. ``reason`` says which check refused it (format, sample_rate,
    channels, too_long, too_short, empty, silent, non_finite, out_of_range, not_a_file,
    unreadable): the service answers 415 for ``format``, 422 for the others, and uses the
    reason as the answer's machine-readable code."""

    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.reason = reason


class Decoded(NamedTuple):
    """Mono float32 samples at ``rate``; ``truncated`` when the stream ended in the middle
    (a cut upload) and what came before was kept."""

    samples: np.ndarray
    rate: int
    truncated: bool = False


@dataclass(frozen=True)
class AudioFacts:
    """What the container says, before decoding."""

    container: str           # FFmpeg demuxer, e.g. "matroska,webm"
    codec: str               # e.g. "opus"
    sample_rate: int
    channels: int
    duration: float | None   # seconds; None when the container does not say (MediaRecorder WebM)
    exact: bool              # the duration comes from the stream (sample-accurate), not an estimate


def _error(message: str, reason: str = "format") -> AudioError:
    return AudioError(message, reason)


def ffmpeg_reason(error: Exception) -> str:
    """FFmpeg's reason in lower case, without errno, file name or object reprs."""
    import av

    if isinstance(error, av.error.FFmpegError) or isinstance(error, OSError):
        reason = getattr(error, "strerror", None) or "invalid data"
    else:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return reason.rstrip(".").lower()


def _open(source: Source, name: str):
    import av

    in_memory = isinstance(source, (bytes, bytearray, memoryview))
    if in_memory:
        if not len(source):
            raise _error(f"{name} is empty (0 bytes); record the utterance again", "empty")
        target = io.BytesIO(source)
    else:
        target = str(source)
    verb = "decode" if in_memory else "read"
    try:
        return av.open(target, mode="r", options=_OPEN_OPTIONS, metadata_errors="replace")
    except av.error.ArgumentError:  # EINVAL from avformat_open_input: a demuxer not in FORMATS
        raise _error(f"{name} is not in an accepted format; give {ACCEPTED}") from None
    except PermissionError:
        raise _error(f"cannot read {name}: permission denied; check the file's permissions", "unreadable") from None
    except Exception as e:  # InvalidDataError, EOFError, ...
        raise _error(f"cannot {verb} {name}: {ffmpeg_reason(e)}; give {ACCEPTED}") from None


def _facts(container, name: str) -> AudioFacts:
    if not container.streams.audio:
        raise _error(f"{name} has no audio track; give {ACCEPTED}")
    stream = container.streams.audio[0]
    context = stream.codec_context
    if context is None:  # FFmpeg found a stream but no decoder for it (an unknown WAV format tag)
        raise _error(f"{name} holds audio in an unknown encoding; give {ACCEPTED}")
    rate = int(context.sample_rate or stream.rate or 0)
    channels = int(context.channels or 0)
    if stream.duration and stream.time_base is not None and stream.duration > 0:
        duration, exact = float(stream.duration * stream.time_base), True
    elif container.duration and container.duration > 0:
        duration, exact = container.duration / 1_000_000, False  # AV_TIME_BASE
    else:
        duration, exact = None, False
    return AudioFacts(container.format.name, context.name, rate, channels, duration, exact)


def _check_facts(facts: AudioFacts, name: str, max_seconds: float | None, codec_checked: bool = False) -> None:
    if not codec_checked and facts.codec not in CODECS:
        raise _error(f"{name} uses the {facts.codec} codec, which is not accepted; give {ACCEPTED}")
    if facts.sample_rate < MIN_RATE:
        raise _error(f"{name} has a sample rate of {facts.sample_rate} Hz; at least {MIN_RATE} Hz is needed: "
                     "record at 16 kHz or more", "sample_rate")
    if facts.sample_rate > MAX_RATE:
        raise _error(f"{name} has a sample rate of {facts.sample_rate} Hz; at most {MAX_RATE} Hz is accepted", "sample_rate")
    if not 1 <= facts.channels <= MAX_CHANNELS:
        raise _error(f"{name} declares {facts.channels} channels; give a mono or stereo recording", "channels")
    if max_seconds is None or facts.duration is None:
        return
    # An estimate may be off by a lot (bit-rate guesses); a stream's own duration by a codec
    # delay (Opus pre-skip: 6.5 ms).
    slack = 0.1 if facts.exact else 0.5 * max_seconds
    if facts.duration > max_seconds + slack:
        raise _error(too_long_message(name, f"{facts.duration:.1f} s long", max_seconds), "too_long")


def too_long_message(name: str, length: str, max_seconds: float) -> str:
    return f"{name} is {length}; the model hears at most {max_seconds:g} s: cut it into shorter utterances"


_WAV_BITS = {"PCM_U8": 8, "PCM_S8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32, "DOUBLE": 64,
             "ULAW": 8, "ALAW": 8}
_SCALE = {"u8": None, "s16": 1 / 32768, "s32": 1 / 2147483648, "s64": 1 / 9223372036854775808,
          "flt": 1.0, "dbl": 1.0}


def _frame_to_mono(frame) -> np.ndarray:
    """float32 mono samples of one decoded frame, any sample format, planar or packed.
    By hand, not av.AudioResampler: a filter graph per frame cost 0.3 ms each (266 ms vs
    158 ms for 30 s of Opus), and swresample's downmix is not the mean training uses."""
    fmt = frame.format.name
    base = fmt[:-1] if fmt.endswith("p") else fmt
    samples = frame.to_ndarray()  # planar: (channels, n); packed: (1, n * channels)
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        samples = samples.reshape(-1, channels).T
    if base == "u8":
        samples = (samples.astype(np.float32) - 128.0) / 128.0
    elif _SCALE[base] != 1.0:
        samples = samples.astype(np.float32) * np.float32(_SCALE[base])
    return samples.mean(axis=0, dtype=np.float32) if samples.shape[0] > 1 \
        else np.ascontiguousarray(samples[0], dtype=np.float32)


def _open_libsndfile(source: Source):
    """A soundfile.SoundFile when libsndfile reads this format, else None (FFmpeg's turn)."""
    import soundfile as sf

    try:
        sound = sf.SoundFile(io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview))
                             else str(source))
    except Exception:  # libsndfile's own error names an object repr; FFmpeg's reason is given instead
        return None
    if not sound.subtype or not sound.format:  # a header libsndfile half understands: FFmpeg decides
        sound.close()
        return None
    return sound


def _libsndfile_facts(sound) -> AudioFacts:
    # libsndfile gives the exact frame count from the header; 0 or a huge count: not said.
    frames = sound.frames if 0 < sound.frames < 2**62 else None
    duration = None if frames is None or not sound.samplerate else frames / sound.samplerate
    return AudioFacts(sound.format.lower(), sound.subtype.lower(), int(sound.samplerate), int(sound.channels),
                      duration, True)


def _riff_cut_short(source: Source, sound, frames: int) -> bool:
    """A WAV whose data chunk declares more frames than the file holds (libsndfile counts
    what is there, so a cut upload looks whole)."""
    if sound.format != "WAV":
        return False
    import struct

    if isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(source[:4096])
    else:
        with open(source, "rb") as file:
            head = file.read(4096)
    at = head.find(b"data", 12)
    if at < 0 or at + 8 > len(head):
        return False
    declared = struct.unpack("<I", head[at + 4:at + 8])[0]
    frame_bytes = max(1, sound.channels * (_WAV_BITS.get(sound.subtype, 16) // 8))
    return declared not in (0, 0xFFFFFFFF) and frames < declared // frame_bytes


def _decode_libsndfile(source: Source, sound, facts: AudioFacts, name: str,
                       max_seconds: float | None) -> Decoded | None:
    """The header's frame count (bounded by max_seconds in _check_facts), read in blocks that
    are mixed to mono at once; Ogg in one read (the module docstring). None when libsndfile
    fails in the middle (a truncated FLAC loses sync on the whole block): FFmpeg's turn."""
    _check_facts(facts, name, max_seconds, codec_checked=True)
    block = sound.frames if facts.container == "ogg" else BLOCK_FRAMES
    mono = np.empty(sound.frames, dtype=np.float32)  # the one copy held: no list of blocks to concatenate
    held = 0
    truncated = False
    while held < sound.frames:
        try:
            samples = sound.read(frames=min(block, sound.frames - held), dtype="float32", always_2d=True)
        except Exception:  # a cut or damaged stream: FFmpeg keeps what decodes before the damage
            return None
        if not len(samples):  # the data ended before the header's count: a cut upload
            truncated = held > 0
            break
        if samples.shape[1] > 1:
            np.mean(samples, axis=1, dtype=np.float32, out=mono[held:held + len(samples)])
        else:
            mono[held:held + len(samples)] = samples[:, 0]
        held += len(samples)
        del samples
    if not held:
        raise _error(f"{name} is empty (0 samples); record the utterance again", "empty")
    truncated = truncated or _riff_cut_short(source, sound, held)
    return Decoded(mono[:held] if held < len(mono) else mono, facts.sample_rate, truncated)


def probe(source: Source, name: str = "audio") -> AudioFacts:
    """The container's facts (rate, channels, duration when it says), nothing decoded."""
    sound = _open_libsndfile(source)
    if sound is not None:
        with sound:
            return _libsndfile_facts(sound)
    with _open(source, name) as container:
        return _facts(container, name)


def _decode_frames(container, facts: AudioFacts, name: str, limit: int | None) -> tuple[list[np.ndarray], str]:
    """(chunks, problem): the problem is returned, not raised, so that the chunks are
    dropped before the caller raises (a traceback would keep them alive until the garbage
    collector runs). The problem "truncated" keeps the chunks."""
    import av

    stream = container.streams.audio[0]
    stream.codec_context.thread_count = 1  # the model and other requests need the cores
    chunks: list[np.ndarray] = []
    held = 0
    deadline = time.monotonic() + DECODE_BUDGET_S
    try:
        for frame in container.decode(stream):
            if frame.sample_rate != facts.sample_rate:
                return [], (f"{name} changes sample rate in the middle ({facts.sample_rate} -> "
                            f"{frame.sample_rate} Hz); give one recording")
            mono = _frame_to_mono(frame)
            chunks.append(mono)
            held += mono.size
            if limit is not None and held > limit:
                return [], "too long"
            if time.monotonic() > deadline:
                return [], f"{name} took more than {DECODE_BUDGET_S:g} s to decode; give {ACCEPTED}"
    except (av.error.FFmpegError, EOFError) as e:
        if not chunks:
            return [], f"cannot decode {name}: {ffmpeg_reason(e)}; give {ACCEPTED}"
        return chunks, "truncated"  # an upload cut short: keep what decoded, and say so
    except Exception as e:
        return [], f"cannot decode {name}: {ffmpeg_reason(e)}; give {ACCEPTED}"
    return chunks, ""


def decode(source: Source, name: str = "audio", max_seconds: float | None = None) -> Decoded:
    """Mono float32 samples and their rate from a file path or the bytes of a file; never more
    than ``max_seconds`` of samples are decoded (None: no cap, for trusted corpus files)."""
    sound = _open_libsndfile(source)
    if sound is not None:
        with sound:
            facts = _libsndfile_facts(sound)
            # FFmpeg, frame by frame: a header that does not say how long, or Ogg with many channels
            if facts.duration is not None and not (facts.container == "ogg" and facts.channels > 2):
                decoded = _decode_libsndfile(source, sound, facts, name, max_seconds)
                if decoded is not None:
                    return decoded
    container = _open(source, name)
    try:
        facts = _facts(container, name)
        _check_facts(facts, name, max_seconds)
        limit = None if max_seconds is None else int(max_seconds * facts.sample_rate)
        chunks, problem = _decode_frames(container, facts, name, limit)
    finally:
        container.close()
    if problem == "too long":
        raise _error(too_long_message(name, f"longer than {max_seconds:g} s", max_seconds), "too_long")
    if problem and problem != "truncated":
        raise _error(problem)
    if not chunks:
        raise _error(f"{name} is empty (0 samples); record the utterance again", "empty")
    samples = np.concatenate(chunks)
    del chunks
    # a stream that ends well before the duration its header gives was cut (an exact duration
    # may differ by a codec delay; an estimate by a lot)
    short = facts.duration is not None and facts.exact and len(samples) / facts.sample_rate < facts.duration - 0.25
    return Decoded(samples, facts.sample_rate, problem == "truncated" or short)

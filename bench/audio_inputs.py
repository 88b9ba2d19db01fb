"""Audio files built in memory for the decoder's tests and benchmark: one recording per
accepted format (as browsers and phones write them) and hostile files (lying headers)."""

from __future__ import annotations

import io
import struct

import numpy as np

RATE = 48000


def speech_like(seconds: float = 2.5, rate: int = RATE) -> np.ndarray:
    """(2, n) float32: harmonics under a syllable-rate envelope, a chirp, noise bursts; L != R."""
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(0)
    phase = 2 * np.pi * np.cumsum(140 + 40 * np.sin(2 * np.pi * 0.7 * t)) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12)) * (1 + np.sin(2 * np.pi * 3.1 * t)) ** 2 / 8
    left = 0.35 * voiced + rng.standard_normal(t.size) * ((t % 0.6) < 0.08) * 0.1
    right = 0.35 * voiced + 0.1 * np.sin(2 * np.pi * (300 * t + 600 * t ** 2))
    return (np.stack([left, right]) * 0.8).astype(np.float32)


class _Stream(io.RawIOBase):
    """A write-only sink like a network stream: a muxer cannot go back to write a duration
    (what MediaRecorder produces)."""

    def __init__(self):
        self.data = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.data += bytes(b)
        return len(b)


def encode(samples: np.ndarray, fmt: str, codec: str, rate: int, layout: str = "stereo", bit_rate: int | None = None,
           container_options: dict | None = None, live: bool = False) -> bytes:
    """``samples`` (2, n) at 48 kHz encoded with PyAV."""
    import av

    sink = _Stream() if live else io.BytesIO()
    with av.open(sink, "w", format=fmt, container_options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        if bit_rate:
            stream.bit_rate = bit_rate
        channels = samples[:1] if layout == "mono" else samples[:2]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(channels), format="fltp", layout=layout)
        frame.sample_rate = RATE
        context = stream.codec_context
        resampler = av.AudioResampler(format=context.format.name, layout=layout, rate=rate,
                                      frame_size=context.frame_size or 1024)
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(piece):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return bytes(sink.data) if live else sink.getvalue()


# name -> (container, codec, rate, layout, bit rate, container options, written live)
FORMATS = {
    "wav": ("wav", "pcm_s16le", 44100, "stereo", None, None, False),
    "flac": ("flac", "flac", 44100, "stereo", None, None, False),
    "ogg_opus": ("ogg", "libopus", 48000, "mono", 32000, None, False),
    "mp3": ("mp3", "libmp3lame", 44100, "stereo", 128000, None, False),
    "webm_opus": ("webm", "libopus", 48000, "stereo", 64000, None, False),
    "webm_opus_live": ("webm", "libopus", 48000, "mono", 32000, {"live": "1"}, True),  # Chrome, Firefox
    "mp4_aac": ("mp4", "aac", 48000, "mono", 64000, None, False),
    "mp4_aac_fragmented": ("mp4", "aac", 48000, "mono", 64000,  # Safari
                           {"movflags": "frag_keyframe+empty_moov+default_base_moof"}, True),
}


def recording(name: str, seconds: float = 2.5) -> bytes:
    fmt, codec, rate, layout, bit_rate, options, live = FORMATS[name]
    return encode(speech_like(seconds), fmt, codec, rate, layout, bit_rate, options, live)


def wav_header(rate: int, channels: int = 1, bits: int = 16, data_bytes: int = 0) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return (b"RIFF" + struct.pack("<I", (36 + data_bytes) & 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", 16)
            + fmt + b"data" + struct.pack("<I", data_bytes & 0xFFFFFFFF))


def wav_claiming_rate(rate: int, seconds_at_16k: float = 0.6) -> bytes:
    """A 16-bit mono WAV whose header claims ``rate`` (1 Hz: a 20 KB file holds "5 hours")."""
    n = int(16000 * seconds_at_16k)
    body = (np.sin(2 * np.pi * 220 * np.arange(n) / 16000) * 8000).astype("<i2").tobytes()
    return wav_header(rate, data_bytes=len(body)) + body


def flac_silence(seconds: int, rate: int = 16000) -> bytes:
    """``seconds`` of digital silence in FLAC: an hour takes about 650 KB."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        block = 4096
        zeros = np.zeros((1, block), dtype=np.int16)
        for i in range(seconds * rate // block):
            frame = av.AudioFrame.from_ndarray(zeros, format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = i * block
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def without_length(flac: bytes) -> bytes:
    """The FLAC with STREAMINFO's total-samples field zeroed: "length unknown"."""
    data = bytearray(flac)
    data[8 + 13] &= 0xF0
    data[8 + 14:8 + 18] = b"\0\0\0\0"
    return bytes(data)


def float_wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(samples, dtype=np.float32), rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def hostile_files() -> dict[str, bytes]:
    """The uploads that made the old decoder hold hundreds of MB."""
    return {"wav_rate_1hz": wav_claiming_rate(1), "wav_rate_2ghz": wav_claiming_rate(2_000_000_000),
            "flac_1h_silence": flac_silence(3600), "flac_1h_no_length": without_length(flac_silence(3600))}


def multichannel_flac(channels: int = 8, rate: int = 192000, seconds: float = 29.0) -> bytes:
    """A quiet 10 Hz square wave on every channel at a high rate: about 50 KB (FLAC stores a
    constant block in a few bytes) that decode to 178 MB of float32 when every channel is held
    at full rate (issue 17: 8 x 192 kHz x 29 s)."""
    import soundfile as sf

    n = int(rate * seconds)
    tone = np.where((np.arange(n) // (rate // 20)) % 2 == 0, 100, -100).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, np.repeat(tone[:, None], channels, axis=1), rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def wav_with_format(tag: int = 1, bits: int = 16) -> bytes:
    """A WAV whose fmt chunk names format ``tag`` and ``bits`` per sample (0x1234: no such
    format; bits 0: no sample size)."""
    body = (np.sin(2 * np.pi * 220 * np.arange(16000) / 16000) * 8000).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", tag, 1, 16000, 32000, 2, bits)
    return (b"RIFF" + struct.pack("<I", 36 + len(body)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", len(body)) + body)


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first ``keep`` of a file: an upload cut short."""
    return data[:int(len(data) * keep)]


def speech_flac(seconds: float = 2.5, rate: int = 16000) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, speech_like(seconds, rate)[0], rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()

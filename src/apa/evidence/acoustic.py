"""Acoustic evidence of one utterance from a pretrained acoustic model: where each reference
phone was said, and how much it sounds like that phone (Goodness of Pronunciation, GOP).

The model is the US-English continuous-density HMM that the ``pocketsphinx`` wheel ships
(``pocketsphinx/model/en-us/en-us``, trained on broadcast and read English in the 2010s): no
download at run time, about 0.04 CPU-seconds per second of audio. Three passes over the clip:

1. word alignment of the reference (each word added to the decoder's dictionary under a
   name made of its phones, so the aligned phones map one to one onto the scored phones);
2. phone alignment of that word alignment (phone start, frames and acoustic score);
3. a free phone loop over the same frames, context-independent, without a phone language
   model (the phone-LM loop gives positive scores, and the context-dependent loop is 175
   times slower).

GOP of a phone = (forced score - free-loop score over the same frames) / frames, in the
model's score units (log base 1.0001, as pocketsphinx reports scores) per 10 ms frame: 0 when the reference phone is what the recogniser hears best,
more negative the less it sounds like it. ``match`` is the share of the phone's frames where
the free loop hears that very phone. Word and utterance figures (start and end times,
speaking rate, pauses) come from the same alignment.

Facts about the pocketsphinx 5 API this relies on (each cost time to find):
- ``bestpath=False``: with the default, about a quarter of speechocean762's clips fail with
  "Alignment failed in frame N";
- alignment entries are read while iterating (words, then their phones) and copied into
  plain values at once: keeping the entry objects and reading them later crashes;
- segment scores of ``seg()`` are probabilities in the model's log base (1.0001), phone
  scores of ``get_alignment()`` are already in that log base.

An alignment can still fail (a clip far from its text, noise only): the utterance is then
marked ``aligned: false``, its phones get no GOP, and its figures come from the free loop,
so that it is still scored (by the model, without per-phone evidence).
"""

from __future__ import annotations

import math
import os
import re
import threading
from typing import Any, Sequence

import numpy as np

from apa.errors import ApaError

NAME = "gop"
# Version of the evidence record: bump when what is computed (not only how) changes, so that
# stored evidence is recomputed instead of silently mixed with the new kind.
VERSION = 1
FRAMES_PER_SECOND = 100
SAMPLE_RATE = 16000
# A silence between two words shorter than this is the normal closure between them, not a pause.
PAUSE_SECONDS = 0.2
_LOG_BASE = 1.0001  # pocketsphinx's logmath base for these models
_SILENCES = {"SIL", "<sil>", "<s>", "</s>", "+NSN+", "+SPN+"}


def _model_paths() -> dict[str, str]:
    try:
        from pocketsphinx import get_model_path
    except ImportError:
        raise ApaError("acoustic evidence needs pocketsphinx (pip install pocketsphinx==5.1.1; it is one of "
                       "apa's dependencies: reinstall apa with `pip install -e .`)") from None
    root = get_model_path()
    return {"hmm": os.path.join(root, "en-us", "en-us"), "dict": os.path.join(root, "en-us", "cmudict-en-us.dict")}


def sphinx_phone(phone: str) -> str:
    """ARPAbet with stress (AH0) -> the acoustic model's phone (AH)."""
    return re.sub(r"\d", "", phone).upper()


class AcousticModel:
    """One pocketsphinx decoder (loaded once, about 0.1 s), used for one clip at a time."""

    def __init__(self, context_dependent_loop: bool = False):
        """``context_dependent_loop``: the free loop over triphones (about 175 times slower, for
        bench/evidence_cost.py's comparison; the scores apa uses come from the default)."""
        from pocketsphinx import Decoder

        paths = _model_paths()
        self._decoder = Decoder(hmm=paths["hmm"], dict=paths["dict"], bestpath=False, loglevel="FATAL", lm=None,
                                allphone_ci=not context_dependent_loop)
        self._decoder.add_allphone_file("apa_phone_loop", None)  # free loop, no phone language model
        self._lock = threading.Lock()  # a decoder is not reentrant (the service scores from threads)

    def _word_name(self, phones: Sequence[str]) -> str:
        """Dictionary name of a word said with exactly ``phones`` (added on first use)."""
        name = "apa_" + "_".join(p.lower() for p in phones)
        if self._decoder.lookup_word(name) is None:
            try:
                self._decoder.add_word(name, " ".join(phones), True)
            except RuntimeError:  # a phone the model does not have
                raise ApaError(f"the pronunciation {' '.join(phones)!r} has a phone that is not in the acoustic "
                               "model's ARPAbet set; fix that lexicon entry") from None
        return name

    def _decode(self, pcm: bytes) -> None:
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()

    def evidence(self, audio: np.ndarray, word_phones: Sequence[Sequence[str]]) -> dict[str, Any]:
        """The evidence record of one clip (16 kHz mono float) read against ``word_phones``
        (ARPAbet per word, stress digits allowed). See the module docstring."""
        if len(audio) == 0:
            raise ApaError("acoustic evidence of an empty clip")
        pcm = (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2").tobytes()
        phones = [[sphinx_phone(p) for p in word] for word in word_phones]
        with self._lock:
            names = [self._word_name(word) for word in phones]
            loop = self._phone_loop(pcm)
            aligned = self._align(pcm, names)
        return build_record(phones, aligned, loop, seconds=len(audio) / SAMPLE_RATE)

    def _phone_loop(self, pcm: bytes) -> list[tuple[str, float]]:
        """The free loop's (phone, log score) in every frame: a segment's score spread evenly
        over its frames, so that any span of frames can be compared with the forced phones."""
        self._decoder.activate_search("apa_phone_loop")
        self._decode(pcm)
        frames: list[tuple[str, float]] = []
        for seg in self._decoder.seg() or ():  # None when nothing was recognised
            n = seg.end_frame - seg.start_frame + 1
            frames += [(seg.word, _log_prob(seg.ascore) / n)] * n
        return frames

    def _align(self, pcm: bytes, names: list[str]) -> list[list[tuple[int, int, float]]] | None:
        """(start frame, frames, log score) of every phone of every word, or None if it fails."""
        try:
            self._decoder.set_align_text(" ".join(names))
            self._decode(pcm)
            if not any(seg.word in names for seg in self._decoder.seg() or ()):
                return None
            self._decoder.set_alignment()
            self._decode(pcm)
            alignment = self._decoder.get_alignment()
            if alignment is None:
                return None
            words = []
            for word in alignment:  # read at once: the entries must not outlive this loop
                if word.name in _SILENCES:
                    continue
                words.append([(phone.start, phone.duration, float(phone.score)) for phone in word])
        except RuntimeError:
            return None
        if [len(w) for w in words] != [name.count("_") for name in names]:
            return None
        return words


def _log_prob(probability: float) -> float:
    """A segment's probability as a score in the model's log base (what alignments report)."""
    return math.log(probability) / math.log(_LOG_BASE) if probability > 0 else -math.inf


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _pauses(gaps: Sequence[float]) -> tuple[int, float]:
    long = [g for g in gaps if g >= PAUSE_SECONDS]
    return len(long), float(sum(long))


def build_record(phones: list[list[str]], aligned: list[list[tuple[int, int, float]]] | None,
                 loop: list[tuple[str, float]], seconds: float) -> dict[str, Any]:
    """The evidence record from the passes' results (apart from the decoder, so that its
    arithmetic is tested on its own). ``aligned``: per word, per phone (start frame, frames,
    forced log score), or None when the alignment failed; ``loop``: the free loop's (phone,
    log score) per frame."""
    n_phones = sum(len(w) for w in phones)
    words: list[dict[str, Any]] = []
    if aligned is None:
        speech = [i for i, (label, _) in enumerate(loop) if label not in _SILENCES]
        span = (speech[-1] + 1 - speech[0]) / FRAMES_PER_SECOND if speech else 0.0
        gaps, run = [], 0
        for i in range(speech[0], speech[-1] + 1) if speech else ():
            if loop[i][0] in _SILENCES:
                run += 1
            elif run:
                gaps.append(run / FRAMES_PER_SECOND)
                run = 0
        for word in phones:
            words.append({"start": None, "end": None, "gop": None, "match": None,
                          "phones": [{"start": None, "seconds": None, "gop": None, "match": None} for _ in word]})
        utterance_gop = utterance_match = None
    else:
        all_gops, all_matches = [], []
        for word, spans in zip(phones, aligned):
            entries, gops, matches = [], [], []
            for phone, (start, frames, forced) in zip(word, spans):
                frames = max(int(frames), 1)
                window = loop[start:start + frames]
                free = sum(score for _, score in window)
                gop = (forced - free) / frames if window else None
                match = sum(1 for label, _ in window if label == phone) / frames
                entries.append({"start": round(start / FRAMES_PER_SECOND, 3),
                                "seconds": round(frames / FRAMES_PER_SECOND, 3),
                                "gop": _rounded(gop, 2), "match": _rounded(match, 3)})
                if gop is not None and math.isfinite(gop):
                    gops.append(gop)
                matches.append(match)
            first, last = spans[0], spans[-1]
            words.append({"start": round(first[0] / FRAMES_PER_SECOND, 3),
                          "end": round((last[0] + max(last[1], 1)) / FRAMES_PER_SECOND, 3),
                          "gop": _rounded(_mean(gops), 2), "match": _rounded(_mean(matches), 3), "phones": entries})
            all_gops += gops
            all_matches += matches
        span = words[-1]["end"] - words[0]["start"]
        gaps = [b["start"] - a["end"] for a, b in zip(words, words[1:])]
        utterance_gop, utterance_match = _mean(all_gops), _mean(all_matches)
    n_pauses, pause_seconds = _pauses(gaps)
    return {"evidence": NAME, "version": VERSION, "aligned": aligned is not None, "seconds": round(seconds, 3),
            "utterance": {"speech_seconds": round(span, 3),
                          "phones_per_second": _rounded(n_phones / span if span > 0 else None, 3),
                          "pauses": n_pauses, "pause_seconds": round(pause_seconds, 3),
                          "gop": _rounded(utterance_gop, 2), "match": _rounded(utterance_match, 3)},
            "words": words}


_SHARED: AcousticModel | None = None
_SHARED_LOCK = threading.Lock()


def shared_model() -> AcousticModel:
    """The process's acoustic model, loaded on first use (scoring calls it per recording)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = AcousticModel()
        return _SHARED


def failed_record(problem: str) -> dict[str, Any]:
    """The record of a clip that could not be used: no alignment, and why."""
    return {"evidence": NAME, "version": VERSION, "aligned": False, "problem": problem, "words": []}


def clip_evidence(audio: np.ndarray, word_phones: Sequence[Sequence[str]]) -> dict[str, Any]:
    """The evidence record of one in-memory clip with the process's shared model (apa score,
    apa serve, and each worker of apa evidence). Never raises for the clip's sake: what the
    acoustic model cannot take (a phone outside its set, a failure of the decoder itself) is a
    record without alignment that says why, and the clip is still scored."""
    try:
        return shared_model().evidence(audio, word_phones)
    except ApaError as e:
        return failed_record(str(e))
    except Exception as e:  # the decoder's own failures: recorded, never fatal to a corpus or a request
        return failed_record(f"the acoustic model failed: {type(e).__name__}: {e}")

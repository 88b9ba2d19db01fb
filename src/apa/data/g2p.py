"""eSpeak NG (en-us), offline, the one home of its library: guessed pronunciations of words no
lexicon knows, mapped to ARPAbet with stress marks, and spoken model pronunciations
(:func:`speak`: the learner's page plays the sentence and each weak word said by it).

    guess_phones("ZELENSKYY") -> ['Z', 'EH2', 'L', 'AH0', 'N', 'S', 'K', 'IY1'] (for example)

**Why eSpeak NG.** Of the offline candidates measured on 500 CMUdict words (most of them
names), eSpeak NG matched CMUdict's phones for 60% of the words (phone error rate 10%); it
is maintained, has no model to download and takes 0.06 ms a word. g2p-en (Apache-2.0)
scores a little higher but was trained on CMUdict, was last released in 2019 and tries to
download NLTK data at every import; misaki downloads a spaCy model at first use; gruut is
unmaintained. eSpeak NG comes as a library with its data inside the ``espeakng-loader``
wheel, called here through ctypes (phonemizer would only add a layer). It is GPL-3.0, so
it is the optional extra ``apa[g2p]`` (part of ``serve`` and ``dev``): without it, a word
no lexicon knows is an error that says how to get guessed pronunciations.

**IPA -> ARPAbet.** eSpeak's stress mark stands before the stressed vowel; the vowel gets 1
(ˈ) or 2 (ˌ), an unmarked vowel 0, as CMUdict writes unstressed vowels. Longest symbol
first; a symbol with no mapping is an error, so a new eSpeak version cannot silently drop
phones. eSpeak's commonest disagreements with CMUdict are reduced vowels (IH for IY0/AH0)
and foreign names: that is why a guessed word is marked as guessed in every result.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from pathlib import Path

from apa.errors import ApaError

VOWELS = {
    # r-coloured schwa before a vowel: CMUdict writes ER alone ("arrests" ER0 EH1 S T S)
    "ɚɹ": ["ER"], "ɜːɹ": ["ER"],
    "aɪɚ": ["AY", "ER"], "aɪə": ["AY", "AH"], "aʊɚ": ["AW", "ER"],
    "aɪ": ["AY"], "aʊ": ["AW"], "eɪ": ["EY"], "oʊ": ["OW"], "əʊ": ["OW"], "ɔɪ": ["OY"],
    "ɑː": ["AA"], "ɑ": ["AA"], "ɒ": ["AA"], "a": ["AA"], "æ": ["AE"], "ʌ": ["AH"], "ə": ["AH"], "ɐ": ["AH"],
    "ᵻ": ["IH"], "ɔː": ["AO"], "ɔ": ["AO"], "oː": ["AO"], "o": ["OW"], "ɛ": ["EH"], "e": ["EH"],
    "ɜː": ["ER"], "ɜ": ["ER"], "ɝ": ["ER"], "ɚ": ["ER"], "ɪ": ["IH"], "iː": ["IY"], "i": ["IY"],
    "ʊ": ["UH"], "uː": ["UW"], "u": ["UW"], "ɯ": ["UW"], "y": ["UW"], "ø": ["ER"],
}
CONSONANTS = {
    "ɹɹ": ["R"], "dʒ": ["JH"], "tʃ": ["CH"], "n̩": ["AH0", "N"], "l̩": ["AH0", "L"], "m̩": ["AH0", "M"],
    "b": ["B"], "d": ["D"], "f": ["F"], "ɡ": ["G"], "g": ["G"], "h": ["HH"], "k": ["K"], "l": ["L"],
    "m": ["M"], "n": ["N"], "ŋ": ["NG"], "p": ["P"], "ɹ": ["R"], "r": ["R"], "ɾ": ["T"], "ʔ": ["T"],
    "s": ["S"], "ʃ": ["SH"], "t": ["T"], "θ": ["TH"], "ð": ["DH"], "v": ["V"], "w": ["W"], "j": ["Y"],
    "z": ["Z"], "ʒ": ["ZH"], "x": ["K"], "ç": ["HH"], "ɬ": ["L"], "ʍ": ["W"], "ɫ": ["L"],
}
# Word and syllable boundaries, length alone, tie bars, nasalisation, palatalisation.
IGNORED = set(" \t-‿ˑ.|ʲ") | {"\u0303", "\u0361", "\u035c", "\u02d0"}
_SYMBOLS = {**VOWELS, **CONSONANTS}
_STRESS = {"ˈ": "1", "ˌ": "2"}


class G2PUnavailable(ApaError):
    """The optional eSpeak NG package is not installed."""


def ipa_to_arpabet(ipa: str) -> list[str]:
    """eSpeak NG's IPA of one word -> ARPAbet phones with stress digits on vowels."""
    phones: list[str] = []
    stress = "0"
    i = 0
    while i < len(ipa):
        if ipa[i] in _STRESS:
            stress = _STRESS[ipa[i]]
            i += 1
            continue
        symbol = next((ipa[i:i + n] for n in (3, 2, 1) if ipa[i:i + n] in _SYMBOLS), None)
        if symbol is None:
            if ipa[i] in IGNORED:
                i += 1
                continue
            raise ValueError(f"no ARPAbet phone for IPA symbol {ipa[i]!r} (U+{ord(ipa[i]):04X}) in {ipa!r}")
        if symbol in VOWELS:
            first, *rest = VOWELS[symbol]
            phones += [first + stress, *(p + "0" for p in rest)]
            stress = "0"
        else:
            phones += CONSONANTS[symbol]
        i += len(symbol)
    return phones


# A callback from eSpeak's synthesiser: (samples, count, events) -> 0 to go on.
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
# Words a minute of the model pronunciation: eSpeak's default is 175; a learner imitates a
# slower, clearer model (140 is a careful reading pace).
SPEAKING_RATE_WPM = 140


class _Espeak:
    """libespeak-ng from the espeakng-loader wheel, through ctypes. eSpeak keeps global
    state, so calls are serialised by a lock."""

    SYNCHRONOUS = 2
    UTF8 = 1
    IPA = 0x02
    RATE = 1  # espeakRATE
    CHARACTER = 1  # POS_CHARACTER

    def __init__(self, voice: str = "en-us"):
        import espeakng_loader

        self.lock = threading.Lock()
        self.lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
        data_parent = Path(espeakng_loader.get_data_path()).parent
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.sample_rate = self.lib.espeak_Initialize(self.SYNCHRONOUS, 0, str(data_parent).encode(), 0)
        if self.sample_rate <= 0:
            raise G2PUnavailable(f"eSpeak NG did not start with its data in {data_parent}; reinstall "
                                 "espeakng-loader (pip install -e '.[g2p]')")
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise G2PUnavailable(f"eSpeak NG has no voice {voice!r}")
        self.lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self.lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                          ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self._chunks: list[bytes] = []

        def collect(samples, count, events):
            if samples and count > 0:
                self._chunks.append(ctypes.string_at(samples, count * 2))
            return 0

        self._callback = _SYNTH_CALLBACK(collect)  # kept: eSpeak holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    def synth(self, text: str, words_per_minute: int) -> bytes:
        """16-bit mono PCM at ``sample_rate`` of ``text`` said by eSpeak."""
        data = text.encode("utf-8")
        with self.lock:
            self._chunks = []
            self.lib.espeak_SetParameter(self.RATE, int(words_per_minute), 0)
            if self.lib.espeak_Synth(data, len(data) + 1, 0, self.CHARACTER, 0, self.UTF8, None, None) != 0:
                raise ApaError(f"eSpeak NG could not say {text[:40]!r}")
            pcm, self._chunks = b"".join(self._chunks), []
        return pcm

    def ipa(self, text: str) -> str:
        with self.lock:
            pointer = ctypes.pointer(ctypes.c_char_p(text.encode("utf-8")))
            clauses = []
            while pointer.contents.value:  # one clause per call; the pointer advances
                result = self.lib.espeak_TextToPhonemes(pointer, self.UTF8, self.IPA)
                if result:
                    clauses.append(result.decode("utf-8").strip())
            return " ".join(c for c in clauses if c)


@functools.lru_cache(maxsize=1)
def _espeak() -> _Espeak:
    try:
        return _Espeak()
    except ImportError:
        raise G2PUnavailable("guessed pronunciations need eSpeak NG: pip install -e '.[g2p]'") from None


def g2p_available() -> bool:
    try:
        _espeak()
    except G2PUnavailable:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def guess_phones(word: str) -> tuple[str, ...]:
    """ARPAbet phones eSpeak NG gives ``word`` (lower-cased first: eSpeak spells out upper-case
    words as initialisms). Raises G2PUnavailable without the package."""
    phones = ipa_to_arpabet(_espeak().ipa(word.lower()).replace(" ", ""))
    if not phones:
        raise ValueError(f"eSpeak NG gave no phones for {word!r}")
    return tuple(phones)


@functools.lru_cache(maxsize=256)
def speak(text: str, words_per_minute: int = SPEAKING_RATE_WPM) -> tuple[bytes, int]:
    """(16-bit mono PCM, sample rate) of ``text`` said by eSpeak NG's en-us voice: the model
    pronunciation the learner's page plays. Cached: a class hears the same sentences.
    Raises G2PUnavailable without the package."""
    engine = _espeak()
    return engine.synth(text, words_per_minute), engine.sample_rate

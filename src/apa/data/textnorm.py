"""Text as a learner types it -> the words that are read aloud, upper case.

    normalise_words("In 1990, Lynda’s 21st birthday cost $5.50!")
    -> IN NINETEEN NINETY LYNDA'S TWENTY FIRST BIRTHDAY COST FIVE DOLLARS AND FIFTY CENTS

Rules, in order:

1. Unicode: compatibility forms (full-width digits, ligatures) as NFKC does; invisible
   format characters (zero-width spaces and joiners, soft hyphens, byte-order marks) removed,
   so that ``HEL<U+200B>LO`` is HELLO; combining marks removed before words are split, so
   that ``İstanbul`` (I with a dot above, which lower-cases to i + a combining dot) is
   ISTANBUL; curly quotes and primes -> ``'``, dashes, ellipses and non-breaking spaces ->
   spaces.
2. A few abbreviations that are always read the same way: e.g., i.e., etc., Mr., Mrs.,
   Dr., vs., &, +, =.
3. Money ($ £ € with optional cents): ``$5.50`` -> FIVE DOLLARS AND FIFTY CENTS.
4. Percent, times (``5:30`` -> FIVE THIRTY, ``5:05`` -> FIVE OH FIVE, ``5:00`` -> FIVE
   O'CLOCK), decades (``1990s``, ``'90s``), ordinals (``21st``).
5. Numbers: four digits from 1100 to 2099 are read as years (``1990`` -> NINETEEN NINETY,
   ``2005`` -> TWO THOUSAND AND FIVE); decimals digit by digit after POINT; other integers as
   cardinals, with or without thousands commas. A whole number of more than
   ``MAX_NUMBER_DIGITS`` digits is refused (ApaError): nobody reads it aloud as one number,
   and num2words cannot say it (a 400-digit number raised OverflowError).
6. Every character that is not a letter, a digit or an apostrophe inside a word separates
   words (``Hello,world`` -> HELLO WORLD, ``well-known`` -> WELL KNOWN: CMUdict lists the
   parts); accents are removed (NAÏVE -> NAIVE); contractions keep their apostrophe (DON'T).

Numbers are written in words with ``num2words`` (LGPL-2.1, pure Python, offline): it reads
years ("nineteen oh-five"), which ``inflect`` does not. Readings are a choice ("101" may be
"one hundred one"): the normalised text is returned with every score so the learner sees
what was scored, and a learner who reads a number differently can type it in words.
"""

from __future__ import annotations

import re
import unicodedata

from apa.errors import ApaError

_PUNCTUATION = str.maketrans({
    "\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'", "`": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": " ", "\u2013": " ", "\u2014": " ", "\u2015": " ", "\u2212": "-",
    "\u2026": " ", "\u00a0": " ",
})
ABBREVIATIONS = {"e.g.": "for example", "i.e.": "that is", "etc.": "et cetera", "mr.": "mister",
                 "mrs.": "missus", "dr.": "doctor", "vs.": "versus", "&": "and", "+": "plus", "=": "equals"}
CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
              "€": ("euro", "euros", "cent", "cents")}
DECADES = {0: "hundreds", 10: "tens", 20: "twenties", 30: "thirties", 40: "forties", 50: "fifties",
           60: "sixties", 70: "seventies", 80: "eighties", 90: "nineties"}
_INTEGER = r"\d{1,3}(?:,\d{3})+(?!\d)|\d+"
# Hundreds of quintillions; num2words stops somewhere past 10^36 with an OverflowError.
MAX_NUMBER_DIGITS = 21


def _cardinal(n: int) -> str:
    from num2words import num2words

    return num2words(n)


def _year(n: int) -> str:
    from num2words import num2words

    return num2words(n, to="year").replace("oh-", "oh ")


def _money(match: re.Match) -> str:
    one, many, cent, cents = CURRENCIES[match.group(1)]
    whole = int(match.group(2).replace(",", ""))
    words = f"{_cardinal(whole)} {one if whole == 1 else many}"
    if match.group(3) and int(match.group(3)):
        fraction = int(match.group(3).ljust(2, "0"))
        words += f" and {_cardinal(fraction)} {cent if fraction == 1 else cents}"
    return f" {words} "


def _time(match: re.Match) -> str:
    hour, minute = int(match.group(1)), int(match.group(2))
    if minute == 0:
        return f" {_cardinal(hour)} o'clock "
    return f" {_cardinal(hour)} {'oh ' if minute < 10 else ''}{_cardinal(minute)} "


def _decade(match: re.Match) -> str:
    digits = match.group(1) or match.group(2)
    tens = DECADES.get(int(digits[-2:]))
    if tens is None:  # 1995s is not a decade: read the number
        return f" {_cardinal(int(digits))}s "
    if len(digits) == 2:  # '90s
        return f" {tens} "
    year = int(digits)
    if year % 100 == 0:  # 1900s, 2000s
        return f" {_cardinal(year)}s " if year % 1000 == 0 else f" {_cardinal(year // 100)} hundreds "
    return f" {_cardinal(year // 100)} {tens} "


def _ordinal(match: re.Match) -> str:
    from num2words import num2words

    return f" {num2words(int(match.group(1)), to='ordinal')} "


def _decimal(match: re.Match) -> str:
    whole = int(match.group(1).replace(",", ""))
    return f" {_cardinal(whole)} point {' '.join(_cardinal(int(d)) for d in match.group(2))} "


def _integer(match: re.Match) -> str:
    text = match.group(0)
    n = int(text.replace(",", ""))
    if len(text) == 4 and 1100 <= n <= 2099:
        return f" {_year(n)} "
    return f" {_cardinal(n)} "


def _plain(text: str) -> str:
    """Compatibility forms folded, invisible format characters (category Cf) and combining
    marks (Mn) removed: NFKD, filter, NFC."""
    kept = (ch for ch in unicodedata.normalize("NFKD", text) if unicodedata.category(ch) not in ("Cf", "Mn"))
    return unicodedata.normalize("NFC", "".join(kept))


def spell_out(text: str) -> str:
    """``text`` with unicode punctuation, abbreviations, money, times and numbers in words
    (lower case; word separation is left to :func:`normalise_words`)."""
    text = _plain(text).translate(_PUNCTUATION).lower()
    for match in re.finditer(r"(?<![\d.])(?:" + _INTEGER + ")", text):
        digits = match.group(0).replace(",", "")
        if len(digits) > MAX_NUMBER_DIGITS:
            raise ApaError(f"the text holds a {len(digits)}-digit number ({digits[:12]}...); at most "
                           f"{MAX_NUMBER_DIGITS} digits are read as one number: type it in words or digit by digit")
    for short, long in ABBREVIATIONS.items():
        after = r"(?![a-z])" if short[-1].isalpha() else ""
        text = re.sub(r"(?<![a-z])" + re.escape(short) + after, f" {long} ", text)
    text = re.sub(r"([$£€])\s?(" + _INTEGER + r")(?:\.(\d{1,2}))?(?!\d)", _money, text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s?%", r" \1 percent ", text)
    text = re.sub(r"\b(\d{1,2}):(\d{2})\b", _time, text)
    text = re.sub(r"(?:\b(\d{4})|'(\d{2}))s\b", _decade, text)
    text = re.sub(r"\b(\d+)(?:st|nd|rd|th)\b", _ordinal, text)
    text = re.sub(r"(" + _INTEGER + r")\.(\d+)", _decimal, text)
    return re.sub(_INTEGER, _integer, text)


def normalise_words(text: str) -> list[str]:
    """The words of ``text`` as they are read aloud, upper case (the module docstring)."""
    words = []
    for token in re.split(r"[^\w']+|_", spell_out(text)):
        token = "".join(ch for ch in unicodedata.normalize("NFKD", token) if not unicodedata.combining(ch))
        token = token.strip("'")
        if token:
            words.append(token.upper())
    return words

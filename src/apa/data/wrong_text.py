"""Wrong-text readings: a clip paired with another utterance's text, scored as a reading of
words that were never said.

speechocean762 holds only readings of the sentence the learner was shown, so a model trained
on it alone has never seen what a reading of *other* words looks like, and scores one like
any other (docs/real-data-proof.md measured own text 8.0-8.6 against another text 7.5-8.1 on
sentence accuracy). These pairs teach it. Their labels follow the corpus's own rubrics
(speechocean762's README) for words that were not pronounced:

- sentence accuracy 0 ("0-2: extremely poor, only one or two words recognizable": none of
  these words is), completeness 0 (the share of the text's words pronounced), total 0;
- fluency and prosody: the experts' own scores for the clip, since they judge the delivery,
  which does not change with the text it is read against;
- every word accuracy 0 and total 0 ("0-2: the whole word is mispronounced or not
  pronounced"), stress 5 (the corpus's only other value: not the stress the word needs);
- every phone 0 ("0: the pronunciation is wrong or missing").

A partner text is chosen that shares no word with the clip's own sentence where one exists
(a shared word, "THE" say, would have been heard, and its 0 would be a wrong label).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from apa.data.manifest import Utterance, Word
from apa.errors import ApaError

# Separates the clip's id from the text's in a pair's id: "000010011~000010035".
PAIR_SEPARATOR = "~"
NOT_SAID_STRESS = 5
# How many other sentences (in seeded random order) are tried for a partner with no shared word.
PARTNER_TRIES = 50
# Sentence aspects that judge the words against the text (0 for a wrong text); the others
# (fluency, prosody) keep the experts' scores for the clip.
TEXT_ASPECTS = ("accuracy", "completeness", "total")


def _not_said(word: Word) -> Word:
    scores = {aspect: (NOT_SAID_STRESS if aspect == "stress" else 0) for aspect in word.scores}
    phone_scores = None if word.phone_scores is None else [0] * len(word.phones)
    return Word(text=word.text, phones=list(word.phones), scores=scores, phone_scores=phone_scores)


def wrong_text_reading(clip: Utterance, text_of: Utterance) -> Utterance:
    """``clip``'s audio read against ``text_of``'s sentence, labelled as above."""
    scores = {aspect: (0 if aspect in TEXT_ASPECTS else value) for aspect, value in clip.scores.items()}
    return replace(clip, id=f"{clip.id}{PAIR_SEPARATOR}{text_of.id}", audio=str(clip.audio_path.resolve()),
                   text=text_of.text, words=[_not_said(w) for w in text_of.words], scores=scores,
                   base_dir=None, evidence=None)


def _vocabulary(utt: Utterance) -> set[str]:
    return {w.text.upper() for w in utt.words}


def wrong_text_pairs(utts: Sequence[Utterance], share: float, seed: int) -> list[Utterance]:
    """``round(share * len(utts))`` clips, drawn with ``seed``, each read against another
    utterance's text (one with no word in common when such a text exists); deterministic."""
    if not 0 <= share <= 1:
        raise ApaError(f"wrong_text must be a share between 0 and 1 of the training clips, not {share}")
    n = int(round(share * len(utts)))
    if n == 0:
        return []
    texts = {u.text for u in utts}
    if len(texts) < 2:
        raise ApaError("wrong_text needs at least two different sentences among the training utterances")
    rng = np.random.default_rng([seed, 7])
    clips = rng.choice(len(utts), size=n, replace=False)
    vocabularies = [_vocabulary(u) for u in utts]
    pairs = []
    for i in sorted(clips):
        clip = utts[i]
        order = [j for j in rng.permutation(len(utts)) if utts[j].text != clip.text][:PARTNER_TRIES]
        # min keeps the first of the least overlapping: the first that shares no word, if any does
        partner = min(order, key=lambda j: len(vocabularies[i] & vocabularies[j]))
        pairs.append(wrong_text_reading(clip, utts[int(partner)]))
    return pairs

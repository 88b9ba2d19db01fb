"""Prompt templates (docs/method.md, Prompt and response), built from the task table.

The comprehensive instruction is the paper's (section 2.1) word for word. The simplified
prompts of the other tasks are built from the same sentences, keeping only the levels and
aspects the task scores, and only its output-format lines; the phone sequence is given only
to tasks that score phones. ``PROMPT_VERSION`` changes whenever any prompt text changes, and
is saved with every run so that results can be traced to the exact prompt.

An utterance that carries acoustic evidence (apa.evidence: ``evidence: gop`` in a training
config) gets the same instruction with the evidence added after the reference lines: a line
of utterance figures (estimated accuracy and total, rate, pauses), each word's estimated
accuracy, and, for tasks that score phones, each phone's goodness (0-9) in the phone
sequence's order (apa.evidence.features). Without evidence the prompts are the paper's,
byte for byte; with it, the prompt version is ``EVIDENCE_PROMPT_VERSION``. The chat text
around an instruction (system turn, audio placeholder, assistant turn) is the backbone's
(apa.backbones.base.Processor.render).
"""

from __future__ import annotations

from apa.data.manifest import Utterance
from apa.evidence.features import phone_levels, utterance_figures, word_levels
from apa.tasks import Task

PROMPT_VERSION = "1"
EVIDENCE_PROMPT_VERSION = "1+gop.2"
_EVIDENCE_INTRO = "Estimates from a pretrained speech recogniser (0-10)"
_PHONE_INTRO = ("Phone goodness (0-9: 9 means the recogniser clearly hears the reference sound, 0 that it "
                "hears something else)")

_SENTENCE_NAMES = {"accuracy": "accuracy", "fluency": "fluency", "prosody": "prosody",
                   "completeness": "completeness", "total": "a total score"}
_SENTENCE_DEFINITIONS = {
    "accuracy": "accuracy reflects phone-level pronunciation, accent, and clarity",
    "fluency": "fluency considers pauses, repetitions, and stammering",
    "prosody": "prosody assesses intonation, speed, and rhythm",
    "completeness": "completeness indicates the percentage of words from the target text that were "
                    "actually pronounced correctly",
}
_SENTENCE_TOTAL = "The total score is a comprehensive measure that reflects all aspects of speech."
_WORD_NAMES = {"accuracy": "accuracy", "stress": "stress", "total": "a total score"}
_WORD_ACCURACY = "accuracy{again} considers phone pronunciation, accent, and clarity"
_WORD_STRESS = ("the stress score reflects the correctness of stress placement, where a score of 10 "
                "indicates correct stress and 5 indicates incorrect stress")
_PHONE = "At phone level, we assess the goodness of each phoneme within the words."
_RANGE = ("All scores range from 0 to 10, with 0 representing the poorest pronunciation and 10 "
          "representing the best")
_RANGE_STRESS = ", except for the word-level stress score, which is either 5 or 10"
_ABBREVIATIONS = {"accuracy": "Acc", "fluency": "Flu", "prosody": "Pro", "completeness": "Com",
                  "total": "Tot", "stress": "Str"}


def _join(items: list[str], oxford_comma: bool) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ("," if oxford_comma else "") + " and " + items[-1]


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def prompt_version(utt: Utterance | None = None) -> str:
    return EVIDENCE_PROMPT_VERSION if utt is not None and utt.evidence is not None else PROMPT_VERSION


def evidence_lines(task: Task, utt: Utterance) -> list[str]:
    """The prompt lines of ``utt``'s acoustic evidence (see the module docstring)."""
    words = " ".join(f"{w.text} {level}" for w, level in zip(utt.words, word_levels(utt)))
    lines = [f"{_EVIDENCE_INTRO}: {utterance_figures(utt.evidence)}.", f"Word accuracy estimates: {words}."]
    if task.phone:
        lines.append(f"{_PHONE_INTRO}: " + " - ".join(" ".join(levels) for levels in phone_levels(utt)) + ".")
    return lines


def instruction_for(task: Task, text: str, phone_sequence: str, evidence: list[str] | None = None) -> str:
    """The instruction text of ``task`` for one reference text (and phone sequence), with the
    lines of acoustic evidence after the reference lines when given."""
    levels = list(task.levels)
    level_word = "levels" if len(levels) > 1 else "level"
    intro = f"You are a pronunciation evaluation teacher who analyzes speech at {_join(levels, False)} {level_word}."
    description = [intro]
    if task.sentence:
        names = [_SENTENCE_NAMES[a] for a in task.sentence]
        description.append(f"At the sentence level, the evaluation includes {_join(names, True)}.")
        definitions = [_SENTENCE_DEFINITIONS[a] for a in task.sentence if a in _SENTENCE_DEFINITIONS]
        if definitions:
            joined = definitions[0] if len(definitions) == 1 else "; ".join(definitions[:-1]) + "; and " + definitions[-1]
            description.append(_capitalize(joined) + ".")
        if "total" in task.sentence:
            description.append(_SENTENCE_TOTAL)
    if task.word:
        names = [_WORD_NAMES[a] for a in task.word]
        description.append(f"At the word level, the evaluation includes {_join(names, True)}.")
        parts = []
        if "accuracy" in task.word:
            parts.append(_WORD_ACCURACY.format(again=" again" if "accuracy" in task.sentence else ""))
        if "stress" in task.word:
            parts.append(_WORD_STRESS)
        if parts:
            description.append(_capitalize(", while ".join(parts)) + ".")
    if task.phone:
        description.append(_PHONE)
    description.append(_RANGE + (_RANGE_STRESS if "stress" in task.word else "") + ".")

    given = "the given reference text and phone sequence" if task.phone else "the given reference text"
    lines = [" ".join(description),
             f"Please evaluate the provided audio at the {_join(levels, True)} {level_word} using {given}.",
             f"Reference text: {text}."]
    if task.phone:
        lines.append(f"Reference phone sequence: {phone_sequence}.")
    lines += evidence or []
    if task.phone:
        lines.append("In the phone sequence, '-' indicates word boundaries. "
                     "The final output format should be structured as follows:")
    else:
        lines.append("The final output format should be structured as follows:")
    if task.sentence:
        lines.append("Sentence Scores: " + " ".join("{" + _ABBREVIATIONS[a] + "}" for a in task.sentence))
    if task.word:
        entry = "/".join("{" + _ABBREVIATIONS[a] + "}" for a in task.word)
        lines.append(f"Word Scores: {{W1}}/{entry} {{W2}}/{entry} ...")
    if task.phone:
        lines.append("Phone Scores: {P1}/{Acc} {P2}/{Acc} - {P3}/{Acc} ...")
    return "\n".join(lines)


def instruction(task: Task, utt: Utterance) -> str:
    evidence = evidence_lines(task, utt) if utt.evidence is not None else None
    return instruction_for(task, utt.text, utt.phone_sequence, evidence)

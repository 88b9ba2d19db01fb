"""Prompt templates (docs/method.md, Prompt and response), built from the task table, and the chat text.

The comprehensive instruction is the paper's (section 2.1) word for word. The simplified
prompts of the other tasks are built from the same sentences, keeping only the levels and
aspects the task scores, and only its output-format lines; the phone sequence is given only
to tasks that score phones. ``PROMPT_VERSION`` changes whenever any prompt text changes, and
is saved with every run so that results can be traced to the exact prompt.
"""

from __future__ import annotations

from apa.data.manifest import Utterance
from apa.tasks import Task

PROMPT_VERSION = "1"

SYSTEM_PROMPT = "You are a helpful assistant."
AUDIO_PLACEHOLDER = "<|audio_bos|><|AUDIO|><|audio_eos|>"
END_OF_TURN = "<|im_end|>"

# Qwen2-Audio-Instruct's chat template (the one transformers ships as the processor's
# default). Kept here so that `apa prompt` shows the exact text without loading a model, and
# saved into the tiny model's processor; tests check it still equals transformers' copy.
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if 'audio' in content or 'audio_url' in content or message['type'] == 'audio' or content['type'] == 'audio' %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)

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


def instruction_for(task: Task, text: str, phone_sequence: str) -> str:
    """The instruction text of ``task`` for one reference text (and phone sequence)."""
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
    return instruction_for(task, utt.text, utt.phone_sequence)


def chat_messages(instruction_text: str, audio: str | None = None) -> list[dict]:
    """Chat messages for Qwen2-Audio-Instruct: default system turn, user turn = audio + text."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": [{"type": "audio", "audio_url": audio or "audio"},
                                     {"type": "text", "text": instruction_text}]},
    ]


def render_chat(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """Render messages with CHAT_TEMPLATE exactly as the processor's apply_chat_template does."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=add_generation_prompt)


def prompt_text(task: Task, utt: Utterance) -> str:
    """The full model input text (before the processor expands the audio placeholder)."""
    return render_chat(chat_messages(instruction(task, utt), utt.audio))

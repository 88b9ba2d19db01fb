from apa.backbones.qwen2_audio import CHAT_TEMPLATE, Qwen2Audio
from apa.prompts import instruction
from apa.tasks import TASKS
from helpers import bear_utterance

# docs/method.md, Prompt and response: the paper's comprehensive instruction, word for word.
PAPER_INSTRUCTION = (
    "You are a pronunciation evaluation teacher who analyzes speech at sentence, word and phone levels. "
    "At the sentence level, the evaluation includes accuracy, fluency, prosody, completeness, and a total "
    "score. Accuracy reflects phone-level pronunciation, accent, and clarity; fluency considers pauses, "
    "repetitions, and stammering; prosody assesses intonation, speed, and rhythm; and completeness "
    "indicates the percentage of words from the target text that were actually pronounced correctly. The "
    "total score is a comprehensive measure that reflects all aspects of speech. At the word level, the "
    "evaluation includes accuracy, stress, and a total score. Accuracy again considers phone "
    "pronunciation, accent, and clarity, while the stress score reflects the correctness of stress "
    "placement, where a score of 10 indicates correct stress and 5 indicates incorrect stress. At phone "
    "level, we assess the goodness of each phoneme within the words. All scores range from 0 to 10, with "
    "0 representing the poorest pronunciation and 10 representing the best, except for the word-level "
    "stress score, which is either 5 or 10.\n"
    "Please evaluate the provided audio at the sentence, word, and phone levels using the given reference "
    "text and phone sequence.\n"
    "Reference text: WE CALL IT BEAR.\n"
    "Reference phone sequence: W IY0 - K AO0 L - IH0 T - B EH0 R.\n"
    "In the phone sequence, '-' indicates word boundaries. The final output format should be structured "
    "as follows:\n"
    "Sentence Scores: {Acc} {Flu} {Pro} {Com} {Tot}\n"
    "Word Scores: {W1}/{Acc}/{Str}/{Tot} {W2}/{Acc}/{Str}/{Tot} ...\n"
    "Phone Scores: {P1}/{Acc} {P2}/{Acc} - {P3}/{Acc} ..."
)


def test_comprehensive_prompt_is_the_papers():
    assert instruction(TASKS["multi"], bear_utterance()) == PAPER_INSTRUCTION


def test_simplified_prompts_keep_only_their_aspects():
    utt = bear_utterance()
    word_only = instruction(TASKS["word_accuracy"], utt)
    assert "Word Scores: {W1}/{Acc} {W2}/{Acc} ..." in word_only
    assert "Sentence" not in word_only and "phone sequence" not in word_only and "stress" not in word_only
    fluency = instruction(TASKS["sentence_fluency"], utt)
    assert fluency.endswith("Sentence Scores: {Flu}")
    assert "Fluency considers pauses" in fluency and "prosody" not in fluency
    assert "Phone Scores" not in instruction(TASKS["word_sentence"], utt)


def test_chat_text_is_qwen2_audio_format():
    text = Qwen2Audio.render(instruction(TASKS["multi"], bear_utterance()))
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                           "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nYou are a pronunciation")
    assert text.endswith("{P3}/{Acc} ...<|im_end|>\n<|im_start|>assistant\n")


def test_chat_template_renders_as_transformers_default():
    """The checkpoint's chat_template.json and transformers' default Qwen2-Audio template differ in
    one condition that our messages never reach: both render our prompts identically."""
    from transformers import Qwen2AudioProcessor
    from transformers.utils.chat_template_utils import render_jinja_template

    default = Qwen2AudioProcessor.default_chat_template.fget(None)
    for task in TASKS.values():
        messages = Qwen2Audio.messages(instruction(task, bear_utterance()))
        rendered, _ = render_jinja_template(conversations=[messages], chat_template=default,
                                            add_generation_prompt=True)
        assert Qwen2Audio.render(instruction(task, bear_utterance())) == rendered[0]
    assert CHAT_TEMPLATE != default

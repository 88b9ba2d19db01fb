"""Response log-likelihoods from any backbone, computed the economical way.

Two things make the stock ``model(**batch, labels=...)`` wasteful for our training:

1. It projects every position of the sequence through the LM head (156k words for
   Qwen2-Audio), although the loss needs only the response positions (about 230 of ~500
   tokens for the ``multi`` task; the prompt alone is ~300 text tokens plus ~100 audio
   tokens). At batch 8 those full logits are what ran out of memory. Here the head runs on
   the response positions only.
2. Preference pairs hold the same clip twice (chosen and rejected). Here the audio encoder
   runs once per distinct clip and its output is scattered into every row that uses it.

The backbone's processor supplies the three parts (``embed``, ``hidden_states``,
``logits``); tests check the result against each backbone's stock forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from apa.collate import IGNORE_INDEX


@dataclass
class ResponseLogps:
    sum_logp: torch.Tensor  # [rows] summed log-probability of the labelled tokens
    n_tokens: torch.Tensor  # [rows] number of labelled tokens

    @property
    def mean_logp(self) -> torch.Tensor:
        return self.sum_logp / self.n_tokens.clamp(min=1)


def response_logps(model: nn.Module, processor, batch: dict[str, torch.Tensor],
                   clip_of_row: torch.Tensor | None = None) -> ResponseLogps:
    """Per-row log-likelihood of the labelled (response) tokens, LM head on those positions only.

    ``batch`` holds input_ids, attention_mask, labels (-100 outside the response; right
    padding) and the clips' audio entries (``processor.clip_keys``, one item per clip).
    """
    embeds = processor.embed(model, batch["input_ids"], batch, clip_of_row)
    hidden = processor.hidden_states(model, embeds, batch["attention_mask"])
    labels = batch["labels"].to(hidden.device)
    # Position t predicts token t+1: keep the hidden states whose next token is labelled.
    next_labels = labels[:, 1:]
    selected = next_labels != IGNORE_INDEX
    rows = torch.nonzero(selected, as_tuple=True)[0]
    logits = processor.logits(model, hidden[:, :-1][selected])
    # cross_entropy avoids materialising a second [tokens, vocab] tensor for log_softmax.
    token_logp = -nn.functional.cross_entropy(logits, next_labels[selected], reduction="none")
    n_rows = labels.shape[0]
    sum_logp = torch.zeros(n_rows, dtype=token_logp.dtype, device=token_logp.device).index_add(0, rows, token_logp)
    n_tokens = torch.bincount(rows, minlength=n_rows)
    return ResponseLogps(sum_logp=sum_logp, n_tokens=n_tokens)

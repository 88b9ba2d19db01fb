"""Response log-likelihoods from Qwen2-Audio, computed the economical way.

Two things make the stock ``model(**batch, labels=...)`` wasteful for our training:

1. It projects every position of the sequence through the 156k-word LM head, although the
   loss needs only the response positions (about 230 of ~500 tokens for the ``multi`` task;
   the prompt alone is ~300 text tokens plus ~100 audio tokens). At batch 8 those full
   logits are what ran out of memory. Here the head runs on the response positions only.
2. Preference pairs hold the same clip twice (chosen and rejected). Here the audio encoder
   runs once per distinct clip and its output is scattered into every row that uses it.

Both are checked against the stock forward in tests (same log-likelihoods).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from apa.collate import IGNORE_INDEX


def base_model(model: nn.Module) -> nn.Module:
    """The Qwen2AudioForConditionalGeneration inside DDP and PEFT wrappers (LoRA stays active)."""
    while True:
        if hasattr(model, "module") and isinstance(getattr(model, "module"), nn.Module):
            model = model.module  # DistributedDataParallel
        elif hasattr(model, "get_base_model"):
            model = model.get_base_model()  # PeftModel
        else:
            return model


def encode_audio(model: nn.Module, input_features: torch.Tensor,
                 feature_attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio tower + projector for each clip: (features [clips, tokens, hidden], lengths [clips]).

    Mirrors Qwen2AudioModel.forward's audio branch (same mask construction), so the result is
    identical to what the stock forward scatters into the sequence.
    """
    from transformers.masking_utils import create_bidirectional_mask

    inner = base_model(model).model
    tower = inner.audio_tower
    input_features = input_features.to(tower.device)
    feature_attention_mask = feature_attention_mask.to(tower.device)
    feat_lengths, out_lengths = tower._get_feat_extract_output_lengths(feature_attention_mask.sum(-1))
    clips, _, mel_frames = input_features.shape
    max_len = (mel_frames - 2) // 2 + 1
    positions = torch.arange(max_len, device=feat_lengths.device).unsqueeze(0).expand(clips, max_len)
    mask_2d = (positions < feat_lengths.unsqueeze(1)).long()
    dummy = torch.zeros((clips, max_len, 1), dtype=inner.get_input_embeddings().weight.dtype,
                        device=tower.device)
    attention = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=mask_2d)
    hidden = tower(input_features, attention_mask=attention).last_hidden_state
    return inner.multi_modal_projector(hidden), out_lengths


def embed_with_audio(model: nn.Module, input_ids: torch.Tensor, input_features: torch.Tensor,
                     feature_attention_mask: torch.Tensor, clip_of_row: torch.Tensor | None = None) -> torch.Tensor:
    """Token embeddings with each row's <|AUDIO|> positions replaced by its clip's features.

    ``clip_of_row[r]`` is the index of row r's clip in ``input_features``; by default row r
    uses clip r. Rows sharing a clip reuse one encoder pass.
    """
    inner = base_model(model).model
    audio_token_id = base_model(model).config.audio_token_id
    embeds = inner.get_input_embeddings()(input_ids)
    features, lengths = encode_audio(model, input_features, feature_attention_mask)
    if clip_of_row is None:
        clip_of_row = torch.arange(input_ids.shape[0], device=input_ids.device)
    clip_of_row = clip_of_row.to(features.device)
    row_features = features[clip_of_row]
    valid = torch.arange(row_features.shape[1], device=features.device)[None, :] < lengths[clip_of_row][:, None]
    audio_mask = (input_ids == audio_token_id).unsqueeze(-1).to(embeds.device)
    n_tokens, n_features = int(audio_mask.sum()), int(valid.sum())
    if n_tokens != n_features:
        raise ValueError(f"{n_tokens} <|AUDIO|> tokens but {n_features} audio features: the processor and "
                         "the model disagree on the audio window")
    return embeds.masked_scatter(audio_mask, row_features[valid].to(embeds.dtype))


@dataclass
class ResponseLogps:
    sum_logp: torch.Tensor  # [rows] summed log-probability of the labelled tokens
    n_tokens: torch.Tensor  # [rows] number of labelled tokens

    @property
    def mean_logp(self) -> torch.Tensor:
        return self.sum_logp / self.n_tokens.clamp(min=1)


def response_logps(model: nn.Module, batch: dict[str, torch.Tensor],
                   clip_of_row: torch.Tensor | None = None) -> ResponseLogps:
    """Per-row log-likelihood of the labelled (response) tokens, LM head on those positions only.

    ``batch`` holds input_ids, attention_mask, labels (-100 outside the response; right
    padding), input_features and feature_attention_mask (one entry per clip).
    """
    inner = base_model(model).model
    embeds = embed_with_audio(model, batch["input_ids"], batch["input_features"],
                              batch["feature_attention_mask"], clip_of_row)
    hidden = inner.language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                                  use_cache=False).last_hidden_state
    labels = batch["labels"].to(hidden.device)
    # Position t predicts token t+1: keep the hidden states whose next token is labelled.
    next_labels = labels[:, 1:]
    selected = next_labels != IGNORE_INDEX
    rows = torch.nonzero(selected, as_tuple=True)[0]
    logits = base_model(model).lm_head(hidden[:, :-1][selected]).float()
    # cross_entropy avoids materialising a second [tokens, vocab] tensor for log_softmax.
    token_logp = -nn.functional.cross_entropy(logits, next_labels[selected], reduction="none")
    n_rows = labels.shape[0]
    sum_logp = torch.zeros(n_rows, dtype=token_logp.dtype, device=token_logp.device).index_add(0, rows, token_logp)
    n_tokens = torch.bincount(rows, minlength=n_rows)
    return ResponseLogps(sum_logp=sum_logp, n_tokens=n_tokens)

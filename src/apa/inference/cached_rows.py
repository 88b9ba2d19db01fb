"""Rows decoded together over one KV cache: what both constrained decoders build on.

The rows' prompts (with their audio) are prefilled once, left-padded. Tokens are then fed at
explicit positions, either as a chunk per row (right-padded, 2-D mask: every token sees the
row's past and the chunk before it) or as a tree (a 4-D mask: each token sees the row's past
and the tokens the caller names as its ancestors). The cache holds one column per fed token;
a column can be masked out later (a "hole"), which is how a provisional token is dropped
without rewriting the cache, or cut off the end (``crop``), and rows can leave the batch
(``keep_rows``).
"""

from __future__ import annotations

from typing import Sequence

import torch


class CachedRows:
    def __init__(self, model, processor):
        from transformers import DynamicCache

        self.model = model
        self.processor = processor
        self.cache = DynamicCache()
        self.mask: torch.Tensor | None = None       # [rows, columns] 1 = a real, visible token
        self.positions: torch.Tensor | None = None  # [rows] next position id of each row (CPU)

    @property
    def device(self):
        return self.mask.device

    @property
    def columns(self) -> int:
        return self.mask.shape[1]

    def _run(self, embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.processor.hidden_states(self.model, embeds, attention_mask, position_ids, self.cache)

    def prefill(self, batch: dict, extra: Sequence[Sequence[int]]) -> torch.Tensor:
        """Run each row's prompt (with its audio) followed by ``extra`` tokens, left-padded;
        the hidden state of each row's last token [rows, hidden]."""
        prompts = [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
        rows = [p + list(e) for p, e in zip(prompts, extra)]
        width = max(len(r) for r in rows)
        device = batch["input_ids"].device
        input_ids = torch.full((len(rows), width), self.processor.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=batch["attention_mask"].dtype)
        for r, row in enumerate(rows):
            input_ids[r, width - len(row):] = torch.tensor(row)
            mask[r, width - len(row):] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        embeds = self.processor.embed(self.model, input_ids, batch)
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        self.positions = mask.sum(dim=1).cpu()
        self.mask = mask
        return self._run(embeds, mask, position_ids)[:, -1]

    def feed(self, chunks: Sequence[Sequence[int]], provisional: bool = False) -> torch.Tensor:
        """Feed one chunk per row (right-padded, masked), each token seeing the row's past and
        the chunk before it; the hidden states [rows, width, hidden]. ``provisional``: the
        chunk's columns become holes afterwards (``reveal`` keeps some) and positions do not
        advance."""
        width = max(1, max(len(c) for c in chunks))
        ids = torch.full((len(chunks), width), self.processor.pad_token_id, dtype=torch.long)
        chunk_mask = torch.zeros((len(chunks), width), dtype=self.mask.dtype)
        position_ids = torch.zeros((len(chunks), width), dtype=torch.long)
        for r, chunk in enumerate(chunks):
            n = len(chunk)
            if n:
                ids[r, :n] = torch.tensor(list(chunk))
                chunk_mask[r, :n] = 1
                position_ids[r, :n] = torch.arange(int(self.positions[r]), int(self.positions[r]) + n)
                if not provisional:
                    self.positions[r] += n
        embeds = self.processor.token_embeddings(self.model, ids.to(self.device))
        self.mask = torch.cat([self.mask, chunk_mask.to(self.device)], dim=1)
        hidden = self._run(embeds, self.mask, position_ids.to(self.device))
        if provisional:
            self.mask[:, -width:] = 0
        return hidden

    @staticmethod
    def last(hidden: torch.Tensor, chunks: Sequence[Sequence[int]]) -> torch.Tensor:
        """The hidden state after each row's last token of a ``feed`` (its pad's for an empty chunk)."""
        index = torch.tensor([max(len(c) - 1, 0) for c in chunks], device=hidden.device)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]

    def feed_tree(self, tokens: Sequence[Sequence[int]], parents: Sequence[Sequence[int]],
                  positions: Sequence[Sequence[int]]) -> torch.Tensor:
        """Feed per row a list of tokens where token i sees the row's past, its ``parents[r][i]``
        chain (indices of earlier tokens of the row's list; -1: none) and itself, at
        ``positions[r][i]``. Returns the hidden states [rows, width, hidden]. The tokens enter
        the cache as masked columns (holes): ``reveal`` makes some of them visible, ``crop``
        drops them."""
        import numpy as np

        rows = len(tokens)
        width = max(1, max(len(t) for t in tokens))
        device = self.device
        past = self.columns
        ids = torch.full((rows, width), self.processor.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros((rows, width), dtype=torch.long)
        allowed = np.zeros((rows, width, past + width), dtype=bool)
        allowed[:, :, :past] = self.mask.bool().cpu().numpy()[:, None, :]
        for r, row in enumerate(tokens):
            n = len(row)
            ids[r, :n] = torch.tensor(list(row), dtype=torch.long)
            position_ids[r, :n] = torch.tensor(list(positions[r]), dtype=torch.long)
            tree = allowed[r, :, past:]
            for i, parent in enumerate(parents[r]):  # a token sees its parent's ancestors and itself
                if parent >= 0:
                    tree[i] = tree[parent]
                tree[i, i] = True
            tree[np.arange(n, width), np.arange(n, width)] = True  # padding sees itself (no empty softmax row)
        dtype = next(self.model.parameters()).dtype
        allowed = torch.from_numpy(allowed)
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        embeds = self.processor.token_embeddings(self.model, ids.to(device))
        hidden = self._run(embeds, mask[:, None].to(device), position_ids.to(device))
        self.mask = torch.cat([self.mask, torch.zeros((rows, width), dtype=self.mask.dtype, device=device)], dim=1)
        return hidden

    def reveal(self, column: int, rows: Sequence[int]) -> None:
        """Make ``column`` (counted from the end: -1 is the last) visible for ``rows``."""
        for r in rows:
            self.mask[r, column] = 1

    def crop(self, columns: int) -> None:
        """Drop every column after the first ``columns``."""
        remove = self.columns - columns
        if remove > 0:
            self.cache.crop(-remove)
            self.mask = self.mask[:, :columns]

    def keep_rows(self, rows: Sequence[int]) -> None:
        """Only ``rows`` stay in the batch (in this order)."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self.positions = self.positions[index.cpu()]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.processor.logits(self.model, hidden)

"""One objective per training method: SFT, SimPO + CE, DPO (docs/method.md, Training).

An objective says everything the training loop needs to know about its method, so that
the loop has no branch on the method:

- ``build_batch``: the model inputs of a list of utterances (SFT: one row each; SimPO and
  DPO: a simulated pair each, chosen and rejected rows over one clip);
- ``counts``: what this micro-batch adds to the step's normalisers (response tokens, pairs,
  chosen tokens), summed over every micro-batch and process of the step before any loss;
- ``loss``: this micro-batch's share of the step loss, given those step totals, and its
  sums for the log;
- ``log_fields``: the step's loss and the method's own log fields, from the summed sums.

Every token (SFT, the CE of SimPO) or pair weighs the same whatever the batch size,
accumulation or number of processes, because each share is divided by the step's totals.
"""

from __future__ import annotations

from typing import Sequence

import torch

from apa.collate import IGNORE_INDEX, build_training_batch, move_to
from apa.data.manifest import Utterance
from apa.forward import ResponseLogps, response_logps
from apa.tasks import Task
from apa.training import losses


def _logps(model, processor, batch: dict) -> tuple[ResponseLogps, dict, torch.Tensor | None]:
    """Response log-likelihoods of a batch on the model's device (and the moved batch)."""
    batch = dict(batch)
    clip_of_row = batch.pop("clip_of_row", None)
    batch = move_to(batch, model.device, dtype=next(model.parameters()).dtype)
    return response_logps(model, processor, batch, clip_of_row), batch, clip_of_row


def _labelled(batch: dict) -> torch.Tensor:
    """Labelled (response) tokens per row, as the loss counts them (next-token positions)."""
    return (batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1)


class Sft:
    """Token-mean cross-entropy on the reference response."""

    name = "sft"

    def __init__(self, task: Task, processor):
        self.task = task
        self.processor = processor

    def build_batch(self, utterances: Sequence[Utterance], epoch: int) -> dict:
        return build_training_batch(self.processor, utterances, self.task)

    def samples(self, batch: dict) -> int:
        return batch["labels"].shape[0]

    def counts(self, batch: dict) -> dict[str, float]:
        return {"tokens": float(_labelled(batch).sum())}

    def loss(self, model, batch: dict, totals: dict[str, torch.Tensor]):
        logps, _, _ = _logps(model, self.processor, batch)
        loss = losses.sft_loss(logps.sum_logp, logps.n_tokens, num_items_in_batch=totals["tokens"])
        return loss, {"nll": float(-logps.sum_logp.detach().sum())}

    def log_fields(self, sums: dict[str, float], totals: dict[str, float]) -> dict:
        return {"loss": sums["nll"] / totals["tokens"], "tokens": int(totals["tokens"])}


class _Preference:
    """What SimPO and DPO share: simulated pairs, rows [chosen..., rejected...] over one set of
    clips (each clip loaded, featurised and encoded once), and pair statistics in the log."""

    name = ""

    def __init__(self, task: Task, processor, slopes, seed: int, fresh_pairs_each_epoch: bool, beta: float):
        self.task = task
        self.processor = processor
        self.slopes = slopes
        self.seed = seed
        self.fresh_pairs_each_epoch = fresh_pairs_each_epoch
        self.beta = beta

    def build_batch(self, utterances: Sequence[Utterance], epoch: int) -> dict:
        from apa.training.pairs import make_pairs

        # One pair per utterance per epoch; a pair is a pure function of (seed, epoch, id).
        pair_epoch = epoch if self.fresh_pairs_each_epoch else 0
        pairs = make_pairs(utterances, self.task, self.slopes, seed=self.seed, epoch=pair_epoch)
        return build_training_batch(self.processor, utterances, self.task, targets=[p.chosen_text for p in pairs],
                                    rejected_targets=[p.rejected_text for p in pairs])

    def samples(self, batch: dict) -> int:
        return batch["labels"].shape[0] // 2

    def counts(self, batch: dict) -> dict[str, float]:
        n = self.samples(batch)
        return {"pairs": float(n), "chosen_tokens": float(_labelled(batch)[:n].sum())}

    @staticmethod
    def _pair_sums(pair_losses: torch.Tensor, margins: torch.Tensor) -> dict[str, float]:
        return {"preference": float(pair_losses.detach().sum()), "margin": float(margins.sum()),
                "correct": float((margins > 0).sum())}

    def log_fields(self, sums: dict[str, float], totals: dict[str, float]) -> dict:
        pairs = totals["pairs"]
        return {"loss": sums["preference"] / pairs, "pairs": int(pairs), "margin": sums["margin"] / pairs,
                "pair_accuracy": sums["correct"] / pairs}


class SimPO(_Preference):
    """SimPO on mean token log-likelihoods + lambda x CE on the chosen response (paper eq. 3)."""

    name = "simpo"

    def __init__(self, task: Task, processor, slopes, seed: int, fresh_pairs_each_epoch: bool, beta: float,
                 gamma: float, ce_weight: float, form: str):
        super().__init__(task, processor, slopes, seed, fresh_pairs_each_epoch, beta)
        self.gamma, self.ce_weight, self.form = gamma, ce_weight, form

    def loss(self, model, batch: dict, totals: dict[str, torch.Tensor]):
        logps, _, _ = _logps(model, self.processor, batch)
        n = self.samples(batch)
        chosen, rejected = slice(0, n), slice(n, 2 * n)
        pair_losses, margins = losses.simpo_loss(logps.mean_logp[chosen], logps.mean_logp[rejected],
                                                 beta=self.beta, gamma=self.gamma, form=self.form)
        # lambda x CE(y+), every chosen token of the step weighing the same (as in SFT)
        ce = losses.sft_loss(logps.sum_logp[chosen], logps.n_tokens[chosen],
                             num_items_in_batch=totals["chosen_tokens"])
        loss = pair_losses.sum() / totals["pairs"] + self.ce_weight * ce
        return loss, {**self._pair_sums(pair_losses, margins), "ce": float(-logps.sum_logp[chosen].detach().sum())}

    def log_fields(self, sums: dict[str, float], totals: dict[str, float]) -> dict:
        fields = super().log_fields(sums, totals)
        fields["ce"] = sums["ce"] / totals["chosen_tokens"]
        fields["loss"] += self.ce_weight * fields["ce"]
        return fields


class DPO(_Preference):
    """Sigmoid DPO on summed log-probabilities; the reference is the model without its adapter."""

    name = "dpo"

    def loss(self, model, batch: dict, totals: dict[str, torch.Tensor]):
        logps, moved, clip_of_row = _logps(model, self.processor, batch)
        with torch.no_grad(), model.disable_adapter():
            reference = response_logps(model, self.processor, moved, clip_of_row)
        n = self.samples(batch)
        chosen, rejected = slice(0, n), slice(n, 2 * n)
        pair_losses, margins = losses.dpo_loss(logps.sum_logp[chosen], logps.sum_logp[rejected],
                                               reference.sum_logp[chosen], reference.sum_logp[rejected],
                                               beta=self.beta)
        return pair_losses.sum() / totals["pairs"], self._pair_sums(pair_losses, margins)


def make_objective(config, train_utterances: Sequence[Utterance], processor):
    """The objective of ``config.method`` (a TrainConfig) for the backbone of ``processor``;
    preference methods fit the pair slopes on the training utterances."""
    from apa.tasks import get_task

    task = get_task(config.task)
    if config.method == "sft":
        return Sft(task, processor)
    from apa.training.slopes import fit_slopes

    slopes = fit_slopes(train_utterances)
    common = dict(task=task, processor=processor, slopes=slopes, seed=config.seed, fresh_pairs_each_epoch=config.fresh_pairs_each_epoch,
                  beta=config.beta)
    if config.method == "simpo":
        return SimPO(**common, gamma=config.gamma, ce_weight=config.ce_weight, form=config.simpo_form)
    return DPO(**common)

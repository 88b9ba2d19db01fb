"""SFT, SimPO(+CE) and DPO losses as pure tensor functions (METHOD.md section 5).

Nothing here touches a model: the training loop runs the model, gets logits, and hands
tensors to these functions. Every function is tested against numbers computed by hand.

Notation, per example: ``sum_logp = sum_t log P(y_t | y_<t, x)`` over the scored tokens of
the response y (the assistant turn and its end token), ``n = |y|`` the number of scored
tokens, ``r(y) = sum_logp / n`` the mean token log-likelihood (paper eq. 2).

- SFT:      L = -(sum over all scored tokens of log P) / N            (token-mean CE)
- SimPO:    L = log(1 + exp(-beta * (r(y+) - r(y-) - gamma)))          (paper eq. 1)
            = softplus(-beta * (r+ - r- - gamma))
  TRL form: L = -log sigmoid(beta * (r+ - r-) - gamma)                  (TRL CPOTrainer "simpo")
- SimPO+CE: L = L_SimPO + lambda * CE(y+),  CE(y+) = -r(y+)            (paper eq. 3)
- DPO:      L = -log sigmoid(beta * ((pi(y+) - ref(y+)) - (pi(y-) - ref(y-))))
            on summed log-probs; rewards beta * (pi(y) - ref(y)).

Paper values: beta 0.1, gamma 0.5, lambda 0.1 (SimPO); beta 0.1 (DPO). With these values
the two SimPO forms differ: the paper's margin inside the sigmoid is beta*gamma = 0.05,
TRL's is gamma = 0.5, ten times larger.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from apa.errors import ApaError

IGNORE_INDEX = -100
SIMPO_FORMS = ("paper", "trl")


# --- token log-probabilities -----------------------------------------------------------

def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                   shift: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of the scored tokens of each sequence, and their number.

    ``logits``: (B, T, V); ``labels``: (B, T), the token ids with every position that is not
    scored (prompt, audio, padding) set to ``ignore_index``.

    ``shift=True`` (default, the causal-LM convention of transformers): ``labels`` has the
    same positions as the input ids, so the logits at position t predict the label at t+1;
    the function uses ``logits[:, :-1]`` against ``labels[:, 1:]``. ``shift=False``: the
    caller has already aligned them, and ``logits[:, t]`` predicts ``labels[:, t]``.

    Returns ``(sum_logp, n_tokens)``, both of shape (B,): ``sum_logp[b] = sum over scored t
    of log softmax(logits[b, t])[labels[b, t]]`` (float32, differentiable), ``n_tokens[b]``
    the number of scored positions (int64). A sequence with no scored token gets 0 and 0.

    Only the scored positions go through the log-softmax (computed in float32), so the
    long prompt with its audio tokens costs no (T x V) float32 copy.
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(f"expected logits (B, T, V) and labels (B, T); got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != ignore_index
    batch_index = mask.nonzero(as_tuple=True)[0]
    token_logps = -F.cross_entropy(logits[mask].float(), labels[mask], reduction="none")
    sum_logp = torch.zeros(labels.shape[0], dtype=torch.float32, device=logits.device)
    sum_logp = sum_logp.index_add(0, batch_index, token_logps)
    return sum_logp, mask.sum(dim=-1)


def sft_loss(sum_logp: torch.Tensor, n_tokens: torch.Tensor,
             num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    """Token-mean cross-entropy: ``-sum_b sum_logp[b] / N``.

    ``N`` is ``num_items_in_batch`` when given, else ``n_tokens.sum()``. Under gradient
    accumulation, pass as ``num_items_in_batch`` the number of scored tokens in *all*
    micro-batches of the optimiser step and do not divide by the number of steps: the
    micro-batch losses then add up to the token-mean over the whole accumulated batch, so
    every token weighs the same whatever the lengths of the micro-batches (the same
    convention as transformers' ``num_items_in_batch``). Averaging per-micro-batch means
    instead would over-weight tokens of short responses.

    With no scored token at all the loss is 0 (still attached to the graph), not NaN.
    """
    total = sum_logp.sum()
    count = n_tokens.sum() if num_items_in_batch is None else num_items_in_batch
    count = torch.as_tensor(count, device=total.device).to(total.dtype)
    return -total / count.clamp(min=1)


def ce_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None,
            ignore_index: int = IGNORE_INDEX, shift: bool = True) -> torch.Tensor:
    """``sft_loss(*sequence_logps(logits, labels))``: token-mean CE straight from logits."""
    sum_logp, n_tokens = sequence_logps(logits, labels, ignore_index=ignore_index, shift=shift)
    return sft_loss(sum_logp, n_tokens, num_items_in_batch)


# --- preference losses ---------------------------------------------------------------------

@dataclass(frozen=True)
class PreferenceLoss:
    """Per-example preference losses (B,) and, for the log, detached rewards.

    Unpacks as ``losses, margins = simpo_loss(...)`` (or ``dpo_loss``), so a loop can treat
    both methods alike; the other fields are there by name.
    """

    losses: torch.Tensor            # (B,) what the loop averages/sums and backpropagates
    margins: torch.Tensor           # (B,) chosen_rewards - rejected_rewards, detached
    chosen_rewards: torch.Tensor    # (B,) SimPO: beta * r(y+); DPO: beta * (pi(y+) - ref(y+)); detached
    rejected_rewards: torch.Tensor  # (B,) the same for y-
    simpo_losses: torch.Tensor | None = None  # simpo_ce_loss only: the SimPO part (B,)
    ce_losses: torch.Tensor | None = None     # simpo_ce_loss only: mean token NLL of y+ (B,)

    def __iter__(self):
        return iter((self.losses, self.margins))


def simpo_loss(chosen_avg_logp: torch.Tensor, rejected_avg_logp: torch.Tensor, beta: float = 0.1,
               gamma: float = 0.5, form: str = "paper") -> PreferenceLoss:
    """Per-example SimPO loss on mean token log-likelihoods r(y+), r(y-).

    ``form="paper"`` (default, paper eq. 1): ``log(1 + exp(-beta * (r+ - r- - gamma)))``,
    computed as ``softplus(-beta * (r+ - r- - gamma))``.
    ``form="trl"`` (TRL's CPO "simpo" loss): ``-log sigmoid(beta * (r+ - r-) - gamma)``.
    The two are the same function of ``beta * (r+ - r-)`` shifted by ``beta * gamma``
    (paper) or ``gamma`` (TRL).
    """
    diff = chosen_avg_logp - rejected_avg_logp
    if form == "paper":
        losses = F.softplus(-beta * (diff - gamma))
    elif form == "trl":
        losses = -F.logsigmoid(beta * diff - gamma)
    else:
        raise ApaError(f"unknown SimPO form {form!r}; choose one of: {', '.join(SIMPO_FORMS)}")
    chosen_rewards = (beta * chosen_avg_logp).detach()
    rejected_rewards = (beta * rejected_avg_logp).detach()
    return PreferenceLoss(losses, chosen_rewards - rejected_rewards, chosen_rewards, rejected_rewards)


def simpo_ce_loss(chosen_avg_logp: torch.Tensor, rejected_avg_logp: torch.Tensor, beta: float = 0.1,
                  gamma: float = 0.5, lambda_ce: float = 0.1, form: str = "paper",
                  chosen_nll: torch.Tensor | None = None) -> PreferenceLoss:
    """Per-example ``L_SimPO + lambda_ce * CE(y+)`` (paper eq. 3, lambda 0.1).

    ``CE(y+)`` is the mean token negative log-likelihood of the chosen response, i.e.
    ``-chosen_avg_logp``, unless the caller passes its own ``chosen_nll`` (B,). Per example:
    the caller reduces (with the paper's batch size 1, ``losses.mean()`` is eq. 3 exactly; a
    loop that wants the CE token-weighted across micro-batches combines ``simpo_loss`` with
    ``sft_loss`` itself).
    """
    simpo = simpo_loss(chosen_avg_logp, rejected_avg_logp, beta=beta, gamma=gamma, form=form)
    ce = -chosen_avg_logp if chosen_nll is None else chosen_nll
    return PreferenceLoss(simpo.losses + lambda_ce * ce, simpo.margins, simpo.chosen_rewards,
                          simpo.rejected_rewards, simpo_losses=simpo.losses, ce_losses=ce)


def dpo_loss(policy_chosen_logp: torch.Tensor, policy_rejected_logp: torch.Tensor,
             ref_chosen_logp: torch.Tensor, ref_rejected_logp: torch.Tensor,
             beta: float = 0.1) -> PreferenceLoss:
    """Sigmoid DPO on *summed* log-probabilities (Rafailov et al. 2023), per example.

    ``L = -log sigmoid(beta * ((pi(y+) - ref(y+)) - (pi(y-) - ref(y-))))``; the rewards are
    ``beta * (pi(y) - ref(y))``. The reference log-probs are constants (the model with its
    LoRA adapter disabled): they are detached here so no gradient can reach them.
    """
    chosen_logratio = policy_chosen_logp - ref_chosen_logp.detach()
    rejected_logratio = policy_rejected_logp - ref_rejected_logp.detach()
    losses = -F.logsigmoid(beta * (chosen_logratio - rejected_logratio))
    chosen_rewards = (beta * chosen_logratio).detach()
    rejected_rewards = (beta * rejected_logratio).detach()
    return PreferenceLoss(losses, chosen_rewards - rejected_rewards, chosen_rewards, rejected_rewards)

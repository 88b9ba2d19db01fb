"""SFT, SimPO(+CE) and DPO losses as pure tensor functions (docs/method.md, Training).

Nothing here touches a model: apa.forward.response_logps gives each row's summed response
log-likelihood and token count, and apa.training.objectives hands them to these functions.
Every function is tested against numbers computed by hand.

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

SIMPO_FORMS = ("paper", "trl")


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

"""Losses against numbers computed by hand (math on literals, not the same torch formula)."""

import math

import pytest
import torch

from apa.errors import ApaError
from apa.training.losses import dpo_loss, sft_loss, simpo_loss


def test_sft_loss_token_mean_and_global_count():
    # log-likelihoods -3 (2 tokens) and -1, -2 (1 and 2 tokens): the mean over 5 tokens
    assert sft_loss(torch.tensor([-3.0, -1.0, -2.0]), torch.tensor([2, 1, 2])).item() == pytest.approx(6.0 / 5)
    # gradient accumulation: two micro-batches normalised by the global count add up to the
    # token mean over both, whatever their sizes (here 2 and 3 tokens)
    a = sft_loss(torch.tensor([-3.0]), torch.tensor([2]), num_items_in_batch=5)
    b = sft_loss(torch.tensor([-1.0, -2.0]), torch.tensor([1, 2]), num_items_in_batch=5)
    assert (a + b).item() == pytest.approx((3.0 + 1.0 + 2.0) / 5)
    # without a global count each micro-batch is its own mean
    assert sft_loss(torch.tensor([-3.0]), torch.tensor([2])).item() == pytest.approx(1.5)
    assert sft_loss(torch.tensor([0.0]), torch.tensor([0])).item() == 0.0


R_CHOSEN = [-0.5, -1.2, -3.0]
R_REJECTED = [-2.0, -1.0, -0.4]


def test_simpo_paper_form_by_hand():
    out = simpo_loss(torch.tensor(R_CHOSEN), torch.tensor(R_REJECTED), beta=0.1, gamma=0.5)
    # -0.5 - -2.0 = 1.5; 1.5 - 0.5 = 1.0; * 0.1 = 0.1 -> log(1 + e^-0.1)
    want = [math.log(1 + math.exp(-0.1)),
            math.log(1 + math.exp(-0.1 * (-0.2 - 0.5))),  # -1.2 - -1.0 = -0.2
            math.log(1 + math.exp(-0.1 * (-2.6 - 0.5)))]  # -3.0 - -0.4 = -2.6
    assert out.losses.tolist() == pytest.approx(want, abs=1e-6)
    assert want[0] == pytest.approx(0.6443966600735709)
    assert out.margins.tolist() == pytest.approx([0.15, -0.02, -0.26], abs=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([-0.05, -0.12, -0.3], abs=1e-6)
    assert out.rejected_rewards.tolist() == pytest.approx([-0.2, -0.1, -0.04], abs=1e-6)
    losses, margins = out  # unpacks like the DPO output
    assert losses is out.losses and margins is out.margins


def test_simpo_trl_form_by_hand_and_difference():
    paper = simpo_loss(torch.tensor(R_CHOSEN), torch.tensor(R_REJECTED), beta=0.1, gamma=0.5)
    trl = simpo_loss(torch.tensor(R_CHOSEN), torch.tensor(R_REJECTED), beta=0.1, gamma=0.5, form="trl")
    # -log sigmoid(z) = log(1 + e^-z), z = 0.1 * diff - 0.5
    want = [math.log(1 + math.exp(-(0.1 * 1.5 - 0.5))),
            math.log(1 + math.exp(-(0.1 * -0.2 - 0.5))),
            math.log(1 + math.exp(-(0.1 * -2.6 - 0.5)))]
    assert trl.losses.tolist() == pytest.approx(want, abs=1e-6)
    # paper margin beta*gamma = 0.05, TRL margin gamma = 0.5: TRL's loss is larger everywhere
    assert all(t > p for t, p in zip(trl.losses.tolist(), paper.losses.tolist()))
    assert trl.losses[0].item() - paper.losses[0].item() == pytest.approx(
        math.log(1 + math.exp(0.35)) - math.log(1 + math.exp(-0.1)), abs=1e-6)
    # gamma = 0 makes them identical
    a = simpo_loss(torch.tensor(R_CHOSEN), torch.tensor(R_REJECTED), gamma=0.0)
    b = simpo_loss(torch.tensor(R_CHOSEN), torch.tensor(R_REJECTED), gamma=0.0, form="trl")
    assert a.losses.tolist() == pytest.approx(b.losses.tolist())
    with pytest.raises(ApaError):
        simpo_loss(torch.tensor(R_CHOSEN), torch.tensor(R_REJECTED), form="cpo")


def test_dpo_by_hand_and_gradients():
    pc = torch.tensor([-10.0, -20.0], requires_grad=True)
    pr = torch.tensor([-12.0, -18.0], requires_grad=True)
    rc = torch.tensor([-11.0, -19.0])
    rr = torch.tensor([-11.5, -19.5])
    out = dpo_loss(pc, pr, rc, rr, beta=0.1)
    # ex 0: (-10 - -11) - (-12 - -11.5) = 1 - -0.5 = 1.5 -> log(1 + e^-0.15)
    # ex 1: (-20 - -19) - (-18 - -19.5) = -1 - 1.5 = -2.5 -> log(1 + e^0.25)
    assert out.losses.tolist() == pytest.approx([math.log(1 + math.exp(-0.15)), math.log(1 + math.exp(0.25))],
                                                abs=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([0.1, -0.1], abs=1e-6)
    assert out.rejected_rewards.tolist() == pytest.approx([-0.05, 0.15], abs=1e-6)
    assert out.margins.tolist() == pytest.approx([0.15, -0.25], abs=1e-6)
    losses, margins = out
    assert not margins.requires_grad and losses.requires_grad
    out.losses.sum().backward()
    assert torch.isfinite(pc.grad).all() and torch.isfinite(pr.grad).all()
    assert pc.grad[0].item() == pytest.approx(-0.1 / (1 + math.exp(0.15)), abs=1e-6)
    assert pr.grad[0].item() == pytest.approx(0.1 / (1 + math.exp(0.15)), abs=1e-6)

"""Losses against numbers computed by hand (math on literals, not the same torch formula)."""

import math

import pytest
import torch

from apa.errors import ApaError
from apa.training.losses import (ce_loss, dpo_loss, sequence_logps, sft_loss, simpo_ce_loss,
                                 simpo_loss)


def log_softmax_at(row, k):
    return row[k] - math.log(sum(math.exp(v) for v in row))


# B=2, T=4, V=3. Row logits written out so the expected values can be computed by hand.
LOGITS = [
    [[1.0, 2.0, 0.5], [0.0, 0.0, 0.0], [2.0, -1.0, 1.0], [0.3, 0.3, 3.0]],
    [[0.5, 0.5, 0.5], [1.5, 0.0, -0.5], [0.0, 1.0, 2.0], [9.0, 9.0, 9.0]],
]
# Causal shift: logits at t predict labels at t+1. Position 0 is never a target.
LABELS = [
    [-100, -100, 2, 0],   # scored: logits[0,1] -> 2, logits[0,2] -> 0
    [-100, 0, 1, -100],   # scored: logits[1,0] -> 0, logits[1,1] -> 1
]


def expected_sums():
    s0 = log_softmax_at(LOGITS[0][1], 2) + log_softmax_at(LOGITS[0][2], 0)
    s1 = log_softmax_at(LOGITS[1][0], 0) + log_softmax_at(LOGITS[1][1], 1)
    return [s0, s1]


def test_sequence_logps_by_hand_with_shift():
    # log_softmax([0,0,0])[2] = -log 3; log_softmax([2,-1,1])[0] = 2 - log(e^2 + e^-1 + e)
    s0 = -math.log(3) + (2 - math.log(math.exp(2) + math.exp(-1) + math.exp(1)))
    s1 = (0.5 - math.log(3 * math.exp(0.5))) + (0.0 - math.log(math.exp(1.5) + 1 + math.exp(-0.5)))
    assert expected_sums() == pytest.approx([s0, s1])
    sum_logp, n = sequence_logps(torch.tensor(LOGITS), torch.tensor(LABELS))
    assert sum_logp.tolist() == pytest.approx([s0, s1], abs=1e-6)
    assert n.tolist() == [2, 2]


def test_sequence_logps_without_shift_uses_same_position():
    labels = torch.tensor([[1, -100, -100, -100], [-100, -100, -100, 2]])
    sum_logp, n = sequence_logps(torch.tensor(LOGITS), labels, shift=False)
    assert sum_logp.tolist() == pytest.approx([log_softmax_at(LOGITS[0][0], 1), -math.log(3)], abs=1e-6)
    assert n.tolist() == [1, 1]


def test_sequence_logps_empty_sequence_and_bad_shapes():
    labels = torch.tensor([[-100] * 4, LABELS[1]])
    sum_logp, n = sequence_logps(torch.tensor(LOGITS), labels)
    assert sum_logp[0].item() == 0 and n[0].item() == 0
    with pytest.raises(ValueError):
        sequence_logps(torch.tensor(LOGITS), torch.tensor(LABELS)[:, :3])


def test_sft_loss_token_mean_and_global_count():
    s0, s1 = expected_sums()
    loss = ce_loss(torch.tensor(LOGITS), torch.tensor(LABELS))
    assert loss.item() == pytest.approx(-(s0 + s1) / 4, abs=1e-6)
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


def test_simpo_ce_by_hand_and_gradients():
    chosen = torch.tensor(R_CHOSEN, requires_grad=True)
    rejected = torch.tensor(R_REJECTED, requires_grad=True)
    out = simpo_ce_loss(chosen, rejected, beta=0.1, gamma=0.5, lambda_ce=0.1)
    want0 = math.log(1 + math.exp(-0.1)) + 0.1 * 0.5  # CE(y+) = -r(y+) = 0.5
    assert out.losses[0].item() == pytest.approx(want0, abs=1e-6)
    assert out.ce_losses.tolist() == pytest.approx([0.5, 1.2, 3.0])
    assert out.simpo_losses[0].item() == pytest.approx(math.log(1 + math.exp(-0.1)), abs=1e-6)
    out.losses.mean().backward()
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    # d/dr+ of softplus(-0.1 (r+ - r- - 0.5)) = -0.1 * sigmoid(-z), plus -lambda for the CE; / 3 for the mean
    z0 = 0.1
    assert chosen.grad[0].item() == pytest.approx((-0.1 / (1 + math.exp(z0)) - 0.1) / 3, abs=1e-6)
    assert rejected.grad[0].item() == pytest.approx((0.1 / (1 + math.exp(z0))) / 3, abs=1e-6)
    # explicit NLL overrides -r(y+)
    out = simpo_ce_loss(torch.tensor(R_CHOSEN), torch.tensor(R_REJECTED), chosen_nll=torch.tensor([2.0, 2.0, 2.0]))
    assert out.losses[0].item() == pytest.approx(math.log(1 + math.exp(-0.1)) + 0.2, abs=1e-6)


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


def test_gradients_flow_from_logits():
    logits = torch.tensor(LOGITS, requires_grad=True)
    sum_logp, n = sequence_logps(logits, torch.tensor(LABELS))
    r = sum_logp / n
    out = simpo_ce_loss(r[:1], r[1:])
    out.losses.mean().backward()
    assert torch.isfinite(logits.grad).all()
    # unscored positions (position 0 of row 0, the last position of each row) get no gradient
    assert logits.grad[0, 0].abs().sum().item() == 0 and logits.grad[:, -1].abs().sum().item() == 0
    assert logits.grad[0, 1].abs().sum().item() > 0


def test_bf16_logits_are_scored_in_float32():
    sum_logp, _ = sequence_logps(torch.tensor(LOGITS).to(torch.bfloat16), torch.tensor(LABELS))
    assert sum_logp.dtype == torch.float32
    assert sum_logp.tolist() == pytest.approx(expected_sums(), abs=2e-2)

"""Losses against hand-worked values, step-0 invariants and batch-split invariance."""

import math

import pytest
import torch

from agents.data import PreferenceData
from agents.losses import (
    bt_reward_loss,
    dpo_loss,
    hinge_loss,
    ipo_loss,
    per_token,
    preference_loss,
)
from agents.trainer import accumulate_gradients, reference_log_probs
from rlhf_env.policies import Catalog, TabularPolicy

# one pair: log pi(chosen) = -1, log pi(rejected) = -2, reference -1.5 for both, beta = 0.5
# h = (-1 + 1.5) - (-2 + 1.5) = 1.0 and beta * h = 0.5
T = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
ARGS = (T(-1.0), T(-2.0), T(-1.5), T(-1.5))


def test_dpo_hand_worked():
    out = dpo_loss(*ARGS, beta=0.5)
    assert out.losses.item() == pytest.approx(math.log(1 + math.exp(-0.5)))  # 0.474077
    m = out.metrics
    assert m["rewards/chosen"].item() == pytest.approx(0.25)
    assert m["rewards/rejected"].item() == pytest.approx(-0.25)
    assert m["rewards/margins"].item() == pytest.approx(0.5)
    assert m["rewards/accuracies"].item() == 1.0
    assert m["logps/chosen"].item() == -1.0 and m["logps/rejected"].item() == -2.0
    assert not out.metrics["rewards/margins"].requires_grad


def test_conservative_dpo_hand_worked():
    out = dpo_loss(*ARGS, beta=0.5, label_smoothing=0.1)
    expect = 0.9 * math.log(1 + math.exp(-0.5)) + 0.1 * math.log(1 + math.exp(0.5))
    assert out.losses.item() == pytest.approx(expect)  # 0.524077
    soft = dpo_loss(*ARGS, beta=0.5, label_smoothing=T(0.1))  # per-example eps
    assert soft.losses.item() == pytest.approx(expect)


def test_ipo_hinge_bt_hand_worked():
    assert ipo_loss(*ARGS, beta=0.5).losses.item() == pytest.approx(0.0)  # (1 - 1/(2*0.5))^2
    assert ipo_loss(*ARGS, beta=0.25).losses.item() == pytest.approx(1.0)  # (1 - 2)^2
    assert hinge_loss(*ARGS, beta=0.5).losses.item() == pytest.approx(0.5)  # max(0, 1 - 0.5)
    assert hinge_loss(*ARGS, beta=2.0).losses.item() == 0.0
    bt = bt_reward_loss(T(1.0), T(0.0))
    assert bt.losses.item() == pytest.approx(math.log(1 + math.exp(-1.0)))  # 0.313262
    assert bt.metrics["rewards/accuracies"].item() == 1.0


def test_step_zero_invariants():
    """At pi == reference: DPO loss log 2, margins 0, accuracies 0; IPO (1/(2 beta))^2; hinge 1."""
    lp = T(-3.0, -1.2, -7.5)
    lr = T(-2.0, -4.0, -0.5)
    for beta in (0.1, 1.0):
        out = dpo_loss(lp, lr, lp.clone(), lr.clone(), beta=beta)
        torch.testing.assert_close(out.losses, torch.full((3,), math.log(2), dtype=torch.float64))
        assert out.metrics["rewards/margins"].item() == 0.0
        assert out.metrics["rewards/accuracies"].item() == 0.0
        ipo = ipo_loss(lp, lr, lp, lr, beta=beta).losses
        torch.testing.assert_close(ipo, torch.full((3,), (1 / (2 * beta)) ** 2, dtype=torch.float64))
        torch.testing.assert_close(hinge_loss(lp, lr, lp, lr, beta).losses, torch.ones(3).double())


def test_loss_gradient_matches_closed_form():
    """d/dpi_c of -log sigmoid(beta h) is -beta * sigmoid(-beta h)."""
    pi_c = T(-1.0).requires_grad_(True)
    dpo_loss(pi_c, T(-2.0), T(-1.5), T(-1.5), beta=0.5).losses.sum().backward()
    assert pi_c.grad.item() == pytest.approx(-0.5 / (1 + math.exp(0.5)))


def test_bad_loss_arguments():
    with pytest.raises(ValueError, match="loss_type"):
        preference_loss("kto", *ARGS, beta=0.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(*ARGS, beta=0.5, label_smoothing=0.7)
    with pytest.raises(ValueError, match="sigmoid"):
        preference_loss("ipo", *ARGS, beta=0.5, label_smoothing=0.1)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_batch_of_8_as_1x8_or_4x2_gives_same_loss_and_gradient(loss_type):
    cat = Catalog([f"x{i}" for i in range(3)], [f"a{j}" for j in range(5)])
    gen = torch.Generator().manual_seed(0)
    ref = TabularPolicy(cat, torch.randn(3, 5, generator=gen, dtype=torch.float64)).freeze()
    pol = TabularPolicy(cat, torch.randn(3, 5, generator=gen, dtype=torch.float64))
    picks = torch.randint(0, 5, (8, 2), generator=gen).tolist()
    data = PreferenceData([f"x{i % 3}" for i in range(8)], [f"a{c}" for c, _ in picks],
                          [f"a{(r + 1 + c) % 5}" for c, r in picks])
    ref_c, ref_r = reference_log_probs(ref, data)
    results = []
    for mbs in (8, 2):
        pol.zero_grad()
        sums = accumulate_gradients(pol, data, list(range(8)), ref_c, ref_r, beta=0.3,
                                    loss_type=loss_type, label_smoothing=0.0, soft=None,
                                    micro_batch_size=mbs, batch_len=8)
        results.append((sums["loss"] / 8, pol.theta.grad.clone()))
    (l1, g1), (l2, g2) = results
    assert l1 == pytest.approx(l2, abs=1e-12)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-12)
    assert g1.abs().sum() > 0


class TokenStub(torch.nn.Module):
    """A policy with known summed log-probs and token counts per response (an LM stand-in)."""

    def __init__(self, logp: dict, lengths: dict):
        super().__init__()
        self.keys = sorted(logp)
        self.theta = torch.nn.Parameter(torch.tensor([logp[k] for k in self.keys],
                                                     dtype=torch.float64))
        self.lengths = lengths

    def token_log_probs(self, prompts, responses):
        idx = [self.keys.index(r) for r in responses]
        return self.theta[idx], torch.tensor([self.lengths[r] for r in responses])

    def log_prob(self, prompts, responses):
        return self.token_log_probs(prompts, responses)[0]


def test_ipo_averages_log_probs_per_token_by_default_as_trl():
    """One pair: chosen has 4 tokens, log pi = -2, log ref = -4; rejected 2 tokens, log pi = -3,
    log ref = -2; beta = 0.5 (target margin 1/(2 beta) = 1).

    Per token (TRL, the IPO authors): h = (-2/4 + 4/4) - (-3/2 + 2/2) = 0.5 + 0.5 = 1.0,
    loss (1 - 1)^2 = 0. Summed: h = (-2 + 4) - (-3 + 2) = 3, loss (3 - 1)^2 = 4.
    """
    pol = TokenStub({"c": -2.0, "r": -3.0}, {"c": 4, "r": 2})
    data = PreferenceData(["x"], ["c"], ["r"])
    ref_c, ref_r = T(-4.0), T(-2.0)
    kw = dict(beta=0.5, loss_type="ipo", label_smoothing=0.0, soft=None, micro_batch_size=1,
              batch_len=1)
    assert accumulate_gradients(pol, data, [0], ref_c, ref_r, **kw)["loss"] == pytest.approx(0.0)
    pol.zero_grad()
    summed = accumulate_gradients(pol, data, [0], ref_c, ref_r, ipo_average=False, **kw)
    assert summed["loss"] == pytest.approx(4.0)
    # d/d(log pi_c) of (h - 1)^2 with h = 3 is 2 * 2 = 4; d/d(log pi_r) is -4
    torch.testing.assert_close(pol.theta.grad, T(4.0, -4.0))
    # a second pair: per token h = (-1/2 + 1) - (-2/1 + 1) = 1.5, loss (1.5 - 1)^2 = 0.25
    pol = TokenStub({"c": -1.0, "r": -2.0}, {"c": 2, "r": 1})
    got = accumulate_gradients(pol, data, [0], T(-2.0), T(-1.0), **kw)["loss"]
    assert got == pytest.approx(0.25)
    assert per_token(T(-6.0, -1.0), torch.tensor([3, 0])).tolist() == [-2.0, -1.0]
    # other losses never average (DPO sums, as TRL): sigmoid on the summed h = 3
    pol = TokenStub({"c": -2.0, "r": -3.0}, {"c": 4, "r": 2})
    kw["loss_type"] = "sigmoid"
    dpo = accumulate_gradients(pol, data, [0], ref_c, ref_r, **kw)["loss"]
    assert dpo == pytest.approx(math.log(1 + math.exp(-1.5)))

"""The design controls and Thompson sampling (issue 20): hand-worked D-optimal choices, the
Laplace posterior against a grid integral of the exact BT posterior, and the agents' budgets."""

from __future__ import annotations

import numpy as np
import pytest

import agents
import rlhf_env
from agents.algorithms.designs import d_optimal_pairs, laplace_posterior, uniform_pairs


def test_d_optimal_picks_the_largest_gain_and_updates_sigma():
    # one prompt, three responses in 2-D: differences (1,0), (0,2), (-1,2)
    phi = np.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]])
    sigma = np.eye(2)
    a, b, after = d_optimal_pairs(np.array([0]), phi, sigma)
    # gains x^T x: (0,1): 1, (0,2): 4, (1,2): 5 -> the pair (1, 2)
    assert (a[0], b[0]) == (1, 2)
    np.testing.assert_allclose(after, np.eye(2) + np.outer([1, -2], [1, -2]))
    # a second pick sees the updated Sigma: (1,2) again gains 5/(1+5)... less than (0,1)'s
    a, b, _ = d_optimal_pairs(np.array([0, 0]), phi, sigma)
    inv = np.linalg.inv(np.eye(2) + np.outer([1, -2], [1, -2]))
    gains = {(0, 1): [1, 0] @ inv @ [1, 0], (0, 2): [0, 2] @ inv @ [0, 2],
             (1, 2): [1, -2] @ inv @ [1, -2]}
    assert (a[1], b[1]) == max(gains, key=gains.get)


def test_uniform_pairs_are_two_different_responses():
    a, b = uniform_pairs(np.zeros(1000, dtype=int), 5, np.random.default_rng(0))
    assert np.all(a != b) and set(a) == set(range(5)) and set(b) == set(range(5))


def test_the_laplace_posterior_matches_the_exact_bt_posterior_in_2d():
    """theta* = (1, -0.5), 300 BT-labelled differences; the exact posterior (ridge prior
    N(0, I / 0.1) x BT likelihood) integrated on a 401 x 401 grid."""
    rng = np.random.default_rng(0)
    theta_star = np.array([1.0, -0.5])
    x = rng.normal(size=(300, 2))
    y = rng.random(300) < 1 / (1 + np.exp(-(x @ theta_star)))
    x = np.where(y[:, None], x, -x)  # chosen minus rejected
    mean, cov = laplace_posterior(x, ridge=0.1)
    g = np.linspace(-1.5, 1.5, 401)
    t1, t2 = np.meshgrid(mean[0] + g, mean[1] + g, indexing="ij")
    grid = np.stack([t1.ravel(), t2.ravel()], 1)
    logp = -np.logaddexp(0, -(grid @ x.T)).sum(1) - 0.05 * (grid**2).sum(1)
    w = np.exp(logp - logp.max())
    w /= w.sum()
    exact_mean = w @ grid
    exact_cov = (grid - exact_mean).T @ ((grid - exact_mean) * w[:, None])
    sd = np.sqrt(np.diag(exact_cov))
    # the mode is not the mean of a skewed posterior: within a fifth of a standard deviation
    assert np.all(np.abs(mean - exact_mean) < 0.2 * sd), (mean, exact_mean, sd)
    np.testing.assert_allclose(cov, exact_cov, rtol=0.15, atol=1e-4)


@pytest.mark.parametrize("name", ["mle_gibbs_uniform", "mle_gibbs_design",
                                  "pessimistic_gibbs_uniform", "pessimistic_gibbs_design",
                                  "thompson_gibbs"])
def test_the_controls_spend_exactly_the_budget_and_beat_pi0(name):
    env = rlhf_env.make("LinearBT-Explore-v0", seed=101, query_budget=256)
    agent = agents.make(name, env).learn()
    assert env.unwrapped.queries_used == 256
    assert rlhf_env.evaluate(agent.policy, env)["normalized_score"] > 0.2


def test_the_xpo_term_is_alpha_log_pi_of_the_reference_sample():
    """One pair (chosen a, rejected b, a~ = b): loss = -log sigmoid(beta h) + alpha log pi(b),
    h = log pi(a)/pi0(a) - log pi(b)/pi0(b); the gradient matches autograd of that formula."""
    import torch

    from agents.data import PreferenceData
    from agents.trainer import accumulate_gradients
    from rlhf_env.policies import Catalog, TabularPolicy

    cat = Catalog(["x"], ["a", "b", "c"])
    ref_logits = torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64)
    pi = TabularPolicy(cat, torch.tensor([[0.5, 0.1, -0.4]], dtype=torch.float64))
    ref = TabularPolicy(cat, ref_logits)
    data = PreferenceData(["x"], ["a"], ["b"])
    beta, alpha = 0.7, 0.05
    rc, rr = ref.log_prob(["x"], ["a"]).detach(), ref.log_prob(["x"], ["b"]).detach()
    accumulate_gradients(pi, data, [0], rc.double(), rr.double(), beta=beta, loss_type="sigmoid",
                         label_smoothing=0.0, soft=None, micro_batch_size=1, batch_len=1,
                         xpo_alpha=alpha, xpo_samples=["b"])
    theta = pi.theta.detach().clone().requires_grad_(True)
    lp = torch.log_softmax(theta, -1)[0]
    lr = torch.log_softmax(ref_logits, -1)[0]
    h = (lp[0] - lr[0]) - (lp[1] - lr[1])
    loss = -torch.nn.functional.logsigmoid(beta * h) + alpha * lp[1]
    loss.backward()
    torch.testing.assert_close(pi.theta.grad, theta.grad)


@pytest.mark.parametrize("name", ["online_dpo", "xpo"])
def test_online_dpo_and_xpo_spend_the_budget_and_learn(name):
    env = rlhf_env.make("LinearBT-v0", seed=101, setting="online", query_budget=256)
    agent = agents.make(name, env).learn()
    assert env.unwrapped.queries_used == 256
    assert rlhf_env.evaluate(agent.policy, env)["normalized_score"] > 0.5
    if name == "xpo":
        assert len(agent.explore_samples) == len(agent.data)
        assert all(s in (c, r) for s, c, r in zip(agent.explore_samples, agent.data.chosen,
                                                  agent.data.rejected))


def test_the_recipes_train_on_what_they_say(monkeypatch):
    from agents.algorithms.dpo import PreferenceAgent

    seen = []
    original = PreferenceAgent.train

    def spy(self, policy, data, **kw):
        seen.append((len(data), kw.get("reference")))
        return original(self, policy, data, **kw)

    monkeypatch.setattr(PreferenceAgent, "train", spy)
    for recipe in ("rlhflow", "oaif"):
        seen.clear()
        env = rlhf_env.make("LinearBT-v0", seed=101, query_budget=96)  # hybrid: 128 offline
        agent = agents.make("iterative_dpo", env, recipe=recipe, iterations=3).learn()
        assert [n for n, _ in seen] == [128 + 32, 32, 32]  # round 0 with the offline data
        refs = [r for _, r in seen]
        assert refs[0] is None  # pi0
        if recipe == "rlhflow":  # the previous iterate, frozen
            assert refs[1] is not None and refs[2] is not None and refs[1] is not refs[2]
        else:
            assert refs[1] is None and refs[2] is None
        assert agent.instance.queries_used == 96

"""adaptive_design_gibbs (issue 20, item 3): the second-order loss its criterion rests on
against the exact objective, the greedy L-optimal choice by hand, the separability LP, the
shrinkage factor by hand, and the agent's fallbacks and budget."""

from __future__ import annotations

import numpy as np
import pytest

import agents
import rlhf_env
from agents.algorithms.adaptive_design import (
    AdaptiveDesignAgent,
    gibbs_feature_covariance,
    l_optimal_pairs,
    separable,
    shrinkage_factor,
)
from rlhf_env.policies.closed_forms import gibbs_log_probs


def exact_objective(log_pi, log_ref, rewards, eta):
    """J = mean_x [E_pi r* - eta KL(pi || pi0)], written out independently."""
    p = np.exp(log_pi)
    return float(np.mean(np.sum(p * (rewards - eta * (log_pi - log_ref)), axis=1)))


@pytest.mark.parametrize("eta", [0.5, 1.0, 4.0])
def test_the_loss_of_a_small_error_is_the_quadratic_form_the_design_minimises(eta):
    """J(pi*) - J(Gibbs(theta* + e)) = (1/2eta) e^T W* e + O(|e|^3), W* = E_x Cov_{pi*} phi."""
    env = rlhf_env.make("LinearBT-v0", seed=7, eta=eta)
    inst = env.unwrapped
    phi = np.asarray(inst.features, dtype=np.float64)
    log_ref = inst.reference.log_probs_table().detach().double().numpy()
    theta = rlhf_env.judge(env).theta_star
    rewards = phi @ theta
    w_star = gibbs_feature_covariance(log_ref, phi, theta[None], eta)
    j_star = exact_objective(gibbs_log_probs(log_ref, rewards, eta), log_ref, rewards, eta)
    rng = np.random.default_rng(0)
    for scale in (0.02, 0.05):
        e = scale * rng.standard_normal(len(theta))
        j = exact_objective(gibbs_log_probs(log_ref, phi @ (theta + e), eta), log_ref,
                            rewards, eta)
        np.testing.assert_allclose(j_star - j, e @ w_star @ e / (2 * eta), rtol=0.1)


def test_gibbs_feature_covariance_by_hand():
    # one prompt, responses (0, 0), (1, 0), (0, 2); uniform pi0
    phi = np.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]])
    log_ref = np.log(np.full((1, 3), 1 / 3))
    # theta = 0: pi uniform, mean (1/3, 2/3); E[phi phi^T] = diag(1/3, 4/3)
    np.testing.assert_allclose(gibbs_feature_covariance(log_ref, phi, np.zeros((1, 2)), 1.0),
                               [[1 / 3 - 1 / 9, -2 / 9], [-2 / 9, 4 / 3 - 4 / 9]])
    # two draws average their covariances; theta = (log 2, 0): pi = (1, 2, 1) / 4
    p = np.array([1, 2, 1]) / 4
    mu = p @ phi[0]
    cov2 = (phi[0] * p[:, None]).T @ phi[0] - np.outer(mu, mu)
    got = gibbs_feature_covariance(log_ref, phi, np.array([[0.0, 0.0], [np.log(2), 0.0]]), 1.0)
    np.testing.assert_allclose(got, (cov2 + [[2 / 9, -2 / 9], [-2 / 9, 8 / 9]]) / 2)


def test_l_optimal_pairs_by_hand():
    """theta = 0 (weights c = 1/4), H = I, W = diag(1, 0): the gain of z is
    (1/4) z_1^2 / (1 + |z|^2 / 4); differences (1,0): 0.2, (0,2): 0, (1,-2): 0.125."""
    phi = np.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]])
    w = np.diag([1.0, 0.0])
    a, b = l_optimal_pairs(np.array([0]), phi, np.eye(2), w, np.zeros((1, 2)))
    assert (a[0], b[0]) == (0, 1)
    # the second pick sees H = I + (1/4) e1 e1^T: gains (1,0): (1/4)(1/1.25^2)/(1 + 0.2) = 0.1333,
    # (1,-2): (1/4)(0.8^2)/(1 + (0.8 + 4)/4) = 0.0727 -> (0, 1) again
    a, b = l_optimal_pairs(np.array([0, 0]), phi, np.eye(2), w, np.zeros((1, 2)))
    assert [(a[i], b[i]) for i in range(2)] == [(0, 1), (0, 1)]
    # theta = (10, 0): (0, 1) and (1, 2) have |<theta, z>| = 10, c = sigmoid'(10) ~ 4.5e-5,
    # gains c / (1 + c) and c / (1 + 5c); (0, 2) has no e1 part, gain 0
    theta = np.array([[10.0, 0.0]])
    a, b = l_optimal_pairs(np.array([0]), phi, np.eye(2), w, theta)
    s = 1 / (1 + np.exp(-10.0))
    c = s * (1 - s)
    gains = {(0, 1): c / (1 + c), (1, 2): c / (1 + 5 * c), (0, 2): 0.0}
    assert (a[0], b[0]) == max(gains, key=gains.get)


def test_separable_is_the_feasibility_lp():
    assert separable(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    assert not separable(np.array([[1.0, 0.0], [-1.0, 0.0]]))  # a pair and its flip
    assert not separable(np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    assert separable(np.zeros((0, 3)))


def test_shrinkage_factor_by_hand():
    # 1-D, four differences z = 1 and theta = ln 3: sigmoid = 3/4, chi2 = 2·4·ln(2·3/4)
    chi2 = 8 * np.log(1.5)
    assert shrinkage_factor(np.ones((4, 1)), np.array([np.log(3.0)])) == pytest.approx(
        (chi2 - 1) / chi2)
    # a fit no better than chance: 0
    assert shrinkage_factor(np.ones((4, 1)), np.zeros(1)) == 0.0


class Recording(AdaptiveDesignAgent):
    def collect(self, t):
        out = super().collect(t)
        self.rounds = getattr(self, "rounds", []) + [(t, self.adaptive)]
        return out


@pytest.mark.parametrize("oracle,min_shrinkage,adaptive", [
    ("bt", 0.0, True), ("bt", 0.999, False), ("gao-argmax", 0.0, False)])
def test_the_agent_spends_the_budget_and_falls_back_to_d_optimal(oracle, min_shrinkage, adaptive):
    """Under BT labels the rounds after the first are adaptive; noiseless labels (always
    separable) or a shrinkage factor below the threshold make every round D-optimal (0.999
    needs chi2 >= 4000, above the 2 n ln 2 <= 532 that n < 384 labels allow)."""
    env = rlhf_env.make("LinearBT-v0", seed=103, setting="online", query_budget=512, dim=4,
                        oracle=oracle)
    agent = Recording(env, iterations=4, min_shrinkage=min_shrinkage, seed=103)
    agent.learn()
    assert env.unwrapped.queries_used == 512
    assert [r[0] for r in agent.rounds] == [0, 1, 2, 3]
    assert agent.rounds[0][1] is False
    assert all(r[1] is adaptive for r in agent.rounds[1:]), agent.rounds
    assert rlhf_env.evaluate(agent.policy, env)["normalized_score"] > 0.2


def test_round_sizes_and_refusals():
    env = rlhf_env.make("LinearBT-v0", seed=0, setting="online", query_budget=100)
    agent = agents.make("adaptive_design_gibbs", env, iterations=4, first_share=0.25)
    assert agent.config.round_sizes(env.unwrapped) == [25, 25, 25, 25]
    agent = agents.make("adaptive_design_gibbs", env, iterations=3, first_share=0.3)
    assert agent.config.round_sizes(env.unwrapped) == [30, 35, 35]
    agent = agents.make("adaptive_design_gibbs", env, iterations=4, first_share=0.5)
    assert agent.config.round_sizes(env.unwrapped) == [50, 17, 17, 16]
    with pytest.raises(rlhf_env.errors.RLHFEnvError, match="iterations must be >= 2"):
        agents.make("adaptive_design_gibbs", env, iterations=1)
    with pytest.raises(rlhf_env.errors.RLHFEnvError, match="linear env"):
        agents.make("adaptive_design_gibbs", rlhf_env.make("TinyInstruct-v0", size="small"))

"""Exact evaluation against closed-form sums written independently of the library."""

import math

import numpy as np
import pytest
import torch

import rlhf_env
from rlhf_env.errors import InvalidArgumentError
from rlhf_env.policies import TabularPolicy


def independent_metrics(pi, env):
    """Plain-Python loops over prompts and actions: the oracle for evaluate()."""
    u = env.unwrapped
    feats, theta, eta = u.features, rlhf_env.judge(env).theta_star, u.eta
    log_ref = u.reference.log_probs_table().detach().numpy()
    n, k, _ = feats.shape
    gold = kl = win = j_star = j_ref = 0.0
    for x in range(n):
        r = [float(np.dot(theta, feats[x, a])) for a in range(k)]
        w0_logits = [math.log(max(p, 1e-300)) for p in np.exp(log_ref[x])]
        z = math.log(sum(math.exp(v) for v in w0_logits))
        pi0 = [math.exp(v - z) for v in w0_logits]
        gold += sum(pi[x][a] * r[a] for a in range(k)) / n
        kl += sum(pi[x][a] * math.log(pi[x][a] / pi0[a]) for a in range(k) if pi[x][a] > 0) / n
        win += sum(
            pi[x][a] * pi0[b] / (1 + math.exp(-(r[a] - r[b]))) for a in range(k) for b in range(k)
        ) / n
        j_star += eta * math.log(sum(pi0[a] * math.exp(r[a] / eta) for a in range(k))) / n
        j_ref += sum(pi0[a] * r[a] for a in range(k)) / n
    return gold, kl, win, j_star, j_ref


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_metrics_match_independent_computation(seed):
    env = rlhf_env.make("LinearBT-v0", seed=seed, eta=0.5)
    u = env.unwrapped
    gen = torch.Generator().manual_seed(seed)
    pol = TabularPolicy(u.catalog, torch.randn(32, 16, generator=gen, dtype=torch.float64))
    pi = pol.probs_table().detach().numpy().tolist()
    gold, kl, win, j_star, j_ref = independent_metrics(pi, env)
    m = rlhf_env.evaluate(pol, env)
    assert m["gold_reward"] == pytest.approx(gold, abs=1e-10)
    assert m["kl"] == pytest.approx(kl, abs=1e-10)
    assert m["win_rate"] == pytest.approx(win, abs=1e-10)
    assert m["objective"] == pytest.approx(gold - 0.5 * kl, abs=1e-10)
    assert m["optimal_objective"] == pytest.approx(j_star, abs=1e-10)
    assert m["reference_objective"] == pytest.approx(j_ref, abs=1e-10)
    assert m["normalized_score"] == pytest.approx((m["objective"] - j_ref) / (j_star - j_ref))


@pytest.mark.parametrize("env_id", ["LinearBT-v0", "LinearBT-Narrow-v0"])
def test_reference_scores_zero_and_optimum_scores_one(env_id):
    env = rlhf_env.make(env_id)
    u = env.unwrapped
    pi_star = rlhf_env.judge(env).optimal_policy()
    ref = rlhf_env.evaluate(u.reference, env)
    opt = rlhf_env.evaluate(pi_star, env)
    assert abs(ref["normalized_score"]) < 1e-9
    assert abs(opt["normalized_score"] - 1) < 1e-9
    assert ref["kl"] == pytest.approx(0, abs=1e-12) and ref["win_rate"] == pytest.approx(0.5)
    # the problem is worth solving
    assert opt["objective"] - ref["objective"] > 0.3
    # pi* maximises J: any perturbation scores lower
    logits = pi_star.logits().detach() + 0.3 * torch.randn(32, 16, dtype=torch.float64)
    assert rlhf_env.evaluate(TabularPolicy(u.catalog, logits), env)["normalized_score"] < 1


def test_evaluation_spends_no_queries_and_rejects_options():
    env = rlhf_env.make("LinearBT-v0", setting="online", query_budget=1)
    rlhf_env.evaluate(env.unwrapped.reference, env)
    assert env.unwrapped.queries_used == 0
    with pytest.raises(InvalidArgumentError, match="no options"):
        rlhf_env.evaluate(env.unwrapped.reference, env, n_samples=4)

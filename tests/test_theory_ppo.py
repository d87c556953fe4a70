"""The paper's theoretical agents and the SB3 PPO baseline on the exact bandit."""

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env

import agents
import rlhf_env
from agents.algorithms.best_of_n import reference_pairs
from agents.algorithms.gshf import enhancer_search, uncertainty_bonus, wald_width
from agents.algorithms.ppo import KLBanditEnv, PPOConfig, train_ppo_on_table
from agents.data import PreferenceData
from agents.reward_models import LinearBTReward
from rlhf_env.errors import InvalidArgumentError
from rlhf_env.policies.closed_forms import gibbs_log_probs as gibbs_table


def exact_kl(logp, logq):
    return float((np.exp(logp) * (logp - logq)).sum(axis=1).mean())


def tables(env):
    """(r*, log pi0) of an exact env, ``(N, K)`` each."""
    return (rlhf_env.judge(env).reward_table(),
            env.unwrapped.reference.log_probs_table().detach().double().numpy())


@pytest.fixture(scope="module")
def env():
    return rlhf_env.make("LinearBT-v0", seed=0)


def test_gibbs_table_hand_computed_and_is_the_env_optimum(env):
    """pi*(a|x) = pi0(a|x) e^{r/eta} / sum_b pi0(b|x) e^{r_b/eta}, in plain Python per row."""
    import math

    r, log_ref = tables(env)
    eta = env.unwrapped.eta
    ours = gibbs_table(log_ref, r, eta)
    for x in (0, 7, 31):
        w = [math.exp(log_ref[x, a] + r[x, a] / eta) for a in range(r.shape[1])]
        np.testing.assert_allclose(np.exp(ours[x]), np.array(w) / sum(w), rtol=1e-12)
    # and the optimum beats every perturbation of it (it maximises J)
    best = rlhf_env.evaluate(rlhf_env.judge(env).optimal_policy(), env)["objective"]
    gen = torch.Generator().manual_seed(0)
    noisy = torch.from_numpy(ours) + 0.2 * torch.randn(ours.shape, generator=gen,
                                                       dtype=torch.float64)
    from rlhf_env.policies import TabularPolicy

    assert rlhf_env.evaluate(TabularPolicy(env.unwrapped.catalog, noisy), env)["objective"] < best


def test_checkers_pass_on_the_ppo_wrapper(env):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    u = env.unwrapped
    gold, log_ref = tables(env)
    w = KLBanditEnv(gold, log_ref, u.eta)
    gym_check_env(w, skip_render_check=True)
    sb3_check_env(w, warn=True)
    w.reset(seed=0)
    x = w.prompt
    _, r, term, trunc, _ = w.step(3)  # r*(x, 3) + eta log pi0(3|x)
    assert term and not trunc
    assert r == pytest.approx(gold[x, 3] + u.eta * log_ref[x, 3])


def test_ppo_against_a_fixed_reward_converges_to_its_gibbs_policy(env):
    """Measured on this instance: KL(PPO || Gibbs) = 0.040 after 65,536 steps (pi0 -> pi*: 0.71)."""
    u = env.unwrapped
    r, log_ref = tables(env)
    config = PPOConfig(learning_rate=0.3, n_steps=8192, batch_size=8192, n_epochs=10)
    logp = train_ppo_on_table(r, log_ref, u.eta, timesteps=65536, config=config)
    assert exact_kl(logp, gibbs_table(log_ref, r, u.eta)) < 0.08
    assert exact_kl(log_ref, gibbs_table(log_ref, r, u.eta)) > 0.5  # where it started


def test_pessimism_bonus_hand_computed_and_beta_zero_is_the_mle(env):
    u = env.unwrapped
    _, log_ref = tables(env)
    mle = agents.make("mle_gibbs", env, progress=False).learn()
    zero = agents.make("pessimistic_gibbs", env, confidence_width=0.0, progress=False).learn()
    torch.testing.assert_close(mle.policy.log_probs_table(), zero.policy.log_probs_table())
    with pytest.warns(FutureWarning, match="'beta' is deprecated: use 'confidence_width'"):
        pess = agents.make("pessimistic_gibbs", env, beta=2.0, progress=False)
    assert pess.config.confidence_width == 2.0
    rm = LinearBTReward(u, PreferenceData.from_dataset(u.offline_dataset), ridge=0.1)
    bonus = uncertainty_bonus(u.features, log_ref, rm.sigma)
    x, a = 5, 7
    phi, pi0 = u.features[x], np.exp(log_ref[x])
    d = phi[a] - pi0 @ phi
    assert bonus[x, a] == pytest.approx(np.sqrt(d @ np.linalg.solve(rm.sigma, d)))
    pess.learn()
    expected = gibbs_table(log_ref, rm.table() - 2.0 * bonus, u.eta)
    torch.testing.assert_close(pess.policy.log_probs_table().double(), torch.from_numpy(expected))


def test_enhancer_is_feasible_and_explores(env):
    u = env.unwrapped
    log_pi1 = tables(env)[1]
    sigma = 0.1 * np.eye(u.features.shape[-1])  # no data: every direction uncertain
    logq, gamma, kl = enhancer_search(log_pi1, u.features, sigma, u.eta, 1.0,
                                      np.geomspace(0.1, 20, 12))
    assert gamma > 0 and u.eta * kl <= gamma
    assert exact_kl(logq, log_pi1) == pytest.approx(kl)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gshf_online_reaches_0_9_within_its_default_budget(seed):
    """Measured (seeds 0-4): 0.972 0.959 0.957 0.971 0.977."""
    env = rlhf_env.make("LinearBT-v0", seed=seed)
    agent = agents.make("gshf_online", env, seed=seed, progress=False).learn()
    assert rlhf_env.evaluate(agent.policy, env)["normalized_score"] >= 0.9
    assert env.unwrapped.queries_used == env.unwrapped.query_budget == 1024


def test_theory_agents_refuse_language_envs(tiny_env):
    for name in ("mle_gibbs", "gshf_online"):
        with pytest.raises(InvalidArgumentError, match="linear env"):
            agents.make(name, tiny_env)


def test_wald_width_hand_worked():
    """x = (1, 0) and (0, 2), theta = (0, 0.5): <theta, x> = 0 and 1, sigmoid' = 0.25 and
    sigmoid(1)(1 - sigmoid(1)) = 0.196612; kappa = 0.223306; z_0.95 = 1.644854;
    beta = 1.644854 / sqrt(0.223306) = 3.480784. Without data kappa = 1/4: beta = 2 z."""
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert wald_width(x, np.array([0.0, 0.5])) == pytest.approx(3.480784, abs=1e-6)
    assert wald_width(np.zeros((0, 2)), np.zeros(2)) == pytest.approx(2 * 1.644854, abs=1e-6)
    assert wald_width(x, np.array([0.0, 0.5]), 0.975) == pytest.approx(
        1.959964 / np.sqrt(0.223306), abs=1e-5)


def test_pessimism_with_the_wald_rule_is_the_gibbs_policy_of_its_lcb():
    env = rlhf_env.make("LinearBT-Coverage-v0", seed=0, setting="offline")
    u = env.unwrapped
    _, log_ref = tables(env)
    agent = agents.make("pessimistic_gibbs", env, width_rule="wald", progress=False).learn()
    data = PreferenceData.from_dataset(u.offline_dataset)
    rm = LinearBTReward(u, data, ridge=agent.config.ridge)
    pid = u.catalog.prompt_ids(data.prompts)
    x = (u.features[pid, u.catalog.response_ids(data.chosen)]
         - u.features[pid, u.catalog.response_ids(data.rejected)])
    beta = wald_width(x, rm.theta)
    assert agent.logger.history[-1]["train/confidence_width"] == pytest.approx(beta)
    expected = gibbs_table(log_ref, rm.table() - beta * uncertainty_bonus(
        u.features, log_ref, rm.sigma), u.eta)
    torch.testing.assert_close(agent.policy.log_probs_table().double(),
                               torch.from_numpy(expected))
    with pytest.raises(InvalidArgumentError, match="width_rule must be one of"):
        agents.make("pessimistic_gibbs", env, width_rule="bonferroni")


def test_offline_learners_at_equal_labels_pay_for_pi0_pairs():
    """mle_gibbs_pi0 spends the whole budget on labelled pairs of distinct pi0 samples and is
    the Gibbs policy of the MLE of exactly those pairs; dpo_pi0 spends it too."""
    env = rlhf_env.make("LinearBT-v0", seed=1, setting="online", query_budget=96)
    u = env.unwrapped
    agent = agents.make("mle_gibbs_pi0", env, seed=1, progress=False).learn()
    assert u.queries_used == 96 and len(agent.data) == 96
    assert all(c != r for c, r in zip(agent.data.chosen, agent.data.rejected))
    rm = LinearBTReward(u, agent.data, ridge=0.1)
    torch.testing.assert_close(agent.policy.log_probs_table().double(), torch.from_numpy(
        gibbs_table(tables(env)[1], rm.table(), u.eta)))
    env2 = rlhf_env.make("LinearBT-v0", seed=1, setting="online", query_budget=96)
    agents.make("dpo_pi0", env2, seed=1, progress=False, num_train_epochs=5).learn()
    assert env2.unwrapped.queries_used == 96
    with pytest.raises(InvalidArgumentError, match="needs preference data"):
        agents.make("mle_gibbs", rlhf_env.make("LinearBT-v0", setting="online"))
    with pytest.raises(InvalidArgumentError, match="labels = 2000 queries"):
        agents.make("pessimistic_gibbs_pi0", env, query_pairs=2000)
    hybrid = rlhf_env.make("LinearBT-v0", seed=1)  # plain mle_gibbs pays nothing
    agents.make("mle_gibbs", hybrid, progress=False).learn()
    assert hybrid.unwrapped.queries_used == 0


def test_reference_pairs_follow_pi0_conditioned_on_differing():
    """a1 ~ pi0, a2 ~ pi0(. | a2 != a1): P(a2 = b | a1 = a) = pi0(b) / (1 - pi0(a)); on one
    prompt with 20,000 pairs every conditional frequency is within 0.02 of it."""
    env = rlhf_env.make("LinearBT-v0", seed=0).unwrapped
    ref = env.reference
    p0 = ref.probs_table().detach().double().numpy()[3]
    a1, a2 = reference_pairs(ref, ["prompt-3"] * 20000, torch.Generator().manual_seed(0))
    i1, i2 = env.catalog.response_ids(a1), env.catalog.response_ids(a2)
    assert (i1 != i2).all()
    np.testing.assert_allclose(np.bincount(i1, minlength=16) / 20000, p0, atol=0.015)
    top = int(np.argmax(p0))
    sel = i2[i1 == top]
    cond = np.where(np.arange(16) == top, 0.0, p0) / (1 - p0[top])
    np.testing.assert_allclose(np.bincount(sel, minlength=16) / len(sel), cond, atol=0.02)


def test_gshf_without_width_asks_pairs_of_its_main_agent(env):
    log_pi1 = tables(env)[1]
    sigma = 0.1 * np.eye(env.unwrapped.features.shape[-1])
    logq, gamma, kl = enhancer_search(log_pi1, env.unwrapped.features, sigma, 1.0, 0.0,
                                      np.geomspace(0.1, 20, 12))
    assert gamma == 0 and kl == 0 and np.array_equal(logq, log_pi1)


def test_ppo_leaves_no_sb3_folder_in_the_temp_dir(env, tmp_path, monkeypatch):
    """SB3's default logger makes an empty SB3-<date> folder per learn() without a
    tensorboard_log; the agent's models log nowhere (its RunLogger logs)."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    u = env.unwrapped
    r, log_ref = tables(env)
    config = PPOConfig(learning_rate=0.3, n_steps=64, batch_size=64, n_epochs=1)
    train_ppo_on_table(r, log_ref, u.eta, timesteps=64, config=config)
    assert not list(tmp_path.glob("SB3-*"))

"""Diagnostics of learned reward models against the gold reward (hand-checked extremes)."""

import numpy as np
import pytest

import rlhf_env
from rlhf_env.diagnostics import proxy_reward, reward_model_agreement


@pytest.fixture(scope="module")
def env():
    return rlhf_env.make("LinearBT-v0", seed=0)


def test_agreement_is_one_for_the_gold_reward_zero_for_its_negation_half_for_a_constant(env):
    gold = rlhf_env.judge(env).gold_rewards
    assert reward_model_agreement(gold, env) == 1.0
    assert reward_model_agreement(lambda p, r: -gold(p, r), env) == 0.0
    assert reward_model_agreement(lambda p, r: np.zeros(len(r)), env) == 0.5


def test_proxy_reward_of_the_gold_reward_is_the_gold_reward(env):
    gold = rlhf_env.judge(env).gold_rewards
    pi0 = env.unwrapped.reference
    proxy = proxy_reward(gold, pi0, env, n_prompts=None, n_samples=256, seed=0)
    exact = rlhf_env.evaluate(pi0, env)["gold_reward"]
    assert proxy == pytest.approx(exact, abs=0.1)
    assert env.unwrapped.queries_used == 0

"""The Discrete view of exact envs: SB3's stock PPO trains on it end to end."""

import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env

import rlhf_env
from rlhf_env.errors import InvalidActionError, InvalidArgumentError
from rlhf_env.policies import TabularPolicy
from rlhf_env.wrappers import DiscreteBandit


def test_stock_sb3_ppo_beats_pi0_on_the_discrete_view():
    env = rlhf_env.make("LinearBT-v0", setting="online", feedback="reward", query_budget=20_000,
                        seed=0)
    view = DiscreteBandit(env, kl_shaped=True)
    check_env(view)
    model = PPO("MlpPolicy", view, ent_coef=env.unwrapped.eta, seed=0, n_steps=1024,
                batch_size=256, learning_rate=1e-3, device="cpu")
    callback = view.evaluation_callback(every=4096)
    before = env.unwrapped.queries_used  # check_env's steps
    model.learn(16_384, callback=callback)
    policy = view.policy_of(model)
    with torch.no_grad():  # the way back equals reading SB3's distribution by hand
        obs = model.policy.obs_to_tensor(torch.arange(view.observation_space.n).numpy())[0]
        logits = torch.log_softmax(model.policy.get_distribution(obs).distribution.logits, -1)
    torch.testing.assert_close(policy.log_probs_table(), logits.double(), atol=1e-6, rtol=0)
    score = rlhf_env.evaluate(policy, env)
    assert score["normalized_score"] > 0.3  # pi0 scores 0; measured 0.70 (seed 0)
    assert env.unwrapped.queries_used == before + 16_384  # every step paid, evaluations none
    assert len(callback.history) == 4
    # the last evaluation comes before SB3's last update (it runs inside the rollout)
    assert [h["timesteps"] for h in callback.history] == [4096, 8192, 12288, 16384]
    assert 0.3 < callback.history[-1]["normalized_score"] < 1
    assert isinstance(policy, TabularPolicy)


def test_the_view_charges_the_budget_and_shapes_the_reward():
    env = rlhf_env.make("LinearBT-v0", setting="online", feedback="reward", query_budget=2)
    view = DiscreteBandit(env, kl_shaped=True)
    x, _ = view.reset(seed=0)
    _, r, term, _, _ = view.step(3)
    gold = rlhf_env.judge(env).reward_table()[x, 3]
    assert term and r == pytest.approx(gold + env.unwrapped.eta * view.log_ref[x, 3])
    view.reset()
    view.step(0)
    view.reset()
    with pytest.raises(rlhf_env.QueryBudgetExceeded):
        view.step(1)
    with pytest.raises(InvalidActionError):
        view.step(16)


def test_the_view_refuses_what_it_cannot_present():
    with pytest.raises(InvalidArgumentError, match="feedback='reward'"):
        DiscreteBandit(rlhf_env.make("LinearBT-v0"))

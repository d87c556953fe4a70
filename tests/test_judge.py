"""The judge: agents cannot read the answer off the env; evaluation and analysis can ask for it."""

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest

import agents
import rlhf_env
from rlhf_env.errors import PrivilegedAttributeError, QueryBudgetExceeded
from rlhf_env.judging import Judge
from rlhf_env.oracles import Oracle

ROUTES = [
    ("theta_star", lambda u: u.theta_star),
    ("gold_rewards", lambda u: u.gold_rewards()),
    ("optimal_policy", lambda u: u.optimal_policy()),
    ("behaviour_probs", lambda u: u.behaviour_probs("narrow")),
    ("_oracle", lambda u: u._oracle.preferences(["prompt-0"], ["response-0"], ["response-1"],
                                                np.random.default_rng(0))),
    ("_gold_reward", lambda u: u._gold_reward(["prompt-0"], ["response-0"])),
]


@pytest.mark.parametrize("name, cheat", ROUTES, ids=[r[0] for r in ROUTES])
def test_the_three_line_cheat_fails_on_every_view(name, cheat):
    env = rlhf_env.make("LinearBT-Narrow-v0", seed=0)
    views = {"env.unwrapped": env.unwrapped, "vector env": env.unwrapped.make_vec(4),
             "rlhf_env.make_vec": rlhf_env.make_vec("LinearBT-v0", 2)}
    for where, view in views.items():
        with pytest.raises(PrivilegedAttributeError, match=r"rlhf_env\.judge\(env\)") as e:
            cheat(view)
        assert isinstance(e.value, AttributeError), where  # hasattr() is False, as it should be
    with pytest.raises(AttributeError):  # Gymnasium's wrappers do not forward it either
        env.get_wrapper_attr(name)
    assert env.unwrapped.queries_used == 0


def test_the_vector_env_holds_no_raw_env_and_no_public_path_reaches_the_answer():
    """Walk the public attributes of every view (two levels deep): none is the judge, an
    oracle that labels without the ledger, or theta*."""
    env = rlhf_env.make("LinearBT-v0", seed=0)
    theta = rlhf_env.judge(env).theta_star
    venv = env.unwrapped.make_vec(3)
    with pytest.raises(PrivilegedAttributeError):
        venv.env  # noqa: B018
    seen = []

    def walk(obj, depth, path):
        for name in dir(obj):
            if name.startswith("_") or name in ("np_random", "unwrapped", "spec"):
                continue
            try:
                value = getattr(obj, name)
            except Exception:  # noqa: BLE001 - properties of another kind may raise
                continue
            seen.append(f"{path}.{name}")
            assert not isinstance(value, (Judge, Oracle)), f"{path}.{name}"
            if isinstance(value, np.ndarray) and value.shape == theta.shape:
                assert not np.allclose(value, theta), f"{path}.{name}"
            if depth and not callable(value) and type(value).__module__.startswith("rlhf_env"):
                walk(value, depth - 1, f"{path}.{name}")

    for label, view in {"unwrapped": env.unwrapped, "venv": venv,
                        "instance": env.unwrapped.instance}.items():
        walk(view, 2, label)
    assert "instance.reference" in seen and "venv.features" in seen


def test_the_instance_labels_only_through_the_ledger():
    env = rlhf_env.make("LinearBT-v0", setting="online", query_budget=2, seed=0)
    inst = env.unwrapped.instance
    rng = np.random.default_rng(0)
    inst.label(["prompt-0"] * 2, ["response-0"] * 2, ["response-1"] * 2, rng)
    assert inst.queries_used == 2
    with pytest.raises(QueryBudgetExceeded):
        inst.label(["prompt-0"], ["response-0"], ["response-1"], rng)
    with pytest.raises(AttributeError):
        inst.queries_used = 0  # noqa: B018 - counters are read-only


def test_the_judge_is_reached_from_any_view_and_copies_share_the_instance():
    env = rlhf_env.make("LinearBT-v0", seed=0)
    j = rlhf_env.judge(env)
    inst = env.unwrapped.instance
    for view in (env.unwrapped, env.unwrapped.make_vec(2), inst):
        assert rlhf_env.judge(view).instance is inst and rlhf_env.judge(view).cache is j.cache
    twin = copy.deepcopy(env)
    assert twin.unwrapped.instance is inst and rlhf_env.judge(twin).instance is inst
    # a judge keeps its instance alive; the instance does not keep its judge (no leak)
    lone = rlhf_env.judge(rlhf_env.make("LinearBT-v0", seed=3))
    assert lone.optimal_policy() is not None
    assert j.reward_table().shape == (32, 16) and np.linalg.norm(j.theta_star) == pytest.approx(6)
    tiny = rlhf_env.make("LinearBT-v0", n_prompts=2, n_actions=3, dim=2)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(tiny)
    with pytest.raises(rlhf_env.InvalidArgumentError, match="not an rlhf_env environment"):
        rlhf_env.judge(gym.make("CartPole-v1"))


def test_gymnasium_sync_vectorisation_shares_one_ledger():
    venv = gym.make_vec("rlhf_env/LinearBT-v0", 3, vectorization_mode="sync",
                        setting="online", query_budget=4)
    instances = {id(e.unwrapped.instance) for e in venv.envs}
    assert len(instances) == 1
    venv.reset(seed=0)
    venv.step((("response-0",) * 3, ("response-1",) * 3))
    assert venv.envs[0].unwrapped.queries_used == 3
    with pytest.raises(QueryBudgetExceeded):
        for _ in range(4):  # Gymnasium's next-step autoreset: every other step resets
            venv.step((("response-0",) * 3, ("response-1",) * 3))
    assert venv.envs[0].unwrapped.queries_used == 4  # the budget, not 3 budgets


def test_honest_agents_need_no_change():
    env = rlhf_env.make("LinearBT-v0", seed=0)
    agent = agents.make("gshf_online", env, seed=0, progress=False, iterations=2).learn()
    assert rlhf_env.evaluate(agent.policy, env)["normalized_score"] > 0.8
    assert env.unwrapped.queries_used == 1024

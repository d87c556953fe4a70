import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import rlhf_env
from rlhf_env.errors import InvalidKwargError, UnknownEnvError
from tests.conftest import SMALL_KWARGS as SMALL
from tests.conftest import require_hh_data


@pytest.mark.parametrize("env_id", rlhf_env.list_envs())
def test_check_env_every_registered_id(env_id):
    """Every id, made with its defaults (small configs for the language envs)."""
    if env_id.startswith("HH-RLHF"):
        require_hh_data()
    env = rlhf_env.make(env_id, **SMALL.get(env_id, {}))
    check_env(env.unwrapped)
    # and through Gymnasium's own make, with its wrappers
    env2 = gym.make(f"rlhf_env/{env_id}", **SMALL.get(env_id, {}))
    obs, info = env2.reset(seed=0)
    assert obs in env2.observation_space
    assert "prompt_id" in info


def test_registry_lists_linear_bt():
    assert {"LinearBT-v0", "LinearBT-Narrow-v0"} <= set(rlhf_env.list_envs())
    s = rlhf_env.spec("LinearBT-Narrow-v0")
    assert s.kwargs == {"behaviour": "narrow"}
    assert rlhf_env.spec("rlhf_env/LinearBT-v0").id == "LinearBT-v0"


def test_narrow_is_linear_bt_v0_with_poorly_covering_offline_data(capsys):
    """What `rlhf-zoo list` says of LinearBT-Narrow-v0: the same instance per seed as
    LinearBT-v0 (features, pi0, hidden reward), only the offline pairs differ, drawn mostly
    from the low-reward half."""
    from agents.zoo.cli import main

    v0, narrow = rlhf_env.make("LinearBT-v0", seed=3), rlhf_env.make("LinearBT-Narrow-v0", seed=3)
    np.testing.assert_array_equal(v0.unwrapped.features, narrow.unwrapped.features)
    np.testing.assert_array_equal(rlhf_env.judge(v0).reward_table(),
                                  rlhf_env.judge(narrow).reward_table())
    r = rlhf_env.judge(v0).reward_table()
    low = r <= np.median(r, axis=1, keepdims=True)

    def low_share(env):
        data = env.unwrapped.offline_dataset
        cat = env.unwrapped.catalog
        pid = cat.prompt_ids(data["prompt"])
        picked = np.concatenate([cat.response_ids(data["chosen"]), cat.response_ids(data["rejected"])])
        return low[np.concatenate([pid, pid]), picked].mean()

    assert low_share(narrow) > 0.85 > 0.6 > low_share(v0)
    assert main(["list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "LinearBT-Narrow-v0" in x)
    assert "LinearBT-v0's instances" in line and "poor coverage" in line


def test_unknown_id_suggests_closest():
    with pytest.raises(UnknownEnvError, match="LinearBT-v0") as e:
        rlhf_env.make("LinearBT-v1")
    assert "Did you mean" in str(e.value)


def test_unknown_kwarg_is_named_with_valid_list():
    with pytest.raises(InvalidKwargError, match="etaa") as e:
        rlhf_env.make("LinearBT-v0", etaa=0.1)
    assert "eta" in str(e.value) and "query_budget" in str(e.value)
    with pytest.raises(InvalidKwargError, match="etaa"):
        gym.make("rlhf_env/LinearBT-v0", etaa=0.1)


def test_register_custom_id_and_gym_vector_entry():
    rlhf_env.register(
        "MyBandit-v0",
        "rlhf_env.envs.linear_bt:LinearBTEnv",
        kwargs={"n_prompts": 4, "n_actions": 3, "dim": 2},
        override=True,
    )
    env = rlhf_env.make("MyBandit-v0")
    assert len(env.unwrapped.train_prompts) == 4
    venv = gym.make_vec("rlhf_env/MyBandit-v0", num_envs=3, vectorization_mode="vector_entry_point")
    obs, _ = venv.reset(seed=0)
    assert len(obs["prompt"]) == 3
    with pytest.raises(ValueError, match="already registered"):
        rlhf_env.register("MyBandit-v0", "rlhf_env.envs.linear_bt:LinearBTEnv")


def test_every_env_module_registers_its_own_ids():
    """An env of the package is one module: its REGISTER literal is all it takes."""
    from rlhf_env.envs import builtin_envs

    entries = builtin_envs()
    assert {e["id"] for e in entries} == set(rlhf_env.list_envs()) - {"MyBandit-v0"}
    for e in entries:
        module = e["entry_point"].partition(":")[0]
        assert rlhf_env.spec(e["id"]).entry_point == e["entry_point"]
        assert module.startswith("rlhf_env.envs."), e


def test_gymnasium_async_vectorization_is_refused_in_the_caller():
    """One problem instance per process would split the budget: the package's error, raised
    in the caller before any worker starts (not a worker's dropped pipe)."""
    from rlhf_env.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="vectorization_mode='async'"):
        gym.make_vec("rlhf_env/LinearBT-v0", num_envs=2, vectorization_mode="async")
    venv = gym.make_vec("rlhf_env/LinearBT-v0", num_envs=2, vectorization_mode="sync")
    assert len(venv.reset(seed=0)[0]["prompt"]) == 2  # sync still shares one ledger

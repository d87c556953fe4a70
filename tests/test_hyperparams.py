"""One source of hyperparameters: zoo_configs/<agent>.yml for agents.make and the zoo alike,
typed checks before anything runs, and the configs shipped inside the installed package."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import agents
import rlhf_env
from agents.algorithms.ppo import PPOConfig
from rlhf_env.errors import DataError, InvalidArgumentError, InvalidKwargError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env():
    return rlhf_env.make("LinearBT-v0", seed=0)


def test_agents_make_reads_the_zoo_config_like_the_zoo(env):
    from agents.zoo import resolve

    dpo = agents.make("dpo", env)
    # the dataclass default is the language-model one; the 'exact' entry of dpo.yml wins
    assert dpo.config.learning_rate == 0.1 and dpo.config.per_device_train_batch_size is None
    assert dpo.config.learning_rate != agents.get("dpo").Config().learning_rate
    run = resolve("dpo", "LinearBT-v0", 0)
    assert {k: getattr(dpo.config, k) for k in run.hyperparams} == run.hyperparams
    assert agents.make("dpo", env, learning_rate=0.2).config.learning_rate == 0.2
    ppo = agents.make("ppo", env)
    assert ppo.config.n_steps == 4096 and ppo.config.n_steps != PPOConfig().n_steps


def test_a_missing_config_is_an_error_not_an_empty_one(env, tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_ZOO_CONFIGS", str(tmp_path))
    with pytest.raises(DataError, match=r"no zoo config for agent 'dpo'.*dpo.yml is missing"):
        agents.make("dpo", env)
    (tmp_path / "dpo.yml").write_text("LinearBT-v0:\n  leraning_rate: 0.1\n")
    with pytest.raises(InvalidKwargError, match=r"entry 'LinearBT-v0'.*Did you mean "
                                                r"'learning_rate'"):
        agents.make("dpo", env)


@pytest.mark.parametrize("key, value, match", [
    ("warm_start", "no", "must be true or false"),
    ("learning_rate", float("inf"), "must be finite"),
    ("learning_rate", float("nan"), "must be finite"),
    ("learning_rate", -1.0, "learning_rate must be > 0"),
    ("iterations", 2.0, "must be an int"),
    ("iterations", True, "must be an int"),
    ("beta", "0.1", "must be a number"),
    ("reward_model", {"kind": "nope"}, "reward_model.kind must be one of"),
    ("reward_model.stepz", 3, "unknown hyperparameter 'reward_model.stepz'"),
    ("enhancer", "bon", "enhancer must be one of"),
])
def test_hyperparameters_are_typed_and_checked_before_anything_runs(env, key, value, match):
    used = env.unwrapped.queries_used
    with pytest.raises((InvalidArgumentError, InvalidKwargError), match=match):
        agents.make("iterative_dpo", env, **{key: value})
    assert env.unwrapped.queries_used == used


def test_nested_reward_model_settings(env):
    a = agents.make("best_of_n", env, **{"reward_model.ridge": 0.5})
    assert a.config.reward_model.ridge == 0.5 and a.config.reward_model.kind == "auto"
    assert agents.make("best_of_n", env, reward_model="tabular").config.reward_model.kind == \
        "tabular"
    with pytest.raises(InvalidArgumentError, match="'neural' is for sampled"):
        agents.make("ppo", env, reward_model="neural")


def test_resume_is_refused_clearly_where_it_is_not_supported(env, tmp_path):
    ppo = agents.make("ppo", env, iterations=1, timesteps_per_iteration=64, n_steps=64,
                      batch_size=64, progress=False)
    with pytest.raises(InvalidArgumentError, match="'ppo' cannot resume"):
        ppo.learn(resume_from=tmp_path)
    with pytest.raises(InvalidArgumentError, match="is not a checkpoint folder"):
        agents.make("dpo", env).learn(resume_from=tmp_path / "nowhere")


def test_the_wheel_ships_the_zoo_configs(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("rlhf_env-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {Path(n).name for n in names if n.startswith("zoo_configs/")}
    assert {f"{a}.yml" for a in agents.list_agents()} <= shipped

"""The audit's bad inputs (issue 22): raw tracebacks, silent accepts and hangs it found on
c2c6149, each now refused with the package's own error before anything is charged, built
or written. Table-driven, as tests/test_bad_input.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rlhf_env
from rlhf_env.errors import DataError, InvalidActionError, InvalidKwargError, RLHFEnvError
from rlhf_env.oracles import Labels, Oracle

LIN = "LinearBT-v0"

# -- sampled evaluate: every option checked, as on exact envs ----------------------------------
EVAL_CASES = {
    "n_prompts float": {"n_prompts": 2.5},
    "n_prompts negative": {"n_prompts": -1},
    "n_prompts zero": {"n_prompts": 0},
    "n_prompts beyond the env": {"n_prompts": 10_000},
    "n_samples bool": {"n_samples": True},
    "n_samples zero": {"n_samples": 0},
    "temperature nan": {"temperature": math.nan},
    "temperature negative": {"temperature": -1.0},
    "top_p zero": {"top_p": 0.0},
    "top_p above one": {"top_p": 1.5},
    "seed str": {"seed": "a"},
    "seed negative": {"seed": -3},
    "typo n_sample": {"n_sample": 3},
    "best_of_n str": {"best_of_n": "4"},
    "best_of_n zero": {"best_of_n": [0]},
    "optimal_samples float": {"optimal_samples": 1.5},
    "per_prompt int": {"per_prompt": 1},
}


@pytest.mark.parametrize("case", list(EVAL_CASES))
def test_sampled_evaluate_checks_its_options(tiny_env, case):
    with pytest.raises(RLHFEnvError):
        rlhf_env.evaluate(tiny_env.unwrapped.reference, tiny_env, **EVAL_CASES[case])


# -- env construction ----------------------------------------------------------------------------
ENV_CASES = {
    "reference_norm 1e6 (NaN probabilities)": lambda: rlhf_env.make(LIN, reference_norm=1e6),
    "theta_norm 1e6": lambda: rlhf_env.make(LIN, theta_norm=1e6),
    "eta 1e300 (J* 1e283)": lambda: rlhf_env.make(LIN, eta=1e300),
    "eta 1e-300": lambda: rlhf_env.make(LIN, eta=1e-300),
    "explore reference_norm": lambda: rlhf_env.make("LinearBT-Explore-v0", reference_norm=1e9),
    "coverage trap_penalty": lambda: rlhf_env.make("LinearBT-Coverage-v0", trap_penalty=1e9),
    "reward feedback drops flips": lambda: rlhf_env.make(LIN, feedback="reward",
                                                         oracle="coste-flip25"),
    "reward feedback drops annotators": lambda: rlhf_env.make(LIN, feedback="reward",
                                                              oracle="alpacafarm"),
    "make_vec of a million": lambda: rlhf_env.make_vec(LIN, 10**6),
}


@pytest.mark.parametrize("case", list(ENV_CASES))
def test_envs_refuse_values_their_maths_cannot_hold(case):
    with pytest.raises(RLHFEnvError):
        ENV_CASES[case]()


def test_registered_defaults_are_checked_at_make(scratch_registry):
    rlhf_env.register("AuditTypo-v0", "rlhf_env.envs.linear_bt:LinearBTEnv",
                      kwargs={"etaa": 1}, override=True)
    with pytest.raises(InvalidKwargError, match="defaults registered"):
        rlhf_env.make("AuditTypo-v0")


def test_reset_options_are_read_or_refused():
    env = rlhf_env.make(LIN, setting="online", query_budget=4).unwrapped
    p = env.instance.train_prompts[3]
    obs, info = env.reset(seed=0, options={"prompt": p})
    assert obs["prompt"] == p and info["prompt_id"] == env.instance.train_prompt_index(p)
    for bad in ({"prompt": "not one of them"}, {"prompt": 3}, {"prompt_ids": 1}, {"x": 1},
                ["prompt"], {"prompt": p, "prompt_id": 0}):
        with pytest.raises(RLHFEnvError):
            env.reset(options=bad)


def test_discrete_bandit_refuses_fractional_actions_and_charges_nothing():
    from rlhf_env.wrappers import DiscreteBandit

    base = rlhf_env.make(LIN, setting="online", feedback="reward", query_budget=4).unwrapped
    env = DiscreteBandit(base)
    env.reset(seed=0)
    for bad in (2.7, 2.0, True, "2", np.array([1, 2]), np.float64(1.0)):
        with pytest.raises(InvalidActionError):
            env.step(bad)
    assert base.queries_used == 0
    env.step(np.int64(2))  # an integer of any numpy width is fine
    assert base.queries_used == 1


class _Broken(Oracle):
    """A custom oracle with one bug at a time."""

    name = "broken"

    def __init__(self, bug: str) -> None:
        self.bug = bug

    def label(self, prompts, responses_1, responses_2, rng):
        n = len(prompts)
        first = np.ones(n, dtype=bool)
        labels = Labels.from_answers(responses_1, responses_2, first)
        if self.bug == "short":
            return Labels.from_answers(responses_1[:-1], responses_2[:-1], first[:-1])
        if self.bug == "preference 2":
            import dataclasses

            labels = dataclasses.replace(labels, preference=labels.preference * 2)
        if self.bug == "swapped":
            import dataclasses

            labels = dataclasses.replace(labels, chosen=labels.rejected, rejected=labels.chosen)
        if self.bug == "not labels":
            return [1] * n
        return labels


@pytest.mark.parametrize("bug", ["short", "preference 2", "swapped", "not labels"])
def test_an_oracles_bad_answer_is_refused_and_nothing_is_charged(bug, tmp_path):
    from rlhf_env.oracles import DurableLedger

    ledger = DurableLedger(tmp_path / "ledger.sqlite", 8)
    env = rlhf_env.make(LIN, setting="online", query_budget=8, oracle=_Broken(bug),
                        ledger=ledger).unwrapped
    ledger.open()
    ledger.begin_session()
    venv = env.make_vec(4)
    venv.reset(seed=0)
    with pytest.raises(DataError):
        venv.step((["response-0"] * 4, ["response-1"] * 4))
    assert env.queries_used == 0 and ledger.used == 0


def test_a_response_that_is_not_unicode_is_refused_before_the_oracle(tmp_path):
    from rlhf_env.oracles import DurableLedger

    ledger = DurableLedger(tmp_path / "ledger.sqlite", 8)
    env = rlhf_env.make("TinyInstruct-v0", size="small", n_train_prompts=8, n_eval_prompts=4,
                        n_offline=0, setting="online", query_budget=8, ledger=ledger).unwrapped
    ledger.open()
    ledger.begin_session()
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="UTF-8"):
        env.step(("b\ud800", "a"))
    assert ledger.used == 0
    env.step(("b", "a"))  # the ledger still works
    assert ledger.used == 1


def test_a_subset_folder_as_data_dir_reads_its_file_once(hh_dir):
    env = rlhf_env.make("HH-RLHF-v0", preset="tiny", data_dir=str(hh_dir / "harmless-base"),
                        n_eval_prompts=4, n_offline=8)
    assert env.unwrapped.data_report["rows"] == 1800


# -- the command line --------------------------------------------------------------------------------
def _cli(tmp_path, *argv):
    from agents.zoo import cli

    argv = list(argv)
    return cli.main(argv if "--runs-dir" in argv else [*argv, "--runs-dir",
                                                        str(tmp_path / "runs")])


CLI_CASES = {
    "env-kwargs seed": ["train", "--env", LIN, "--agent", "dpo", "--env-kwargs", "seed=5"],
    "env-kwargs oracle": ["train", "--env", LIN, "--agent", "dpo", "--env-kwargs",
                          "oracle=gao-argmax"],
    "env-kwargs ledger": ["train", "--env", LIN, "--agent", "dpo", "--env-kwargs", "ledger=foo"],
    "env-kwargs setting": ["train", "--env", LIN, "--agent", "dpo", "--env-kwargs",
                           "setting=offline"],
    "hyperparams key twice": ["train", "--env", LIN, "--agent", "dpo", "--hyperparams",
                              "learning_rate=0.1", "learning_rate=0.2"],
    "env-kwargs key twice": ["train", "--env", LIN, "--agent", "dpo", "--env-kwargs", "eta=1",
                             "eta=2"],
    "agents twice": ["leaderboard", "--env", LIN, "--agents", "dpo,dpo", "--seeds", "1"],
    "seeds beyond the limit": ["leaderboard", "--env", LIN, "--agents", "dpo", "--seeds",
                               "0-200000"],
    "a linear-only agent on a language env": ["train", "--env", "TinyInstruct-v0", "--agent",
                                              "pessimistic_gibbs"],
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_refuses_and_writes_nothing(tmp_path, capsys, monkeypatch, case):
    def no_env(*a, **k):
        raise AssertionError("an env was made before the request was checked")

    monkeypatch.setattr(rlhf_env, "make", no_env)
    assert _cli(tmp_path, *CLI_CASES[case]) in (1, 2)
    err = capsys.readouterr().err
    assert err.startswith(("error:", "usage:")) and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))


@pytest.mark.parametrize("flag", ["--runs-dir", "--tensorboard-log", "--out", "empty runs-dir"])
def test_output_folders_that_are_files_are_refused_first(tmp_path, capsys, flag):
    f = tmp_path / "a-file"
    f.write_text("x")
    argv = ["leaderboard", "--env", LIN, "--agents", "dpo", "--seeds", "1"]
    if flag == "empty runs-dir":
        argv += ["--runs-dir", ""]
    elif flag == "--runs-dir":
        argv += ["--runs-dir", str(f / "inside")]
    else:
        argv += ["--runs-dir", str(tmp_path / "runs"), flag, str(f)]
    assert _cli(tmp_path, *argv) in (1, 2)
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


KV_CASES = {
    "key twice": (["eta=1", "eta=2"], "'eta' is given twice; give each key once"),
    "key twice, spaced": (["eta=1", " eta =2"], "'eta' is given twice"),
    "no =": (["eta"], "expects key=value"),
    "empty key": ([" =1"], "expects key=value"),
    "not YAML": (["eta=[1"], "the value does not parse"),
}


@pytest.mark.parametrize("case", list(KV_CASES))
def test_one_key_value_parser_for_both_commands(case):
    """rlhf-env and rlhf-zoo read key=value with the same parser (issue 32, item 1)."""
    from agents.zoo.config import parse_overrides
    from rlhf_env.cli_args import parse_key_values
    from rlhf_env.errors import InvalidArgumentError

    items, match = KV_CASES[case]
    for parse in (parse_key_values, parse_overrides):
        with pytest.raises(InvalidArgumentError, match=match):
            parse(items, "--env-kwargs")
    assert parse_key_values(["a=1", "b = [1, 2]", "c=tiny"], "--x") == {
        "a": 1, "b": [1, 2], "c": "tiny"}


def test_rlhf_env_refuses_a_repeated_env_kwarg(capsys, monkeypatch):
    from rlhf_env.__main__ import main

    def no_env(*a, **k):
        raise AssertionError("an env was made before the request was checked")

    monkeypatch.setattr(rlhf_env, "make", no_env)
    assert main(["oracle-report", LIN, "--env-kwargs", "n_prompts=8", "n_prompts=9"]) == 2
    assert "error: --env-kwargs: 'n_prompts' is given twice" in capsys.readouterr().err

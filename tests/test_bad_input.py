"""Every bad input is refused with the package's own error, before anything is created or paid.

Three tables — the env API, the agents API and the command line — each case a call that must
raise an :class:`rlhf_env.RLHFEnvError` (never a raw traceback, never a silent accept) and
leave no queries charged and no files behind.
"""

import math
from pathlib import Path

import numpy as np
import pytest

import agents
import rlhf_env
from agents.zoo import cli
from rlhf_env.errors import RLHFEnvError

LIN = "LinearBT-v0"
HUGE = "x" * 10_000_000


def _make(**kw):
    return lambda: rlhf_env.make(LIN, **kw)


ENV_CASES = {
    "id typo": lambda: rlhf_env.make("LinearBT-v1"),
    "id is a path": lambda: rlhf_env.make("../../x"),
    "id is absolute": lambda: rlhf_env.make("/tmp/LinearBT-v0"),
    "id not a str": lambda: rlhf_env.make(3),
    "unknown kwarg": _make(etaa=0.1),
    "setting": _make(setting="batch"),
    "budget negative": _make(query_budget=-1),
    "budget float": _make(query_budget=1.5),
    "budget bool": _make(query_budget=True),
    "budget str": _make(query_budget="10"),
    "offline with budget": _make(setting="offline", query_budget=5),
    "eta zero": _make(eta=0),
    "eta negative": _make(eta=-1.0),
    "eta nan": _make(eta=math.nan),
    "eta inf": _make(eta=math.inf),
    "eta str": _make(eta="1"),
    "eta bool": _make(eta=True),
    "seed negative": _make(seed=-1),
    "seed float": _make(seed=1.5),
    "seed str": _make(seed="0"),
    "seed bool": _make(seed=True),
    "feedback": _make(feedback="likert"),
    "oracle unknown": _make(oracle="btt"),
    "oracle type": _make(oracle=3),
    "n_prompts zero": _make(n_prompts=0),
    "n_actions one": _make(n_actions=1),
    "dim zero": _make(dim=0),
    "theta_norm nan": _make(theta_norm=math.nan),
    "theta_norm inf": _make(theta_norm=math.inf),
    "theta_norm negative": _make(theta_norm=-1.0),
    "alignment out of range": _make(reference_alignment=2.0),
    "alignment nan": _make(reference_alignment=math.nan),
    "behaviour": _make(behaviour="wide"),
    "n_offline negative": _make(n_offline=-1),
    "n_offline online": _make(setting="online", n_offline=5),
    "ledger budget mismatch": lambda: rlhf_env.make(
        LIN, ledger=rlhf_env.QueryLedger(3), query_budget=4),
    "tiny size": lambda: rlhf_env.make("TinyInstruct-v0", size="huge"),
    "tiny eta nan (fast)": lambda: rlhf_env.make("TinyInstruct-v0", eta=math.nan),
    "tiny prompts zero": lambda: rlhf_env.make("TinyInstruct-v0", n_train_prompts=0),
    "hh preset": lambda: rlhf_env.make("HH-RLHF-v0", preset="small"),
    "hh eval_fraction": lambda: rlhf_env.make("HH-RLHF-v0", eval_fraction=1.5),
    "register bad id": lambda: rlhf_env.register("../evil", "x:y"),
    "register bad entry point": lambda: rlhf_env.register("Good-v0", "not an entry"),
    "register kwargs not dict": lambda: rlhf_env.register("Good-v0", "a:b", kwargs=[1]),
    "make_vec zero envs": lambda: rlhf_env.make_vec(LIN, 0),
}


@pytest.mark.parametrize("case", list(ENV_CASES))
def test_env_api_refuses_bad_input(case):
    before = set(rlhf_env.list_envs())
    with pytest.raises(RLHFEnvError):
        ENV_CASES[case]()
    assert set(rlhf_env.list_envs()) == before  # the registry is not corrupted


STEP_CASES = {
    "a single string": "response-0",
    "a 1-tuple": ("response-0",),
    "a triple": ("response-0", "response-1", "response-2"),
    "a non-str response": ("response-0", 3),
    "not a candidate": ("response-0", "nope"),
    "a 10 MB response": ("response-0", HUGE),
    "None": None,
}


@pytest.mark.parametrize("case", list(STEP_CASES))
def test_steps_refuse_bad_actions_and_charge_nothing(case):
    env = rlhf_env.make(LIN, setting="online", query_budget=10)
    env.unwrapped.reset(seed=0)
    with pytest.raises(RLHFEnvError) as e:
        env.unwrapped.step(STEP_CASES[case])
    assert len(str(e.value)) < 1000  # a huge input is not echoed whole
    assert env.unwrapped.queries_used == 0
    if not isinstance(STEP_CASES[case], str):  # as one response of a batch, it is invalid too
        venv = env.unwrapped.make_vec(2)
        venv.reset(seed=0)
        with pytest.raises(RLHFEnvError):
            venv.step((["response-0", STEP_CASES[case]], ["response-1", "response-2"]))
        assert env.unwrapped.queries_used == 0


def test_other_env_misuse():
    env = rlhf_env.make(LIN, setting="online", query_budget=10).unwrapped
    with pytest.raises(RLHFEnvError):
        env.step(("response-0", "response-1"))  # before reset
    for bad in (-1, 32, 1.0, True):
        with pytest.raises(RLHFEnvError):
            env.reset(options={"prompt_id": bad})
    tiny = rlhf_env.make("TinyInstruct-v0", size="small", n_train_prompts=8, n_eval_prompts=4,
                         n_offline=4, setting="hybrid", query_budget=4)
    tiny.reset(seed=0)
    with pytest.raises(RLHFEnvError, match="characters"):
        tiny.step((" 1", "y" * 5000))  # longer than the response space
    assert tiny.unwrapped.queries_used == 0
    with pytest.raises(RLHFEnvError):  # a custom reward returning NaN is refused
        rlhf_env.judge(tiny)  # the judge exists...
        from rlhf_env.oracles import BradleyTerry, OracleContext

        BradleyTerry().bind(OracleContext(lambda p, r: np.full(len(r), np.nan))).label(
            ["p"], ["a"], ["b"], np.random.default_rng(0))


@pytest.fixture(scope="module")
def env():
    return rlhf_env.make(LIN, seed=0)


AGENT_CASES = [
    ("unknown agent", "dpoo", {}),
    ("unknown hyperparameter", "dpo", {"betta": 0.1}),
    ("float as str", "dpo", {"learning_rate": "0.1"}),
    ("lr nan", "dpo", {"learning_rate": math.nan}),
    ("lr inf", "dpo", {"learning_rate": math.inf}),
    ("lr negative", "dpo", {"learning_rate": -0.1}),
    ("beta inf", "dpo", {"beta": math.inf}),
    ("beta zero", "dpo", {"beta": 0.0}),
    ("epochs zero", "dpo", {"num_train_epochs": 0}),
    ("epochs float", "dpo", {"num_train_epochs": 2.0}),
    ("epochs bool", "dpo", {"num_train_epochs": True}),
    ("bool as str", "iterative_dpo", {"warm_start": "no"}),
    ("loss type", "dpo", {"loss_type": "kto"}),
    ("label smoothing", "dpo", {"label_smoothing": 0.7}),
    ("enhancer", "iterative_dpo", {"enhancer": "bon"}),
    ("budget too small", "iterative_dpo", {"prompts_per_iteration": 600}),
    ("schedule", "multi_step_rso", {"schedule": [1.0, 2.0]}),
    ("schedule type", "multi_step_rso", {"schedule": "fast"}),
    ("accepted > candidates", "rso", {"n_accepted": 20}),
    ("n best-of zero", "best_of_n", {"n": 0}),
    ("rm kind", "best_of_n", {"reward_model": {"kind": "cnn"}}),
    ("rm kind for env", "ppo", {"reward_model": "neural"}),
    ("rm field", "ppo", {"reward_model.depth": 3}),
    ("ppo critic", "ppo", {"critic": "separate"}),
    ("theory width", "pessimistic_gibbs", {"confidence_width": -1.0}),
    ("theory ridge nan", "mle_gibbs", {"ridge": math.nan}),
    ("seed negative", "dpo", {"seed": -1}),
    ("runtime key typed", "dpo", {"progress": "yes"}),
]


@pytest.mark.parametrize("case, name, hp", AGENT_CASES, ids=[c[0] for c in AGENT_CASES])
def test_agents_api_refuses_bad_input(env, case, name, hp):
    with pytest.raises(RLHFEnvError):
        agents.make(name, env, **hp)
    assert env.unwrapped.queries_used == 0


def test_agents_refuse_envs_they_cannot_learn_on(tmp_path):
    online = rlhf_env.make(LIN, setting="online", query_budget=16)
    offline = rlhf_env.make(LIN, setting="offline")
    for name, env in [("dpo", online), ("rso", online), ("mle_gibbs", online),
                      ("iterative_dpo", offline), ("gshf_online", offline)]:
        with pytest.raises(RLHFEnvError):
            agents.make(name, env)
    with pytest.raises(RLHFEnvError):
        agents.make("ppo", rlhf_env.make(LIN)).learn(resume_from=tmp_path)
    with pytest.raises(RLHFEnvError):
        agents.make("dpo", rlhf_env.make(LIN)).learn(resume_from=tmp_path / "missing")
    with pytest.raises(RLHFEnvError):
        agents.make("dpo", object())


def _cli(tmp_path, *argv):
    return cli.main([*map(str, argv), "--runs-dir", str(tmp_path / "runs")])


CLI_CASES = {
    "env typo": ["train", "--env", "LinearBT-v1", "--agent", "dpo"],
    "env path": ["train", "--env", "../../x", "--agent", "dpo"],
    "env absolute path": ["train", "--env", "/tmp/x", "--agent", "dpo"],
    "agent typo": ["train", "--env", LIN, "--agent", "dpoo"],
    "seed negative": ["train", "--env", LIN, "--agent", "dpo", "--seed", "-1"],
    "eval_every not an int": ["train", "--env", LIN, "--agent", "iterative_dpo",
                              "--hyperparams", "eval_every=abc"],
    "hyperparameter typo": ["train", "--env", LIN, "--agent", "dpo",
                            "--hyperparams", "learnin_rate=0.1"],
    "hyperparameter type": ["train", "--env", LIN, "--agent", "dpo",
                            "--hyperparams", "num_train_epochs=many"],
    "hyperparameter nan": ["train", "--env", LIN, "--agent", "dpo",
                           "--hyperparams", "learning_rate=.nan"],
    "runtime key": ["train", "--env", LIN, "--agent", "dpo", "--hyperparams", "seed=3"],
    "not key=value": ["train", "--env", LIN, "--agent", "dpo", "--hyperparams", "lr"],
    "env kwarg typo": ["train", "--env", LIN, "--agent", "dpo", "--env-kwargs", "etaa=1"],
    "env kwarg value": ["train", "--env", LIN, "--agent", "dpo", "--env-kwargs", "eta=-1"],
    "budget beyond": ["train", "--env", LIN, "--agent", "iterative_dpo", "--env-kwargs",
                      "query_budget=2"],
    "eval options on an exact env": ["train", "--env", LIN, "--agent", "dpo",
                                     "--hyperparams", "eval={n_samples: 4}"],
    "resume and overwrite": ["train", "--env", LIN, "--agent", "dpo", "--resume",
                             "--overwrite"],
    "leaderboard env path": ["leaderboard", "--env", "../x", "--seeds", "1"],
    "leaderboard agent typo": ["leaderboard", "--env", LIN, "--agents", "dpo,rsoo"],
    "leaderboard no seeds": ["leaderboard", "--env", LIN, "--agents", "dpo", "--seeds", "0"],
    "leaderboard empty seed range": ["leaderboard", "--env", LIN, "--agents", "dpo",
                                     "--seeds", "9-3"],
    "leaderboard seed twice": ["leaderboard", "--env", LIN, "--agents", "dpo",
                               "--seeds", "0-2,2"],
    "leaderboard seed not a number": ["leaderboard", "--env", LIN, "--agents", "dpo",
                                      "--seeds", "-1"],
    "leaderboard versus absent": ["leaderboard", "--env", LIN, "--agents", "dpo",
                                  "--versus", "rso"],
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_refuses_bad_input_and_writes_nothing(tmp_path, capsys, case):
    assert _cli(tmp_path, *CLI_CASES[case]) in (1, 2)
    err = capsys.readouterr().err
    assert err.startswith(("error:", "usage:")) and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))


def test_overwrite_touches_only_run_folders_inside_the_runs_dir(tmp_path, capsys):
    runs = tmp_path / "runs"
    stranger = runs / LIN / "dpo" / "seed0"
    stranger.mkdir(parents=True)
    (stranger / "precious.txt").write_text("not a run")
    assert cli.main(["train", "--env", LIN, "--agent", "dpo", "--runs-dir", str(runs),
                     "--overwrite"]) == 1
    assert "not a run folder" in capsys.readouterr().err
    assert (stranger / "precious.txt").read_text() == "not a run"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    assert cli.main(["train", "--env", str(outside), "--agent", "dpo", "--runs-dir", str(runs),
                     "--overwrite"]) == 1
    assert (outside / "keep").is_file()


def test_corrupt_run_files_get_clear_errors(tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["train", "--env", LIN, "--agent", "iterative_dpo", "--runs-dir", str(runs),
            "--env-kwargs", "query_budget=64", "--hyperparams", "iterations=2",
            "num_train_epochs=5", "eval_every=0"]
    assert cli.main(argv) == 0
    folder = runs / LIN / "iterative_dpo" / "seed0"
    (folder / "eval.json").unlink()  # as if killed before the end
    weights = folder / "checkpoint/iter_001/policy/policy.safetensors"
    weights.write_bytes(b"\x00" * weights.stat().st_size)  # zeroed weights
    assert cli.main([*argv, "--resume"]) == 1
    err = capsys.readouterr().err
    assert "was altered" in err and "iter_001" in err
    pairs = folder / "checkpoint/iter_000/pairs.parquet"
    data = bytearray(pairs.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    pairs.write_bytes(bytes(data))
    assert cli.main([*argv, "--resume"]) == 1
    assert "pairs.parquet was altered" in capsys.readouterr().err
    (folder / "ledger.sqlite").write_bytes(b"garbage" * 100)
    for f in folder.glob("ledger.sqlite-*"):
        f.unlink()
    assert cli.main([*argv, "--resume"]) == 1
    assert "not a readable ledger" in capsys.readouterr().err
    (folder / "config.yml").write_text("env_id: [unclosed\n")
    assert cli.main([*argv, "--resume"]) == 1  # its digest catches it before YAML does
    err = capsys.readouterr().err
    assert "config.yml was changed after the run wrote it" in err


def test_torn_metrics_lines_do_not_stop_the_leaderboard(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "lb"
    argv = ["leaderboard", "--env", LIN, "--agents", "iterative_dpo", "--seeds", "1",
            "--runs-dir", str(runs), "--out", str(out), "--env-kwargs", "query_budget=64"]
    assert cli.main(argv) == 0
    metrics = runs / LIN / "iterative_dpo" / "seed0" / "metrics.jsonl"
    with metrics.open("a") as f:
        f.write('{"step": 3, "eval/obj')  # a kill mid-line
    with pytest.warns(UserWarning, match="damaged line"):
        assert cli.main(argv) == 0
    assert Path(out / "leaderboard.md").is_file()

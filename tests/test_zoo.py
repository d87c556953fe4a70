"""The zoo: configs, the rlhf-zoo command, run folders, resume, leaderboards."""

import json
import os
import re
import signal
import warnings

import numpy as np
import pytest
import yaml

import agents
from agents.algorithms.iterative_dpo import IterativeDPOAgent
from agents.hyperparams import config_dir
from agents.zoo import cli, resolve
from agents.zoo.run import train_run
from agents.zoo.stats import aggregate, ci95, comparisons, iqm, paired, probability_of_improvement
from rlhf_env.errors import InvalidArgumentError, InvalidKwargError

# a tiny budget per agent, for the language env (the LinearBT runs use the configs as they are)
TINY_LM = {
    "reference": [],
    "best_of_n": ["n=2"],
    "dpo": ["num_train_epochs=1", "per_device_train_batch_size=8"],
    "dpo_pi0": ["num_train_epochs=1", "per_device_train_batch_size=8"],
    "rso": ["num_train_epochs=1", "n_candidates=2", "n_accepted=2", "n_prompts=4"],
    "multi_step_rso": ["num_train_epochs=1", "n_candidates=2", "n_accepted=2", "n_prompts=4",
                       "schedule=[2.0, 1.0]"],
    "iterative_dpo": ["num_train_epochs=1", "iterations=2", "n_samples=2"],
    "online_dpo": ["num_train_epochs=1", "iterations=2"],
    "xpo": ["num_train_epochs=1", "iterations=2"],
    "ppo": ["iterations=1", "timesteps_per_iteration=32", "n_envs=2", "n_steps=8",
            "batch_size=8", "n_epochs=1", "reward_model.kind=neural", "reward_model.steps=20"],
}
# the finite-action agents (closed forms): LinearBT entries only
FINITE_ONLY = {"mle_gibbs", "pessimistic_gibbs", "gshf_online", "gshf_hybrid", "mle_gibbs_pi0",
               "pessimistic_gibbs_pi0", "mle_gibbs_uniform", "pessimistic_gibbs_uniform",
               "mle_gibbs_design", "pessimistic_gibbs_design", "thompson_gibbs",
               "adaptive_design_gibbs"}
TINY_LINEAR = {"ppo": ["timesteps_per_iteration=2048", "n_steps=512", "batch_size=512"],
               "gshf_online": ["iterations=2"], "gshf_hybrid": ["iterations=2"],
               "mle_gibbs": [], "pessimistic_gibbs": [], "reference": [], "best_of_n": [],
               "mle_gibbs_pi0": [], "pessimistic_gibbs_pi0": [], "mle_gibbs_uniform": [],
               "pessimistic_gibbs_uniform": [], "mle_gibbs_design": [],
               "pessimistic_gibbs_design": [], "thompson_gibbs": ["iterations=2"],
               "adaptive_design_gibbs": ["iterations=2"],
               "online_dpo": ["iterations=2", "num_train_epochs=30"],
               "xpo": ["iterations=2", "num_train_epochs=30"]}
TINY_ENV = ["size=small", "n_train_prompts=16", "n_eval_prompts=4", "n_offline=8",
            "query_budget=8"]


def zoo(*argv):
    return cli.main([str(a) for a in argv])


def sessions(run):
    """The sessions recorded in a run's ledger."""
    import sqlite3

    with sqlite3.connect(run / "ledger.sqlite") as db:
        rows = db.execute("SELECT s.status, COALESCE((SELECT SUM(n) FROM batches b WHERE "
                          "b.session = s.id), 0) FROM sessions s ORDER BY s.id").fetchall()
    return [{"status": st, "queries_paid": n} for st, n in rows]


def test_every_agent_has_linear_bt_and_tiny_instruct_entries():
    assert set(TINY_LM) | FINITE_ONLY == set(agents.list_agents())
    for name in agents.list_agents():
        entries = yaml.safe_load((config_dir() / f"{name}.yml").read_text())
        assert {"default", "LinearBT-v0"} <= set(entries), name
        assert ("TinyInstruct-v0" in entries) == (name not in FINITE_ONLY), name
        for env_id in entries:
            if env_id not in ("default", "exact", "linear", "sampled"):
                resolve(name, env_id, 0)  # every entry is valid for its agent


def test_resolution_order_and_errors(tmp_path):
    (tmp_path / "dpo.yml").write_text(
        "default:\n  num_train_epochs: 5\n  learning_rate: 0.5\n  eval: {n_samples: 2}\n"
        "exact:\n  weight_decay: 0.01\n"
        "sampled:\n  weight_decay: 0.02\n"
        "LinearBT-v0:\n  learning_rate: 0.2\n  setting: offline\n  env_kwargs: {n_offline: 64}\n")
    cfg = resolve("dpo", "LinearBT-v0", 3, hyperparams={"num_train_epochs": 7},
                  env_kwargs={"eta": 2.0}, directory=tmp_path)
    assert cfg.hyperparams == {"num_train_epochs": 7, "learning_rate": 0.2, "weight_decay": 0.01}
    assert cfg.setting == "offline" and cfg.env_kwargs == {"n_offline": 64, "eta": 2.0}
    assert cfg.make_env_kwargs() == {"n_offline": 64, "eta": 2.0, "setting": "offline", "seed": 3}
    assert resolve("dpo", "TinyInstruct-v0", 0, directory=tmp_path).hyperparams == {
        "num_train_epochs": 5, "learning_rate": 0.5, "weight_decay": 0.02}
    # a deprecated name is followed, with a warning
    with pytest.warns(FutureWarning, match="'lr' is deprecated: use 'learning_rate'"):
        assert resolve("dpo", "LinearBT-v0", 0, hyperparams={"lr": 0.3},
                       directory=tmp_path).hyperparams["learning_rate"] == 0.3
    (tmp_path / "dpo.yml").write_text("exact:\n  setting: offline\n")
    with pytest.raises(InvalidKwargError, match="run-level keys belong in 'default'"):
        resolve("dpo", "LinearBT-v0", 0, directory=tmp_path)

    (tmp_path / "dpo.yml").write_text("LinearBT-v0:\n  betta: 0.1\n")
    with pytest.raises(InvalidKwargError, match=r"dpo.yml.*'betta'.*Did you mean 'beta'"):
        resolve("dpo", "LinearBT-v0", 0, directory=tmp_path)
    (tmp_path / "dpo.yml").write_text("LinearBT-v0:\n  lr: [0.1\n  epochs: 3\n")
    with pytest.raises(InvalidArgumentError, match=r"dpo.yml:3:\d+: the YAML does not parse"):
        resolve("dpo", "LinearBT-v0", 0, directory=tmp_path)


def test_ci95_hand_worked():
    mean, half = ci95([1.0, 2.0, 3.0])  # sd 1, t_{0.975, 2} = 4.302653
    assert mean == 2.0 and half == pytest.approx(4.302653 / 3**0.5, rel=1e-6)
    assert ci95([5.0])[0] == 5.0


def test_paired_iqm_and_probability_of_improvement_hand_worked():
    d = paired({0: 1.0, 1: 3.0, 2: 2.0}, {0: 0.0, 1: 1.0, 2: 2.0, 3: 9.0})  # seed 3 unpaired
    assert d["seeds"] == [0, 1, 2] and d["values"] == [1.0, 2.0, 0.0]
    assert d["mean"] == 1.0 and d["ci95"] == pytest.approx(4.302653 / 3**0.5, rel=1e-6)
    q = iqm([0.0, 1, 2, 3, 4, 5, 6, 7, 8, 100.0])  # drops 2 each end: mean of 2..7
    assert q["iqm"] == 4.5 and q["low"] <= 4.5 <= q["high"]
    # x=1 beats 0 once; x=2 ties twice (1/2 each) and beats 0; x=3 beats all: 6 of 9
    p = probability_of_improvement([1.0, 2.0, 3.0], [2.0, 2.0, 0.0])
    assert p["p"] == pytest.approx(2 / 3) and 0 <= p["low"] <= p["high"] <= 1


def test_scipy_t_intervals_match_intervals_worked_by_hand():
    # 2, 4, 4, 6: mean 4, sd sqrt(8/3), se sqrt(8/3)/2 = 0.816497; t_{0.975, 3} = 3.182446
    mean, half = ci95([2.0, 4.0, 4.0, 6.0])
    assert mean == 4.0 and half == pytest.approx(3.182446 * 0.816497, rel=1e-6)
    # paired: a − b = 1, 2, 3, 4 (the order of seeds in the dicts does not matter): mean 2.5,
    # sd sqrt(5/3) = 1.290994, se 0.645497, so 2.5 ± 3.182446 · 0.645497
    d = paired({3: 5.0, 0: 1.0, 1: 3.0, 2: 5.0}, {0: 0.0, 1: 1.0, 2: 2.0, 3: 1.0})
    assert d["mean"] == 2.5 and d["ci95"] == pytest.approx(3.182446 * 0.645497, rel=1e-6)
    assert d["low"] == pytest.approx(2.5 - d["ci95"]) and d["high"] == pytest.approx(2.5 + d["ci95"])
    with warnings.catch_warnings():  # agents equal on every seed, a constant count: a point
        warnings.simplefilter("error")
        same = paired({0: 0.3, 1: 0.7, 2: 0.5}, {0: 0.3, 1: 0.7, 2: 0.5})
        assert (same["low"], same["high"], same["ci95"]) == (0.0, 0.0, 0.0)
        assert ci95([1152.0] * 4) == (1152.0, 0.0) and iqm([0.5] * 4)["low"] == 0.5
    one = paired({0: 1.0}, {0: 0.5})
    assert one["mean"] == 0.5 and np.isnan(one["ci95"]) and np.isnan(one["low"])


def test_scipy_iqm_bootstrap_gives_the_percentile_bootstrap_written_out():
    v = np.random.default_rng(3).normal(size=9)
    # by hand: 2000 resamples of the 9 values (indices drawn as one (2000, 9) block), each
    # resample's mean of its middle values (int(9/4) = 2 off each end), 2.5/97.5 percentiles
    idx = np.random.default_rng(0).integers(9, size=(2000, 9))
    boots = np.sort(v[idx], axis=1)[:, 2:7].mean(axis=1)
    q = iqm(v, seed=0)
    assert q["iqm"] == pytest.approx(np.sort(v)[2:7].mean(), abs=1e-15)
    assert q["low"] == pytest.approx(np.percentile(boots, 2.5), abs=1e-12)
    assert q["high"] == pytest.approx(np.percentile(boots, 97.5), abs=1e-12)
    assert iqm([3.0]) == {"iqm": 3.0, "low": 3.0, "high": 3.0}
    assert iqm(v, seed=1) == iqm(v, seed=1)  # seeded: the same interval every time


def test_probability_of_improvement_is_the_mann_whitney_u_over_the_pairs():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 4, size=rng.integers(1, 8)), rng.integers(0, 4, size=5)  # ties
        by_hand = sum(float(a > b) + 0.5 * float(a == b) for a in x for b in y) / (len(x) * 5)
        p = probability_of_improvement(x.astype(float), y.astype(float))
        assert p["p"] == pytest.approx(by_hand, abs=1e-12) and p["low"] <= p["p"] <= p["high"]
    assert probability_of_improvement([1.0], [2.0]) == {"p": 0.0, "low": 0.0, "high": 0.0}
    one = probability_of_improvement([1.0], [0.0, 2.0, 0.5])  # the one run held, y resampled
    assert one["p"] == pytest.approx(2 / 3) and one["low"] < one["high"]


def test_the_table_is_a_github_markdown_table_with_the_formatted_cells():
    from agents.zoo.leaderboard import table

    rows = {a: [{"seed": s, "objective": v, "labels": 128} for s, v in enumerate(vals)]
            for a, vals in {"reference": [0.1, 0.1, 0.1], "dpo": [0.98, 0.96, 0.97]}.items()}
    agg = aggregate(rows)
    lines = table(agg, comparisons(agg)).splitlines()
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    assert cells[0] == ["agent", "seeds", "objective J", "labels", "vs pi0 (paired)",
                        "vs best (paired)", "IQM [95%]"]
    assert set(lines[1]) <= {"|", "-"} and len({len(ln) for ln in lines}) == 1  # aligned
    assert cells[2][:4] == ["dpo", "3", "0.970 ± 0.025", "128"] and cells[2][5] == "best"
    assert cells[2][4] == "+0.870 [+0.845, +0.895] ✓" and cells[3][:3] == ["reference", "3", "0.100"]
    assert cells[3][6] == "0.100 [0.100, 0.100]" and table(agg).count("\n") == 3


def test_without_a_reference_row_the_table_has_no_pi0_column():
    """No ``reference`` row, nothing to pair with: no column of dashes (issue 32, item 7)."""
    from agents.zoo.leaderboard import table

    rows = {a: [{"seed": s, "objective": v} for s, v in enumerate(vals)]
            for a, vals in {"dpo": [0.98, 0.96, 0.97], "rso": [0.9, 0.8, 0.7]}.items()}
    agg = aggregate(rows)
    header = [c.strip() for c in table(agg, comparisons(agg)).splitlines()[0].strip("|").split("|")]
    assert header == ["agent", "seeds", "objective J", "vs best (paired)", "IQM [95%]"]


def test_a_reused_run_is_logged_as_reused_not_as_done_in_no_time(tmp_path, caplog):
    from agents.zoo.leaderboard import run_leaderboard

    def lines():
        caplog.clear()
        with caplog.at_level("INFO", logger="agents"):
            results, failures = run_leaderboard("LinearBT-v0", ["reference"], [0], runs=tmp_path,
                                                progress=False)
        assert not failures and results["reference"][0]["seed"] == 0
        return [r.getMessage() for r in caplog.records if "reference seed 0" in r.getMessage()]

    first = lines()
    assert len(first) == 1 and " done in " in first[0]
    again = lines()
    folder = tmp_path / "LinearBT-v0" / "reference" / "seed0"
    assert again == [f"[1/1] reference seed 0 reused {folder} (finished earlier): "
                     + first[0].split(": ", 1)[1]], again


def test_comparisons_versus_a_chosen_baseline():
    rows = {a: [{"seed": s, "objective": v} for s, v in enumerate(vals)]
            for a, vals in {"reference": [0.0, 0.0, 0.0], "online": [0.9, 0.8, 0.7],
                            "offline": [0.5, 0.6, 0.2]}.items()}
    comp = comparisons(aggregate(rows), versus=["offline"])
    got = comp["agents"]["online"]["vs_offline"]
    assert got["values"] == pytest.approx([0.4, 0.2, 0.5]) and got["mean"] == pytest.approx(11 / 30)
    assert "vs_offline" not in comp["agents"]["offline"] and comp["versus"] == ["offline"]
    with pytest.raises(InvalidArgumentError, match="not on this leaderboard"):
        comparisons(aggregate(rows), versus=["nope"])


@pytest.mark.parametrize("name", sorted(set(TINY_LM) | FINITE_ONLY))
def test_train_every_agent_through_the_command_on_linear_bt(tmp_path, name):
    rc = zoo("train", "--env", "LinearBT-v0", "--agent", name, "--seed", 1, "--runs-dir",
             tmp_path, "--env-kwargs", "query_budget=64", "n_offline=64",
             "--hyperparams", *TINY_LINEAR.get(name, ["num_train_epochs=30"]))
    assert rc == 0
    run = tmp_path / "LinearBT-v0" / name / "seed1"
    for f in ("config.yml", "command.txt", "metrics.jsonl", "ledger.sqlite", ".rlhf-run",
              "agent.json",
              "eval.json", "policy"):
        assert (run / f).exists(), f
    assert any((run / "tensorboard").glob("events.out.tfevents.*"))
    ev = json.loads((run / "eval.json").read_text())
    assert ev["queries_used"] <= 64 and -1.0 < ev["normalized_score"] <= 1.0 + 1e-9
    assert "--seed 1" in (run / "command.txt").read_text()
    assert zoo("eval", run) == 0


@pytest.mark.parametrize("name", sorted(TINY_LM))
def test_train_every_agent_through_the_command_on_tiny_instruct(tmp_path, name):
    rc = zoo("train", "--env", "TinyInstruct-v0", "--agent", name, "--runs-dir", tmp_path,
             "--env-kwargs", *TINY_ENV, "--hyperparams", "eval={n_samples: 1}", *TINY_LM[name])
    assert rc == 0
    ev = json.loads((tmp_path / "TinyInstruct-v0" / name / "seed0" / "eval.json").read_text())
    assert 0.0 <= ev["gold_reward"] <= 4.0 and ev["queries_used"] <= 8


def test_bad_input_fails_with_a_clear_message(tmp_path, capsys):
    assert zoo("train", "--env", "LinearBT-v1", "--agent", "dpo", "--runs-dir", tmp_path) == 1
    assert "Did you mean 'LinearBT-v0'" in capsys.readouterr().err
    assert zoo("train", "--env", "LinearBT-v0", "--agent", "dpoo", "--runs-dir", tmp_path) == 1
    assert "Did you mean 'dpo'" in capsys.readouterr().err
    assert zoo("train", "--env", "LinearBT-v0", "--agent", "dpo", "--runs-dir", tmp_path,
               "--hyperparams", "learnin_rate=0.1") == 1
    assert "Did you mean 'learning_rate'" in capsys.readouterr().err
    argv = ["train", "--env", "LinearBT-v0", "--agent", "reference", "--runs-dir", tmp_path]
    assert zoo(*argv) == 0
    assert zoo(*argv) == 1
    assert "exists; pass --resume" in capsys.readouterr().err
    assert zoo(*argv, "--overwrite") == 0


def test_killed_run_resumes_to_the_same_result_and_pays_no_query_twice(tmp_path, monkeypatch):
    argv = ["train", "--env", "LinearBT-v0", "--agent", "iterative_dpo", "--seed", 2,
            "--hyperparams", "iterations=4", "num_train_epochs=40"]
    assert zoo(*argv, "--runs-dir", tmp_path / "full") == 0
    full = json.loads((tmp_path / "full/LinearBT-v0/iterative_dpo/seed2/eval.json").read_text())

    original, calls = IterativeDPOAgent.train, []

    def killed_in_iteration_two(self, *a, **k):  # SIGTERM arrives after pairs 2 were paid for
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *a, **k)

    monkeypatch.setattr(IterativeDPOAgent, "train", killed_in_iteration_two)
    assert zoo(*argv, "--runs-dir", tmp_path / "cut") == 130
    monkeypatch.setattr(IterativeDPOAgent, "train", original)
    run = tmp_path / "cut/LinearBT-v0/iterative_dpo/seed2"
    assert not (run / "eval.json").exists()
    assert zoo(*argv, "--runs-dir", tmp_path / "cut", "--resume") == 0
    ledger = sessions(run)
    assert [s["status"] for s in ledger] == ["interrupted", "done"]
    assert [s["queries_paid"] for s in ledger] == [768, 256]  # 3 iterations paid, then 1
    resumed = json.loads((run / "eval.json").read_text())
    assert resumed["queries_used"] == full["queries_used"] == 1024
    for k in ("objective", "kl", "gold_reward", "normalized_score"):
        assert resumed[k] == pytest.approx(full[k], abs=1e-9), k


def test_leaderboard_writes_table_json_and_plots_and_reuses_runs(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "lb"
    argv = ["leaderboard", "--env", "LinearBT-v0", "--agents", "reference,dpo,iterative_dpo",
            "--seeds", 2, "--runs-dir", runs, "--out", out, "--env-kwargs", "query_budget=128",
            "--versus", "dpo"]
    assert zoo(*argv) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    assert set(board["agents"]) == {"reference", "dpo", "iterative_dpo"}
    assert board["agents"]["iterative_dpo"]["queries_used"]["values"] == [128, 128]
    md = (out / "leaderboard.md").read_text()
    assert re.search(r"\| iterative_dpo +\| 2 +\|", md) and "rlhf-zoo leaderboard" in md
    assert "vs pi0 (paired)" in md and "vs dpo (paired)" in md and "IQM" in md
    assert board["comparisons"]["agents"]["iterative_dpo"]["vs_dpo"]["seeds"] == [0, 1]
    assert set(board["comparisons"]["agents"]) == {"reference", "dpo", "iterative_dpo"}
    for png in ("scores.png", "paired.png", "reward_vs_kl.png", "score_vs_labels.png",
                "metrics.png"):
        assert (out / png).stat().st_size > 10_000
    ledger = runs / "LinearBT-v0/dpo/seed0/ledger.sqlite"
    before = sessions(ledger.parent)
    assert zoo(*argv) == 0  # finished runs are reused, not trained again
    assert sessions(ledger.parent) == before


def test_eval_model_scores_an_exact_policy_on_its_own_instance_only(tmp_path, capsys):
    """Each seed of an exact env is another instance: a policy from a zoo run is evaluated on
    the seed (and env kwargs) its config.yml records, and any other is refused before a
    folder is written; a policy with no record gets one seed at most."""
    import shutil

    assert zoo("train", "--env", "LinearBT-v0", "--agent", "mle_gibbs", "--seed", 1,
               "--runs-dir", tmp_path / "runs", "--env-kwargs", "query_budget=64",
               "n_offline=64") == 0
    run = tmp_path / "runs" / "LinearBT-v0" / "mle_gibbs" / "seed1"
    ext = tmp_path / "ext"
    capsys.readouterr()

    def ev(model, *argv):
        return zoo("eval", "--model", model, "--runs-dir", ext, "--name", "mine", *argv)

    assert ev(run / "policy", "--env", "LinearBT-v0", "--seeds", 2) == 1
    err = capsys.readouterr().err
    assert "trained on LinearBT-v0 seed 1" in err and "seed 0 would score it" in err
    assert "--seeds 1-1" in err and str(run / "config.yml") in err
    assert not ext.exists()  # refused before anything was evaluated or written
    # the same seed, features and pi0, but a hidden reward of another scale
    assert ev(run / "policy", "--env", "LinearBT-v0", "--seeds", "1-1", "--env-kwargs",
              "theta_norm=3.0") == 1
    assert "theta_norm=3.0 is another instance" in capsys.readouterr().err
    assert ev(run, "--env", "LinearBT-v0") == 1
    assert "is a zoo run folder: give its policy" in capsys.readouterr().err

    # its own instance (the default seeds): the run's own score, whatever the offline data
    assert ev(run / "policy", "--env", "LinearBT-v0") == 0
    own = json.loads((run / "eval.json").read_text())
    got = json.loads((ext / "LinearBT-v0/external/mine/seed1/eval.json").read_text())
    assert got["seed"] == 1 and got["objective"] == pytest.approx(own["objective"], abs=1e-9)
    assert not (ext / "LinearBT-v0/external/mine/seed0").exists()
    # the same instance under another id (only the offline behaviour differs) is accepted
    assert ev(run / "policy", "--env", "LinearBT-Narrow-v0", "--seeds", "1-1") == 0

    # no record of the instance: one seed, never several
    shutil.copytree(run / "policy", tmp_path / "loose")
    capsys.readouterr()
    assert ev(tmp_path / "loose", "--env", "LinearBT-v0", "--seeds", 2) == 1
    assert "has no record of the instance it was trained on" in capsys.readouterr().err
    assert ev(tmp_path / "loose", "--env", "LinearBT-v0", "--seeds", "1-1") == 0


def test_train_run_callback_and_tensorboard_log(tmp_path):
    seen = []
    cfg = resolve("iterative_dpo", "LinearBT-v0", 0, env_kwargs={"query_budget": 64},
                  hyperparams={"iterations": 2, "num_train_epochs": 10})
    train_run(cfg, tmp_path / "runs", tensorboard_log=tmp_path / "tb",
              callback=lambda a, info: seen.append(info["iteration"]))
    assert seen == [0, 1]
    assert any((tmp_path / "tb/LinearBT-v0/iterative_dpo/seed0").glob("events.out.tfevents.*"))
    rows = [json.loads(x) for x in
            (tmp_path / "runs/LinearBT-v0/iterative_dpo/seed0/metrics.jsonl").read_text().splitlines()]
    assert [r["oracle/queries_paid"] for r in rows if "eval/objective" in r] == [0, 32, 64]


def test_parallel_leaderboards_start_the_longest_runs_first(tmp_path):
    from agents.zoo.config import RunConfig
    from agents.zoo.distributed import longest_first

    jobs = [RunConfig(env_id="LinearBT-v0", agent=a, seed=s)
            for a in ("reference", "dpo", "ppo", "iterative_dpo") for s in (0, 1)]
    # nothing measured yet: the agents' relative_cost hints (ppo 10, iterative_dpo 5, others 1)
    assert [(c.agent, c.seed) for c in longest_first(jobs, str(tmp_path))] == [
        ("ppo", 0), ("ppo", 1), ("iterative_dpo", 0), ("iterative_dpo", 1),
        ("reference", 0), ("reference", 1), ("dpo", 0), ("dpo", 1)]
    # every agent measured (finished runs of other seeds): the median wall time decides
    for agent, walls in {"reference": [9.0], "dpo": [1.0, 5.0, 2.0], "ppo": [3.0],
                         "iterative_dpo": [0.5]}.items():
        for seed, wall in enumerate(walls, start=7):
            folder = tmp_path / "LinearBT-v0" / agent / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "eval.json").write_text(json.dumps({"wall_s": wall}))
    assert [c.agent for c in longest_first(jobs, str(tmp_path))][::2] == [
        "reference", "ppo", "dpo", "iterative_dpo"]


def test_seeds_option_takes_a_count_a_range_or_a_list():
    from agents.zoo.cli import parse_seeds

    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("100-103") == [100, 101, 102, 103]
    assert parse_seeds("0,5,7") == [0, 5, 7]
    assert parse_seeds(" 0-1, 10 ") == [0, 1, 10]
    assert parse_seeds("4-4") == [4]
    for bad in ("0", "", "3-1", "1,1", "0-2,2", "-1", "a", "1,", "1.5", "2-"):
        with pytest.raises(InvalidArgumentError, match="--seeds"):
            parse_seeds(bad)


def test_a_leaderboard_over_a_seed_range_reports_those_seeds(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    assert cli.main(["-q", "leaderboard", "--env", "LinearBT-v0", "--agents", "reference,dpo",
                     "--seeds", "5-6", "--runs-dir", str(runs), "--out", str(out)]) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["seeds"] == [5, 6]
    assert sorted(p.name for p in (runs / "LinearBT-v0" / "dpo").iterdir()) == ["seed5", "seed6"]


def test_the_scores_plot_draws_pi0_where_pi0_scores(tmp_path, monkeypatch):
    from agents.zoo import plots

    kept = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: kept.setdefault("fig", fig))
    agg = {a: {"objective": {"mean": m, "ci95": 0.1, "values": [m - 0.1, m + 0.1]}}
           for a, m in (("reference", 2.49), ("dpo", 2.6))}
    plots.scores_plot("T", agg, {"score": "objective"}, tmp_path / "s.png")
    ax = kept["fig"].axes[0]
    pi0 = [ln for ln in ax.get_lines() if ln.get_label().startswith("pi0")]
    assert len(pi0) == 1 and pi0[0].get_xdata()[0] == 2.49


def test_style_gives_every_agent_of_a_figure_its_own_colour_and_marker():
    from agents.zoo import plots

    styles = [plots.style(i, line=True) for i in range(110)]
    pairs = [(s["color"], s["marker"]) for s in styles]
    assert len(set(pairs)) == 110  # no two of the first 110 agents alike
    assert {s["color"] for s in styles} == set(plots.COLOURS)  # Paul Tol's muted scheme
    for i in range(40):  # agents of one colour are drawn with different lines, too
        for j in range(i + 1, 40):
            if styles[i]["color"] == styles[j]["color"]:
                assert styles[i]["linestyle"] != styles[j]["linestyle"]
    assert set(plots.style(0)) == {"color", "marker"}  # what scatter and errorbar take


def _board(tmp_path, n_agents=3):
    """A small board without training: reference, dpo and iterative_dpo (with a curve over
    its rounds) on LinearBT-v0 over 3 seeds, and ``n_agents - 3`` agents crowding near pi*."""
    from agents.zoo.run import run_dir

    rng = np.random.default_rng(0)
    names = ["reference", "dpo", "iterative_dpo"] + [f"crowd{k}" for k in range(n_agents - 3)]
    results = {}
    for a in names:
        rows = []
        for s in range(3):
            score = {"reference": 0.0, "dpo": 0.7}.get(a, 0.97) + 0.01 * rng.normal()
            kl, gold = 0.7 - 0.6 * (1 - score) + 0.01 * rng.normal(), 1.8 - 1.5 * (1 - score)
            labels = {"reference": 0, "dpo": 2558}.get(a, 1152)
            rows.append({"seed": s, "normalized_score": score, "objective": gold - kl,
                         "gold_reward": gold, "kl": kl, "labels": labels, "win_rate": 0.7,
                         "queries_used": 1024 if a == "iterative_dpo" else 0,
                         "offline_labels": labels - (1024 if a == "iterative_dpo" else 0),
                         "optimal/kl": 0.7, "optimal/gold_reward": 1.8, "best_of_4/kl": 0.6,
                         "best_of_4/gold_reward": 1.0, "wall_s": 1.0 + s})
            if a == "iterative_dpo":
                folder = run_dir(tmp_path / "runs", "LinearBT-v0", a, s)
                folder.mkdir(parents=True)
                (folder / "metrics.jsonl").write_text("".join(
                    json.dumps({"oracle/queries_paid": q, "eval/normalized_score": q / 1100,
                                "eval/kl": q / 2000, "eval/gold_reward": q / 1000}) + "\n"
                    for q in (0, 512, 1024)))
        results[a] = rows
    agg = aggregate(results)
    return agg, comparisons(agg), results


def _inside(fig):
    """Every title's extent lies within the figure (drawn as saved)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # pyplot has closed the figure: a canvas of its own
    canvas.draw()
    renderer = canvas.get_renderer()
    for text in fig.texts + [ax.title for ax in fig.axes]:
        if text.get_text():
            box = text.get_window_extent(renderer)
            assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height, (
                text.get_text())


def test_each_plot_writes_a_readable_png(tmp_path, monkeypatch):
    from agents.zoo import plots

    figs = {}
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.setdefault(path.name, fig)
                        and save(fig, path))
    agg, comp, results = _board(tmp_path)
    title = "LinearBT-v0, oracle bt, with a title long enough that it has to be wrapped somewhere"
    out = tmp_path / "lb"
    out.mkdir()
    made = plots.make_all(title, "LinearBT-v0", agg, comp, results, out, runs=tmp_path / "runs")
    assert {p.name for p in made} == {"scores.png", "paired.png", "reward_vs_kl.png",
                                      "score_vs_labels.png", "metrics.png", "gold_vs_sqrt_kl.png"}
    for p in made:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000, p
        _inside(figs[p.name])
    ax = figs["score_vs_labels.png"].axes[0]
    left, right = ax.get_xlim()
    assert ax.get_xscale() == "log" and 0 < left and ax.get_xticklabels()[0].get_text() == "0"
    xs = np.concatenate([ln.get_xdata() for ln in ax.get_lines() if len(ln.get_xdata()) > 0
                         and ln.get_label() not in ("pi*", "pi0")])
    assert 1.5 * left < xs.min() and xs.max() < right / 1.5  # no point at an edge
    assert xs.min() == ax.get_xticks()[0]  # pi0's 0 labels: at the "0" tick
    assert len(figs["reward_vs_kl.png"].axes) == 1  # three agents apart: no zoom


def test_the_reward_kl_plot_zooms_on_a_crowd_and_labels_every_agent(tmp_path, monkeypatch):
    from agents.zoo import plots

    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or path)
    agg, _, _ = _board(tmp_path, n_agents=12)
    plots.reward_kl_plot("T", agg, tmp_path / "r.png")
    assert len(figs[0].axes) == 2  # the overview and the zoom
    named = [[t.get_text() for t in ax.texts if "n=" not in t.get_text()] for ax in figs[0].axes]
    assert sorted(named[0] + named[1]) == sorted(agg)  # each agent named once, in one panel
    assert len(named[1]) >= 9 and all(a.startswith(("crowd", "iterative")) for a in named[1])

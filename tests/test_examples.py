"""Tiny-budget smoke tests of every example (run in-process, so the model cache is shared)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quickstart():
    ex = load("quickstart")
    m = ex.main(ex.Args(query_budget=128))
    assert m["normalized_score"] > 0.5


def test_quickstart_offline():
    ex = load("quickstart")
    assert ex.main(ex.Args(agent="dpo", setting="offline"))["normalized_score"] > 0.3


def test_custom_env(scratch_registry):
    ex = load("custom_env")
    m = ex.main(["--sft-steps", "30", "--query-budget", "32", "--epochs", "1"])
    assert {"gold_reward", "kl", "objective"} <= set(m)
    import rlhf_env

    assert "Greeting-v0" in rlhf_env.list_envs()


def test_hh_rlhf(hh_dir):
    ex = load("hh_rlhf")
    m = ex.main(["--data-dir", str(hh_dir), "--n-offline", "16", "--n-eval-prompts", "8"])
    assert m["n_prompts"] == 8


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_compare_in_tensorboard(tmp_path):
    env = {**os.environ, "AGENTS": "reference dpo", "RUNS_DIR": str(tmp_path / "runs"),
           "EXTRA": "--hyperparams eval_every=0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    script = ["bash", str(EXAMPLES / "compare_in_tensorboard.sh"), "LinearBT-v0", "1"]
    for _ in range(2):  # the second time the runs exist: there is still everything to compare
        out = subprocess.run(script, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert f"tensorboard --logdir {tmp_path / 'runs'}/LinearBT-v0" in out.stdout
        assert f"logdir {tmp_path / 'runs'}/LinearBT-v0, from each run" in out.stdout
        assert "runs with events there: 2" in out.stdout
        for agent in ("reference", "dpo"):
            run = tmp_path / "runs/LinearBT-v0" / agent / "seed0"
            assert any((run / "tensorboard").glob("events.out.tfevents.*"))
    # runs trained with --tensorboard-log: the logdir is that folder's, given as TB_LOG
    tb = tmp_path / "tb"
    env = {**env, "AGENTS": "reference", "RUNS_DIR": str(tmp_path / "runs_tb")}
    out = subprocess.run([*script, str(tb)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"tensorboard --logdir {tb}/LinearBT-v0 " in out.stdout
    assert f"logdir {tb}/LinearBT-v0, from the --tensorboard-log folder" in out.stdout
    assert "runs with events there: 1" in out.stdout
    assert any((tb / "LinearBT-v0/reference/seed0").glob("events.out.tfevents.*"))
    # pointed at the zoo's default instead, it finds nothing and says so
    out = subprocess.run(script, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "runs with events there: 0" in out.stdout
    assert "--tensorboard-log DIR" in out.stderr
    bad = subprocess.run([*script, str(tb)], env={**env, "EXTRA": "--tensorboard-log x"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "third argument" in bad.stderr


def test_trl_grpo(tmp_path, capsys):
    import json
    import shlex
    import warnings

    pytest.importorskip("trl")
    ex = load("trl_grpo")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = ex.main(ex.parse(["--size", "small", "--steps", "2", "--batch-size", "4",
                              "--num-generations", "2", "--out", str(tmp_path)]))
    assert m["queries"] == 8 and (tmp_path / "model" / "config.json").is_file()
    # only TRL's calls of transformers' renamed gradient_checkpointing* are silenced
    assert not [w for w in caught if "gradient_checkpointing" in str(w.message)]
    out = capsys.readouterr().out
    assert ("rlhf_env.make('TinyInstruct-v0', size='small', setting='online', "
            "feedback='reward', query_budget=8, seed=0)") in out
    # the printed eval line runs as printed and makes the env the model was trained on
    line = next(x for x in out.splitlines() if "rlhf-zoo eval" in x).split(": ", 1)[1]
    argv = shlex.split(line)
    assert argv[:2] == ["rlhf-zoo", "eval"] and "size=small" in argv
    from agents.zoo.cli import main

    runs = tmp_path / "runs"
    assert main([*argv[1:], "--runs-dir", str(runs), "--eval-kwargs", "n_samples=1",
                 "best_of_n=[]", "optimal_samples=0"]) == 0
    source = json.loads((runs / "TinyInstruct-v0/external/model/seed0/source.json").read_text())
    assert source["env_kwargs"]["size"] == "small" and source["env_kwargs"]["seed"] == 0

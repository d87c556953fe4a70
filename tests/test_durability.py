"""Every paid label recorded once and never bought twice: real SIGKILLs of a subprocess at the
dangerous points, then --resume; two concurrent resumes; the run folder's lock."""

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_kill_worker.py")
BUDGET = 256
TRAIN = ["train", "--env", "LinearBT-v0", "--agent", "iterative_dpo", "--seed", "3",
         "--env-kwargs", f"query_budget={BUDGET}",
         "--hyperparams", "iterations=4", "num_train_epochs=40", "eval_every=0"]


def run(args, runs, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args + ["--runs-dir", str(runs)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600, **kw)


def zoo(argv, runs):
    return run([sys.executable, "-m", "agents.zoo", *argv], runs)


def killed(point, n, argv, runs):
    return run([sys.executable, str(WORKER), point, str(n), *argv], runs)


def ledger(folder):
    with sqlite3.connect(folder / "ledger.sqlite") as db:
        total = db.execute("SELECT COALESCE(SUM(n), 0) FROM batches").fetchone()[0]
        keys = [k for (k,) in db.execute("SELECT key FROM batches")]
        statuses = [s for (s,) in db.execute("SELECT status FROM sessions ORDER BY id")]
    return total, keys, statuses


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    runs = tmp_path_factory.mktemp("full")
    assert zoo(TRAIN, runs).returncode == 0
    return json.loads((runs / "LinearBT-v0/iterative_dpo/seed3/eval.json").read_text())


@pytest.mark.parametrize("point, n", [("after_answer", 2), ("mid_save", 2),
                                      ("between_rounds", 1), ("pairs_digest", 2)])
def test_sigkill_then_resume_pays_each_label_once(tmp_path, uninterrupted, point, n):
    out = killed(point, n, TRAIN, tmp_path)
    assert out.returncode == -9, out.stderr[-2000:]
    folder = tmp_path / "LinearBT-v0/iterative_dpo/seed3"
    paid, _, _ = ledger(folder)
    assert 0 < paid < BUDGET and not (folder / "eval.json").exists()
    out = zoo([*TRAIN, "--resume"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    paid, keys, statuses = ledger(folder)
    result = json.loads((folder / "eval.json").read_text())
    assert paid == BUDGET == result["queries_used"]  # exactly the budget, recorded once
    assert len(keys) == len(set(keys))  # no batch answered twice
    assert statuses == ["killed", "done"]
    for k in ("normalized_score", "objective", "kl"):  # the same run as without the kill
        assert result[k] == pytest.approx(uninterrupted[k], abs=1e-12), k


def test_a_restarted_agent_replays_its_labels_from_the_ledger(tmp_path):
    """PPO cannot resume from a checkpoint: a resumed run starts it again, and the labels it
    had paid for are answered from the ledger instead of being bought again."""
    argv = ["train", "--env", "LinearBT-v0", "--agent", "ppo", "--env-kwargs",
            "query_budget=64", "--hyperparams", "timesteps_per_iteration=1024", "n_steps=512",
            "batch_size=512", "eval_every=0"]
    out = killed("after_answer", 2, argv, tmp_path)  # round 1's labels paid, not checkpointed
    assert out.returncode == -9, out.stderr[-2000:]
    folder = tmp_path / "LinearBT-v0/ppo/seed0"
    assert ledger(folder)[0] == 64
    assert zoo([*argv, "--resume"], tmp_path).returncode == 0
    result = json.loads((folder / "eval.json").read_text())
    assert ledger(folder)[0] == 64 == result["queries_used"]
    assert result["queries_replayed"] == 32  # round 1 answered from the ledger


def test_two_concurrent_resumes_one_runs_one_is_refused(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, str(WORKER), "hold", "20", *TRAIN, "--runs-dir", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = tmp_path / "LinearBT-v0/iterative_dpo/seed3"
    for _ in range(600):
        if (folder / "owner.json").is_file():
            break
        time.sleep(0.1)
    second = zoo([*TRAIN, "--resume"], tmp_path)
    assert second.returncode == 1
    assert "is in use by process" in second.stderr and str(holder.pid) in second.stderr
    holder.kill()  # SIGKILL: its lock dies with it, its owner.json stays behind
    holder.wait()
    assert (folder / "owner.json").is_file()
    third = zoo([*TRAIN, "--resume"], tmp_path)
    assert third.returncode == 0, third.stderr[-2000:]
    assert json.loads((folder / "eval.json").read_text())["queries_used"] == BUDGET

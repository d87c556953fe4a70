"""Scale-out on Ray: parallel leaderboards equal sequential ones, the oracle as a shared
service charges one ledger exactly, a killed worker's job finishes on retry paying nothing
twice, and a sealed worker holds no gold reward. A local Ray instance with 2 CPUs."""

import gc
import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest
import ray

import rlhf_env
from agents.zoo.cli import main as zoo
from agents.zoo.config import resolve
from agents.zoo.distributed import RayClient, run_job
from rlhf_env.errors import QueryBudgetExceeded
from rlhf_env.service import OracleService, connect

LIN = "LinearBT-v0"


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def _numbers(board):
    out = {}
    for agent, entry in json.loads(Path(board).read_text())["agents"].items():
        for key, m in entry.items():
            if isinstance(m, dict) and "values" in m and key not in ("wall_s", "sessions"):
                out[(agent, key)] = m["values"]
    return out


def test_a_parallel_leaderboard_equals_the_sequential_one(tmp_path):
    common = ["leaderboard", "--env", LIN, "--seeds", "2", "--agents",
              "reference,mle_gibbs,iterative_dpo,gshf_online", "--env-kwargs",
              "query_budget=256"]
    assert zoo([*common, "--runs-dir", str(tmp_path / "seq"), "--out", str(tmp_path / "a")]) == 0
    assert zoo([*common, "--runs-dir", str(tmp_path / "par"), "--out", str(tmp_path / "b"),
                "--workers", "2"]) == 0
    assert zoo([*common, "--runs-dir", str(tmp_path / "sealed"), "--out", str(tmp_path / "c"),
                "--workers", "2", "--oracle-service"]) == 0
    seq = _numbers(tmp_path / "a/leaderboard.json")
    assert seq == _numbers(tmp_path / "b/leaderboard.json")
    assert seq == _numbers(tmp_path / "c/leaderboard.json")


@ray.remote
def _spend(service, batches, size, seed):
    env = connect(RayClient(service))
    venv = env.unwrapped.make_vec(size)
    venv.reset(seed=seed)
    answered = 0
    for _ in range(batches):
        try:
            venv.step((["response-0"] * size, ["response-1"] * size))
            answered += size
        except QueryBudgetExceeded as e:
            return answered, str(e)
    return answered, None


def test_two_workers_share_one_oracle_service_and_one_budget():
    service = ray.remote(OracleService).options(num_cpus=0).remote(
        LIN, {"setting": "online", "query_budget": 64, "seed": 0})
    results = ray.get([_spend.remote(service, 6, 8, s) for s in (1, 2)])
    assert sum(a for a, _ in results) == 64  # exactly the budget, across both workers
    errors = [err for _, err in results if err is not None]
    assert errors and all("64 of 64 queries used" in err for err in errors)
    assert ray.get(service.counts.remote())["used"] == 64
    view = connect(RayClient(service))  # and a third view, in this process
    view.reset(seed=0)
    with pytest.raises(QueryBudgetExceeded, match="64 of 64"):
        view.step(("response-0", "response-1"))


@ray.remote(max_retries=1)
def _killed_once(cfg_dict, runs, marker):
    """run_job, but the first attempt's worker dies (SIGKILL) after round 2's labels."""
    import agents.checkpoint as checkpoint

    if not os.path.exists(marker):
        original, calls = checkpoint.Checkpointer.save_pairs, []

        def save_pairs(self, t, data):
            calls.append(t)
            if len(calls) == 2:
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, t, data)

        checkpoint.Checkpointer.save_pairs = save_pairs
    return run_job(cfg_dict, runs, None, "test")


def test_a_killed_worker_finishes_on_retry_paying_nothing_twice(tmp_path):
    cfg = resolve("iterative_dpo", LIN, 0, env_kwargs={"query_budget": 256},
                  hyperparams={"num_train_epochs": 20, "eval_every": 0})
    result = ray.get(_killed_once.remote(cfg.to_dict(), str(tmp_path), str(tmp_path / "died")))
    assert (tmp_path / "died").exists()  # the first attempt really died
    folder = tmp_path / LIN / "iterative_dpo" / "seed0"
    with sqlite3.connect(folder / "ledger.sqlite") as db:
        paid = db.execute("SELECT SUM(n) FROM batches").fetchone()[0]
        statuses = [s for (s,) in db.execute("SELECT status FROM sessions ORDER BY id")]
    assert paid == 256 == result["queries_used"] and statuses == ["killed", "done"]


@ray.remote(max_calls=1)  # a fresh worker process: nothing left from other tasks
def _sealed_worker(cfg_dict, runs):
    from rlhf_env.judging import Judge
    from rlhf_env.oracles import Oracle

    result = run_job(cfg_dict, runs, None, "test", sealed=True)
    gc.collect()
    held = [type(o).__name__ for o in gc.get_objects()
            if isinstance(o, (Judge, OracleService))
            or (isinstance(o, Oracle) and type(o).__name__ != "_ServiceOracle")]
    env_classes = [o for o in gc.get_objects() if type(o).__name__ == "LinearBTEnv"]
    return result, held, len(env_classes)


def test_a_sealed_worker_holds_no_gold_reward(tmp_path):
    cfg = resolve("gshf_online", LIN, 0, env_kwargs={"query_budget": 128},
                  hyperparams={"iterations": 2, "eval_every": 0})
    result, held, envs = ray.get(_sealed_worker.remote(cfg.to_dict(), str(tmp_path)))
    assert held == [] and envs == 0  # no judge, no oracle, no env made in the worker
    assert result["queries_used"] == 128 and 0.5 < result["normalized_score"] <= 1.0
    local = rlhf_env.make(LIN, query_budget=128, seed=0)  # and it is the honest score
    assert result["optimal_objective"] == pytest.approx(
        rlhf_env.evaluate(local.unwrapped.reference, local)["optimal_objective"])

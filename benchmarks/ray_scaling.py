"""Scale-out on Ray: a leaderboard sequential vs on Ray workers, and the cost of the oracle actor.

    python benchmarks/ray_scaling.py [--env LinearBT-v0] [--seeds 3] [--workers 2]
        [--skip leaderboard,oracle]

1. The leaderboard of every agent with an entry for the env (``rlhf-zoo leaderboard``),
   sequential and with ``--workers N``, in fresh run folders: wall times, speed-up, and
   whether the two tables hold the same numbers (every metric but wall time).
2. The oracle as a service: labelled pairs per second through a Ray actor
   (:class:`rlhf_env.service.OracleService`) against the same env in process, at batch
   sizes 1, 64 and 1024, and with 2 workers sharing one actor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def leaderboard(env: str, seeds: int, workers: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="ray_bench_"))
    walls, boards = {}, {}
    for label, extra in (("sequential", []), (f"{workers} workers", ["--workers", str(workers)])):
        out = root / label.replace(" ", "_")
        # each as the command a user types, in a fresh process (imports, Ray start and stop,
        # the table and plots included)
        argv = [sys.executable, "-m", "agents.zoo", "-q", "leaderboard", "--env", env,
                "--seeds", str(seeds), "--runs-dir", str(root / f"runs_{label.replace(' ', '_')}"),
                "--out", str(out), *extra]
        start = time.perf_counter()
        rc = subprocess.run(argv, stdout=subprocess.DEVNULL).returncode
        walls[label] = time.perf_counter() - start
        assert rc == 0, f"{label} leaderboard failed"
        boards[label] = json.loads((out / "leaderboard.json").read_text())["agents"]
    same = all(
        boards["sequential"][a][k]["values"] == boards[f"{workers} workers"][a][k]["values"]
        for a in boards["sequential"] for k, m in boards["sequential"][a].items()
        if isinstance(m, dict) and "values" in m and k not in ("wall_s", "sessions"))
    n = len(boards["sequential"]) * seeds
    print(f"\n{env}, {len(boards['sequential'])} agents x {seeds} seeds = {n} runs")
    print("| how | wall s |\n|---|---|")
    for label, wall in walls.items():
        print(f"| {label} | {wall:.1f} |")
    print(f"speed-up: {walls['sequential'] / walls[f'{workers} workers']:.2f}x; "
          f"identical numbers (every metric but wall time): {same}")
    shutil.rmtree(root, ignore_errors=True)


def oracle(env_id: str) -> None:
    import numpy as np
    import ray

    import rlhf_env
    from agents.zoo.distributed import RayClient
    from rlhf_env.service import OracleService, connect

    budget = 10_000_000
    kwargs = {"setting": "online", "query_budget": budget, "seed": 0}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    def rate(env, batch: int, seconds: float = 3.0) -> float:
        venv = env.unwrapped.make_vec(batch)
        venv.reset(seed=0)
        responses = env.unwrapped.catalog.responses
        a1, a2 = [responses[0]] * batch, [responses[1]] * batch
        venv.step((a1, a2))  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            venv.step((a1, a2))
            done += batch
        return done / (time.perf_counter() - start)

    @ray.remote
    def shared(handle, batch: int) -> float:
        return rate(connect(RayClient(handle)), batch)

    local = rlhf_env.make(env_id, **kwargs)
    actor = ray.remote(OracleService).options(num_cpus=0).remote(env_id, kwargs)
    remote = connect(RayClient(actor))
    print(f"\noracle throughput on {env_id} (labelled pairs/s; best single run of ~3 s)")
    print("| batch | in process | through the actor | 2 workers sharing the actor (sum) |")
    print("|---|---|---|---|")
    for batch in (1, 64, 1024):
        two = sum(ray.get([shared.remote(actor, batch) for _ in range(2)]))
        print(f"| {batch} | {rate(local, batch):.0f} | {rate(remote, batch):.0f} | {two:.0f} |")
    used = ray.get(actor.counts.remote())["used"]
    assert np.isfinite(used)
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="LinearBT-v0")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip", default="", help="comma-separated: leaderboard, oracle")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    if "leaderboard" not in skip:
        leaderboard(args.env, args.seeds, args.workers)
    if "oracle" not in skip:
        oracle(args.env)


if __name__ == "__main__":
    main()

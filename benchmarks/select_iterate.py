"""Return the best iterate or the last: ``select_iterate="holdout"`` against ``"last"``.

    python benchmarks/select_iterate.py [--envs LinearBT-v0,LinearBT-Explore-v0]
        [--agents online_dpo,gshf_online,thompson_gibbs] [--seeds 100-104] [--budget 256]

Each (env, agent, seed) is trained twice with the zoo's config, once returning the last
iterate and once the best on the held-out share of its paid labels (agents/select.py), at
the same budget (the held-out labels are part of it). Prints the mean normalized score of
each and the paired difference (holdout - last) with its 95% t-interval. Tune on seeds
>= 100; report on others.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from agents.zoo.cli import parse_seeds
from agents.zoo.config import resolve
from agents.zoo.run import train_run
from agents.zoo.stats import paired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="LinearBT-v0,LinearBT-Explore-v0")
    parser.add_argument("--agents", default="online_dpo,gshf_online,thompson_gibbs")
    parser.add_argument("--seeds", default="100-104")
    parser.add_argument("--budget", type=int, default=256)
    parser.add_argument("--fraction", type=float, default=0.1)
    args = parser.parse_args()
    runs = tempfile.mkdtemp()
    t0, c0 = time.perf_counter(), time.process_time()
    for env in args.envs.split(","):
        for agent in args.agents.split(","):
            score: dict[str, dict[int, float]] = {"last": {}, "holdout": {}}
            for seed in parse_seeds(args.seeds):
                for mode in score:
                    cfg = resolve(agent, env, seed, setting="online",
                                  env_kwargs={"query_budget": args.budget},
                                  hyperparams={"select_iterate": mode,
                                               "holdout_fraction": args.fraction})
                    res = train_run(cfg, f"{runs}/{mode}", progress=False)
                    score[mode][seed] = float(res["normalized_score"])
            d = paired(score["holdout"], score["last"])
            mean = {m: sum(v.values()) / len(v) for m, v in score.items()}
            print(f"{env:22s} {agent:16s} last {mean['last']:.3f}  holdout "
                  f"{mean['holdout']:.3f}  holdout - last {d['mean']:+.3f} "
                  f"[{d['low']:+.3f}, {d['high']:+.3f}]", flush=True)
    print(f"{time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU")


if __name__ == "__main__":
    main()

"""Every agent on LinearBT-v0 (defaults), over several seeds: exact scores.

    python benchmarks/linear_bt_agents.py [--seeds 5] [--env LinearBT-v0] [--agents a,b]
        [--parametrization tabular] [--hparams beta=4 ...]

Prints mean ± standard deviation over seeds of the normalized score, the
objective J, the KL to pi0, the queries spent and the wall time per run, then
each agent's normalized score per seed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import yaml

import agents
import rlhf_env

ORDER = ["reference", "best_of_n", "dpo", "rso", "multi_step_rso", "iterative_dpo", "ppo",
         "mle_gibbs", "pessimistic_gibbs", "gshf_online", "gshf_hybrid"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="LinearBT-v0")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--agents", default=",".join(ORDER))
    parser.add_argument("--parametrization", default=None,
                        help="policy class of the trained agents: loglinear or tabular")
    parser.add_argument("--hparams", nargs="*", default=[], metavar="K=V",
                        help="hyperparameters for every listed agent (values read as YAML)")
    args = parser.parse_args()
    extra = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.hparams)}
    per_seed = {}
    print(f"{args.env}, seeds 0..{args.seeds - 1}, agents with default hyperparameters\n")
    print("| agent | normalized score | objective | KL | queries | seconds/run |")
    print("|---|---|---|---|---|---|")
    for name in args.agents.split(","):
        rows = []
        for seed in range(args.seeds):
            env = rlhf_env.make(args.env, seed=seed)
            t = time.perf_counter()
            hp = {"parametrization": args.parametrization} if args.parametrization and name not in (
                "reference", "best_of_n") else {}
            hp.update(extra)
            agent = agents.make(name, env, seed=seed, progress=False, **hp).learn()
            wall = time.perf_counter() - t
            m = rlhf_env.evaluate(agent.policy, env)
            rows.append([m["normalized_score"], m["objective"], m["kl"],
                         env.unwrapped.queries_used, wall])
        r = np.array(rows)
        per_seed[name] = r[:, 0]
        mean, sd = r.mean(0), r.std(0, ddof=1) if len(r) > 1 else np.zeros(r.shape[1])
        print(f"| {name} | {mean[0]:.3f} ± {sd[0]:.3f} | {mean[1]:.3f} ± {sd[1]:.3f} | "
              f"{mean[2]:.3f} | {mean[3]:.0f} | {mean[4]:.1f} |")
    print("\nnormalized score per seed")
    for name, scores in per_seed.items():
        print(f"{name}: " + " ".join(f"{x:.4f}" for x in scores))


if __name__ == "__main__":
    main()

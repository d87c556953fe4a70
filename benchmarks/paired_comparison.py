"""Two agents on the same instances, paired by seed: the 95% interval of the per-seed difference.

    python benchmarks/paired_comparison.py --env LinearBT-Explore-v0 --setting online \\
        --labels 1024 --seeds 0-9 --agent gshf_online --baseline mle_gibbs_pi0
    python benchmarks/paired_comparison.py --env LinearBT-Explore-v0 --setting online \\
        --labels 1024 --agent gshf_online --baseline gshf_online \\
        --baseline-hparams width_rule=fixed confidence_width=0

Seeds change the instance (prompts, pi0, theta*), so two agents' intervals overlap from
instance variance alone; the per-seed difference (agent minus baseline, on the same
instance) removes it. Each run makes the env with ``seed=s`` (and ``setting``,
``query_budget=labels``), builds the agent with its zoo config for the env plus the
given hyperparameters and ``seed=s``, learns, and evaluates exactly. Prints both agents'
normalized scores per seed, the labels each used (offline pairs + queries), the mean
difference and its 95% t-interval (n - 1 degrees of freedom), and how many seeds the
agent is ahead on.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import yaml

import agents
import rlhf_env

# two-sided 95% Student t quantiles, by degrees of freedom (1..30)
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
       2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
       2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t_interval(x: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``x`` and its two-sided 95% Student t-interval."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 2:
        return float(x.mean()), float("nan"), float("nan")
    t = T95[min(n - 2, len(T95) - 1)] if n - 1 <= len(T95) else 1.96
    half = t * x.std(ddof=1) / math.sqrt(n)
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def parse_seeds(text: str) -> list[int]:
    """``"0-9"`` or ``"0,3,5"`` (or a mix) as a list of ints."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def parse_hparams(items: list[str]) -> dict:
    """``["k=v", ...]`` with values read as YAML."""
    return {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in items)}


def run(name: str, env_id: str, seed: int, setting: str, labels: int, hparams: dict,
        env_kwargs: dict) -> tuple[dict, int, int, float]:
    """One run: (evaluation, offline pairs, queries used, seconds)."""
    kw = dict(env_kwargs)
    if setting != "offline":
        kw["query_budget"] = labels
    env = rlhf_env.make(env_id, seed=seed, setting=setting, **kw)
    t = time.perf_counter()
    agent = agents.make(name, env, seed=seed, progress=False, **hparams).learn()
    wall = time.perf_counter() - t
    ds = env.unwrapped.offline_dataset
    return (rlhf_env.evaluate(agent.policy, env), 0 if ds is None else len(ds),
            env.unwrapped.queries_used, wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="LinearBT-Explore-v0")
    parser.add_argument("--setting", default="online")
    parser.add_argument("--labels", type=int, default=1024, help="the query budget")
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--agent", required=True)
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--agent-hparams", nargs="*", default=[], metavar="K=V")
    parser.add_argument("--baseline-hparams", nargs="*", default=[], metavar="K=V")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="K=V")
    parser.add_argument("--metric", default="normalized_score")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    env_kwargs = parse_hparams(args.env_kwargs)
    sides = [(args.agent, parse_hparams(args.agent_hparams)),
             (args.baseline, parse_hparams(args.baseline_hparams))]
    budget = "no queries" if args.setting == "offline" else f"query budget {args.labels}"
    print(f"{args.env} ({args.setting}, {budget}, env kwargs {env_kwargs}), "
          f"seeds {args.seeds}; metric {args.metric}")
    scores = np.zeros((2, len(seeds)))
    for side, (name, hp) in enumerate(sides):
        labels, walls = set(), []
        for i, seed in enumerate(seeds):
            m, n_off, used, wall = run(name, args.env, seed, args.setting, args.labels, hp,
                                       env_kwargs)
            scores[side, i] = m[args.metric]
            labels.add((n_off, used))
            walls.append(wall)
        used = ", ".join(f"{o} offline + {q} queried" for o, q in sorted(labels))
        print(f"{name} {hp or ''}: mean {scores[side].mean():.4f}; labels {used}; "
              f"{np.mean(walls):.1f} s/run")
        print("  per seed: " + " ".join(f"{x:.4f}" for x in scores[side]))
    diff = scores[0] - scores[1]
    mean, lo, hi = t_interval(diff)
    print(f"difference ({args.agent} - {args.baseline}): {mean:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}]"
          f"; ahead on {int((diff > 0).sum())} of {len(diff)} seeds"
          f"{'; interval above 0' if lo > 0 else ''}")


if __name__ == "__main__":
    main()

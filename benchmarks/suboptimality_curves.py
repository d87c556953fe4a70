"""Suboptimality (1 - normalized score) against labels, log-log, with fitted slopes.

    python benchmarks/suboptimality_curves.py --envs LinearBT-Explore-v0,LinearBT-v0 \\
        --seeds 0-9 --out benchmarks/results/suboptimality_curves.png

Every run is at *equal labels*: the env is made online with ``query_budget=N`` and no
offline data, so the offline learners (``mle_gibbs_pi0``, ``pessimistic_gibbs_pi0``) spend
their N labels on pairs of pi0 samples and the online ones (``gshf_online``,
``iterative_dpo``) on pairs of their own choosing; every agent takes its zoo config for
the env. For each agent and N the script prints the mean normalized score over the seeds,
the fitted slope of log(mean suboptimality) against log N over the tail (the points whose
mean score is at least ``--tail-score``, where the second-order expansion below applies),
and the labels each agent needs for a mean normalized score of 0.9 (interpolated on log N
between grid points), with the ratio online / offline, also per seed.

What slope to expect. The Gibbs policy pi_r = pi0 e^{r/eta} / Z of any reward estimate r
has J(pi*) - J(pi_r) = eta * KL(pi_r || pi*) exactly (J(pi) = eta log Z* - eta KL(pi || pi*)
for every pi), which is second order in r - r*: about Var_{pi*}(r - r*) / (2 eta). With
||theta_hat - theta*||^2 of order d / N, the suboptimality of every Gibbs-of-MLE learner
falls as 1/N (slope -1) once the estimate is close; the paper's bounds (Xiong et al. 2024,
Theorems 1-2) are O(1/sqrt(N)), an upper bound that does not use this curvature.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import yaml

import agents
import rlhf_env

AGENTS = ["mle_gibbs_pi0", "pessimistic_gibbs_pi0", "gshf_online", "iterative_dpo",
          "gshf_online[width_rule=fixed,confidence_width=0]"]
LABELS = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]
OFFLINE = ("mle_gibbs_pi0", "pessimistic_gibbs_pi0")
STYLE = {"mle_gibbs_pi0": ("tab:blue", "o"), "pessimistic_gibbs_pi0": ("tab:cyan", "v"),
         "gshf_online": ("tab:red", "s"), "iterative_dpo": ("tab:orange", "D"),
         "gshf_online[width_rule=fixed,confidence_width=0]": ("tab:pink", "x"),
         "mle_gibbs_uniform": ("tab:green", "^"), "mle_gibbs_design": ("tab:olive", "P"),
         "thompson_gibbs": ("tab:purple", "*")}
# agents without a style of their own take the next unused one (no colour repeats)
SPARE = [("tab:brown", "h"), ("tab:gray", "<"), ("black", ">"), ("gold", "p")]


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def parse_agent(spec: str) -> tuple[str, dict]:
    """``"name[k=v,k=v]"`` -> (name, {k: v}) with values read as YAML."""
    name, _, rest = spec.partition("[")
    items = [kv for kv in rest.rstrip("]").split(",") if kv]
    return name, {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in items)}


def score(spec: str, env_id: str, seed: int, labels: int) -> float:
    """Normalized score of agent ``spec`` after ``labels`` queries on env seed ``seed``."""
    name, hparams = parse_agent(spec)
    env = rlhf_env.make(env_id, seed=seed, setting="online", query_budget=labels)
    agent = agents.make(name, env, seed=seed, progress=False, **hparams).learn()
    assert env.unwrapped.queries_used == labels, (name, env.unwrapped.queries_used)
    return rlhf_env.evaluate(agent.policy, env)["normalized_score"]


def slope(labels: np.ndarray, subopt: np.ndarray, mean_score: np.ndarray,
          tail_score: float) -> tuple[float, int]:
    """Least-squares slope of log(subopt) on log(labels) over the tail; (slope, points)."""
    keep = (mean_score >= tail_score) & (subopt > 0)
    if keep.sum() < 3:
        return float("nan"), int(keep.sum())
    return float(np.polyfit(np.log(labels[keep]), np.log(subopt[keep]), 1)[0]), int(keep.sum())


def labels_to_reach(labels: np.ndarray, scores: np.ndarray, target: float) -> float:
    """The first N where ``scores`` reaches ``target``, log-interpolated; inf if never."""
    for i, s in enumerate(scores):
        if s >= target:
            if i == 0:
                return float(labels[0])
            s0, s1 = scores[i - 1], s
            f = (target - s0) / (s1 - s0)
            return float(math.exp(math.log(labels[i - 1]) + f * math.log(labels[i] / labels[i - 1])))
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="LinearBT-Explore-v0,LinearBT-v0")
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--agents", nargs="*", default=AGENTS,
                        help="agent names, each optionally with overrides: "
                             "'gshf_online[width_rule=fixed,confidence_width=0]'")
    parser.add_argument("--labels", default=",".join(map(str, LABELS)))
    parser.add_argument("--online-max", type=int, default=8192,
                        help="largest N for the online agents (the offline ones go further)")
    parser.add_argument("--tail-score", type=float, default=0.5)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--out", default="benchmarks/results/suboptimality_curves.png")
    parser.add_argument("--json", default=None, help="also write the raw scores here")
    args = parser.parse_args()
    seeds, names = parse_seeds(args.seeds), list(args.agents)
    grid = [int(n) for n in args.labels.split(",")]
    envs = args.envs.split(",")
    raw: dict[str, dict[str, dict[int, list[float]]]] = {}
    for env_id in envs:
        raw[env_id] = {}
        for name in names:
            ns = [n for n in grid if name in OFFLINE or n <= args.online_max]
            t = time.perf_counter()
            raw[env_id][name] = {n: [score(name, env_id, s, n) for s in seeds] for n in ns}
            print(f"[{env_id}] {name}: {time.perf_counter() - t:.0f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))
    report(raw, seeds, args)
    plot(raw, args)


def report(raw: dict, seeds: list[int], args: argparse.Namespace) -> None:
    for env_id, per_agent in raw.items():
        print(f"\n## {env_id} (online, equal labels; seeds {args.seeds}; mean normalized score)")
        ns = sorted({n for d in per_agent.values() for n in d})
        print("| agent | " + " | ".join(str(n) for n in ns) + " | slope (tail) | N for "
              f"{args.target} |")
        print("|---|" + "---|" * (len(ns) + 2))
        reach = {}
        for name, d in per_agent.items():
            lab = np.array(sorted(d))
            sc = np.array([np.mean(d[n]) for n in lab])
            sub = np.array([np.mean([1 - x for x in d[n]]) for n in lab])
            b, k = slope(lab, sub, sc, args.tail_score)
            reach[name] = (labels_to_reach(lab, sc, args.target),
                           [labels_to_reach(lab, np.array([d[n][i] for n in lab]), args.target)
                            for i in range(len(seeds))])
            cells = [f"{np.mean(d[n]):.3f}" if n in d else "" for n in ns]
            print(f"| {name} | " + " | ".join(cells) + f" | {b:.2f} ({k} pts) | "
                  f"{reach[name][0]:.0f} |")
        offline = [a for a in reach if a in OFFLINE]
        online = [a for a in reach if a not in OFFLINE]
        for on in online:
            for off in offline:
                r = reach[on][0] / reach[off][0]
                per = np.array(reach[on][1]) / np.array(reach[off][1])
                print(f"labels to reach {args.target}: {on} / {off} = {reach[on][0]:.0f} / "
                      f"{reach[off][0]:.0f} = {r:.3f} (mean curves); per seed median "
                      f"{np.median(per):.3f}, max {np.max(per):.3f}")


def plot(raw: dict, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(raw), figsize=(6.2 * len(raw), 4.8), squeeze=False)
    spare = iter(SPARE)
    styles = {name: STYLE.get(name) or next(spare, ("k", "."))
              for per_agent in raw.values() for name in per_agent}
    for ax, (env_id, per_agent) in zip(axes[0], raw.items()):
        for name, d in per_agent.items():
            lab = np.array(sorted(d))
            per_seed = np.array([[1 - x for x in d[n]] for n in lab])  # (N, seeds)
            sub = per_seed.mean(1)
            sc = np.array([np.mean(d[n]) for n in lab])
            b, _ = slope(lab, sub, sc, args.tail_score)
            color, marker = styles[name]
            lo, hi = np.quantile(per_seed, [0.1, 0.9], axis=1)
            ax.fill_between(lab, np.clip(lo, 1e-4, None), np.clip(hi, 1e-4, None), color=color,
                            alpha=0.12, lw=0)
            ax.plot(lab, np.clip(sub, 1e-4, None), marker=marker, color=color,
                    label=f"{name} (tail slope {b:.2f})")
        ref = np.array([min(min(d) for d in per_agent.values()),
                        max(max(d) for d in per_agent.values())], dtype=float)
        for p, ls in ((-0.5, ":"), (-1.0, "--")):
            ax.plot(ref, 0.5 * (ref / ref[0]) ** p, color="grey", ls=ls, lw=1,
                    label=f"slope {p:g}")
        ax.axhline(1 - args.target, color="grey", lw=0.6)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("labels (pairs labelled by the BT oracle)")
        ax.set_ylabel("suboptimality 1 - normalized score")
        ax.set_title(f"{env_id}: mean over seeds {args.seeds} (band: 10-90%)")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

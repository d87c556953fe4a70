"""RSO against multi-step RSO where the sampler matters, on the reward-KL plane.

    python benchmarks/rso_reward_kl.py --env LinearBT-v0 --seeds 0-9 \\
        --out benchmarks/results/rso_reward_kl.png

With soft labels and the log-linear policy class both agents reach the Gibbs policy of
the fitted reward whatever the proposal, so they tie (benchmarks/README.md). The
proposal matters when the policy learns only about the responses it is shown (a tabular
policy, as a language model) or when the labels are hard (chosen = the higher fitted
reward, RSO's choice). For each variant (``tabular/soft``, ``loglinear/hard``,
``tabular/hard``) and each target temperature eta' = ``rs_eta`` (a multiple of the env's
eta), the script runs ``rso`` (one rejection-sampling stage from pi0 towards
pi0 e^{r/eta'}) and ``multi_step_rso`` (the annealed chain 4 eta', 2 eta', eta') on the
offline data of each seed, and evaluates exactly: gold reward E_pi r*, KL(pi || pi0), and
the objective J at the env's eta. It prints the means, the paired difference of J
(multi-step minus one-step, at eta' = eta) with its 95% t-interval, and plots gold
reward against KL for every run with the frontier {pi0 e^{r*/s} / Z : s > 0} (the best
reward any policy gets at each KL) and best-of-n of pi0 by the gold reward.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

import agents
import rlhf_env
from rlhf_env.policies.closed_forms import gibbs_log_probs, kl_rows

T95 = {9: 2.262, 4: 2.776, 5: 2.571, 2: 4.303}
VARIANTS = {"tabular/soft": {"parametrization": "tabular", "labels": "soft"},
            "loglinear/hard": {"parametrization": "loglinear", "labels": "hard"},
            "tabular/hard": {"parametrization": "tabular", "labels": "hard"}}


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def frontier(env: object, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(KL, gold reward) of pi0 e^{r*/s} / Z for each s: the best reward at each KL."""
    j = rlhf_env.judge(env)
    r = j.reward_table()
    log_ref = env.unwrapped.reference.log_probs_table().detach().double().numpy()
    kls, rewards = [], []
    for s in scales:
        logp = gibbs_log_probs(log_ref, r, s)
        p = np.exp(logp)
        kls.append(float(np.mean(kl_rows(p, logp, log_ref))))
        rewards.append(float(np.mean((p * r).sum(1))))
    return np.array(kls), np.array(rewards)


def interval(x: np.ndarray) -> str:
    n = len(x)
    half = T95.get(n - 1, 1.96) * x.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
    lo, hi = x.mean() - half, x.mean() + half
    return f"{x.mean():+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}]" + (
        " (above 0)" if lo > 0 else " (below 0)" if hi < 0 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="LinearBT-v0")
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--temperatures", default="0.5,1,2",
                        help="target temperatures eta' in units of the env's eta")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default="benchmarks/results/rso_reward_kl.png")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    temps = [float(t) for t in args.temperatures.split(",")]
    variants = args.variants.split(",")
    runs: dict[tuple[str, str, float], list[dict]] = {}
    scales = np.geomspace(0.03, 50, 48)
    front = []
    for seed in seeds:
        env = rlhf_env.make(args.env, seed=seed)
        front.append(frontier(env, scales))
        bon = rlhf_env.evaluate(env.unwrapped.reference, env)
        front[-1] += ([bon[f"best_of_{n}/kl"] for n in (2, 4, 8, 16, 32, 64)],
                      [bon[f"best_of_{n}/gold_reward"] for n in (2, 4, 8, 16, 32, 64)])
        eta = env.unwrapped.eta
        for variant in variants:
            for temp in temps:
                for name in ("rso", "multi_step_rso"):
                    env = rlhf_env.make(args.env, seed=seed)
                    hp = {**VARIANTS[variant], "rs_eta": temp * eta}
                    if hp["labels"] == "hard":
                        hp["loss_type"] = "sigmoid"
                    agent = agents.make(name, env, seed=seed, progress=False, **hp).learn()
                    m = rlhf_env.evaluate(agent.policy, env)
                    runs.setdefault((variant, name, temp), []).append(m)
        print(f"seed {seed} done", flush=True)

    print(f"\n{args.env}, seeds {args.seeds}; exact evaluation at the env's eta\n")
    print("| variant | eta'/eta | agent | gold reward | KL | objective J | normalized |")
    print("|---|---|---|---|---|---|---|")
    for (variant, name, temp), ms in runs.items():
        g, k, o, s = (np.mean([m[key] for m in ms]) for key in
                      ("gold_reward", "kl", "objective", "normalized_score"))
        print(f"| {variant} | {temp:g} | {name} | {g:.3f} | {k:.3f} | {o:.3f} | {s:.3f} |")
    print()
    for variant in variants:
        for temp in temps:
            one = np.array([m["objective"] for m in runs[(variant, "rso", temp)]])
            multi = np.array([m["objective"] for m in runs[(variant, "multi_step_rso", temp)]])
            print(f"{variant}, eta' = {temp:g} eta: J(multi_step_rso) - J(rso) = "
                  f"{interval(multi - one)}; ahead on {int((multi > one).sum())} of {len(one)}")
    plot(runs, front, variants, temps, args)


def plot(runs: dict, front: list, variants: list[str], temps: list[float],
         args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fk = np.mean([f[0] for f in front], axis=0)
    fr = np.mean([f[1] for f in front], axis=0)
    bk = np.mean([f[2] for f in front], axis=0)
    br = np.mean([f[3] for f in front], axis=0)
    fig, axes = plt.subplots(1, len(variants), figsize=(5.2 * len(variants), 4.4), squeeze=False)
    colors = {"rso": "tab:blue", "multi_step_rso": "tab:red"}
    markers = dict(zip(temps, ["v", "o", "^", "s", "D"]))
    for ax, variant in zip(axes[0], variants):
        ax.plot(fk, fr, color="k", lw=1.2, label="Gibbs frontier pi0 e^{r*/s}")
        ax.plot(bk, br, color="grey", ls="--", marker=".", lw=1, label="best-of-n (gold), n=2..64")
        for name in ("rso", "multi_step_rso"):
            for temp in temps:
                ms = runs[(variant, name, temp)]
                k = [m["kl"] for m in ms]
                g = [m["gold_reward"] for m in ms]
                ax.scatter(k, g, s=10, color=colors[name], marker=markers[temp], alpha=0.35)
                ax.scatter([np.mean(k)], [np.mean(g)], s=70, color=colors[name],
                           marker=markers[temp], edgecolor="k",
                           label=f"{name}, eta'={temp:g} eta (mean)")
        kl_max = max(m["kl"] for (v, _, _), ms in runs.items() if v == variant for m in ms)
        ax.set_xlim(0, 1.15 * kl_max)
        ax.set_ylim(0, 1.1 * max(fr[fk <= 1.15 * kl_max].max(), max(
            m["gold_reward"] for (v, _, _), ms in runs.items() if v == variant for m in ms)))
        ax.set_xlabel("KL(pi || pi0), nats")
        ax.set_ylabel("gold reward E_pi r*")
        ax.set_title(f"{args.env}, {variant}: seeds {args.seeds}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

"""Reward over-optimisation on TinyInstruct-v0: best-of-n of pi0 under a learned reward model.

    python benchmarks/overoptimisation.py [--oracles bt,alpacafarm] [--seeds 3] [--out PNG]

For each training oracle and seed: the BT reward model best_of_n fits on the env's 512
offline pairs (labelled by that oracle), then best-of-n of pi0 under it for n = 1 ... 64,
evaluated on 64 held-out prompts x 4 samples: the gold reward, the proxy reward (the RM's
score) and the analytic best-of-n KL, log n − (n − 1)/n. Gao et al. (2023) saw the gold
reward rise then fall as the KL grows when the proxy is imperfect; this prints and plots
what happens here (gold and proxy against sqrt(KL)), with the RM's agreement with gold.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    import numpy as np

    import rlhf_env
    from agents.data import PreferenceData
    from agents.reward_models import fit_reward_model
    from rlhf_env.diagnostics import proxy_reward, reward_model_agreement
    from rlhf_env.policies import best_of_n_policy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracles", default="bt,alpacafarm")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/overoptimisation.png")
    args = parser.parse_args()
    ns = (1, 2, 4, 8, 16, 32, 64)
    table: dict[str, np.ndarray] = {}
    for oracle in args.oracles.split(","):
        rows = []
        for seed in range(args.seeds):
            env = rlhf_env.make("TinyInstruct-v0", seed=seed, oracle=oracle)
            inst = env.unwrapped.instance
            rm = fit_reward_model(inst, PreferenceData.from_dataset(inst.offline_dataset),
                                  seed=seed)
            agree = reward_model_agreement(rm, env)
            per_n = []
            for n in ns:
                pol = best_of_n_policy(inst.reference, rm, n)
                m = rlhf_env.evaluate(pol, env, n_prompts=64, n_samples=4, best_of_n=(), seed=0)
                proxy = proxy_reward(rm, pol, env, n_prompts=64, n_samples=4, seed=0)
                per_n.append((m["kl"], m["gold_reward"], proxy))
            rows.append(per_n)
            print(f"{oracle} seed {seed}: RM agreement with gold {agree:.3f}; gold by n "
                  + " ".join(f"{g:.3f}" for _, g, _ in per_n), flush=True)
        table[oracle] = np.array(rows)  # (seeds, n, 3)
    print("\n| oracle | n | KL | gold reward (mean ± sd over seeds) | proxy reward |")
    print("|---|---|---|---|---|")
    for oracle, arr in table.items():
        for j, n in enumerate(ns):
            g = arr[:, j, 1]
            print(f"| {oracle} | {n} | {arr[0, j, 0]:.3f} | {g.mean():.3f} ± {g.std(ddof=1):.3f} "
                  f"| {arr[:, j, 2].mean():.3f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for oracle, arr in table.items():
        x = np.sqrt(arr[0, :, 0])
        line = ax.plot(x, arr[:, :, 1].mean(0), "-o", label=oracle)[0]
        ax2.plot(x, arr[:, :, 2].mean(0), "--o", color=line.get_color(), label=oracle)
        for j, n in enumerate(ns):
            ax.annotate(f"n={n}", (x[j], arr[:, j, 1].mean()), fontsize=7,
                        textcoords="offset points", xytext=(3, -9))
    ax.set_xlabel("sqrt(KL) of best-of-n  [sqrt nats]")
    ax.set_ylabel("gold reward")
    ax2.set_xlabel("sqrt(KL) of best-of-n  [sqrt nats]")
    ax2.set_ylabel("proxy reward (the RM's own units)")
    for a in (ax, ax2):
        a.grid(alpha=0.3)
        a.legend(title="training oracle")
    fig.suptitle(f"TinyInstruct-v0: best-of-n of pi0 under a learned RM ({args.seeds} seeds)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

"""Leaderboard plots (matplotlib, Agg): metrics with intervals, reward against KL, objective
against queries spent."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from agents.zoo.run import run_dir

__all__ = ["make_all"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _order(agg: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(agg, key=lambda a: agg[a]["objective"]["mean"])  # best at the top of a barh


def _err(m: dict[str, Any]) -> float:
    return 0.0 if math.isnan(m["ci95"]) else m["ci95"]


def metrics_plot(env_id: str, agg: dict[str, dict[str, Any]], path: Path) -> Path:
    from agents.zoo.stats import METRICS

    plt = _plt()
    cols = [(k, t) for k, t, _ in METRICS if any(k in e for e in agg.values())]
    names = _order(agg)
    ncol = min(4, len(cols))
    nrow = math.ceil(len(cols) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 0.35 * len(names) * nrow + 1.6 * nrow),
                             squeeze=False)
    for ax, (key, title) in zip(axes.flat, cols):
        ms = [agg[a].get(key) for a in names]
        y = np.arange(len(names))
        ax.barh(y, [m["mean"] if m else 0 for m in ms], xerr=[_err(m) if m else 0 for m in ms],
                color="#4C72B0", ecolor="black", capsize=3)
        ax.set_yticks(y, names if ax in axes[:, 0] else [""] * len(names))
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    fig.suptitle(f"{env_id}: mean and 95% interval over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reward_kl_plot(env_id: str, agg: dict[str, dict[str, Any]], path: Path) -> Path:
    """Each agent at (KL, gold reward) with intervals; pi0; pi* where known; best-of-n of pi0."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    ref_entry = agg.get("reference") or next(iter(agg.values()))
    ns = sorted(int(k.split("/")[0][8:]) for k in ref_entry if k.startswith("best_of_")
                and k.endswith("/kl"))
    if ns:
        kl = [ref_entry[f"best_of_{n}/kl"]["mean"] for n in ns]
        gr = [ref_entry[f"best_of_{n}/gold_reward"]["mean"] for n in ns]
        ax.plot(kl, gr, "-", color="gray", marker=".", label="best-of-n of pi0 (gold reward)")
        for n, x, y in zip(ns, kl, gr):
            ax.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7,
                        color="gray")
        ax.plot([kl[0]], [gr[0]], "ks", markersize=8, label="pi0")
    if "optimal/kl" in ref_entry:
        ax.plot([ref_entry["optimal/kl"]["mean"]], [ref_entry["optimal/gold_reward"]["mean"]],
                "r*", markersize=16, label="pi* (Gibbs optimum)", zorder=5)
    cmap = plt.get_cmap("tab10")
    for i, a in enumerate(sorted(agg)):  # colour and marker together: distinct past 10 agents
        e = agg[a]
        ax.errorbar(e["kl"]["mean"], e["gold_reward"]["mean"], xerr=_err(e["kl"]),
                    yerr=_err(e["gold_reward"]), fmt="osD^v"[i // 10 % 5], capsize=3,
                    color=cmap(i % 10), label=a, alpha=0.85)
    ax.set_xlabel("KL(pi || pi0)  [nats]")
    ax.set_ylabel("gold reward")
    ax.set_title(f"{env_id}: reward against KL (95% intervals over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _curve(folder: Path) -> dict[float, float]:
    from agents.files import read_jsonl

    out: dict[float, float] = {}
    for row in read_jsonl(folder / "metrics.jsonl"):
        if "eval/objective" in row and "oracle/queries_paid" in row:
            out[row["oracle/queries_paid"]] = row["eval/objective"]  # a resume: keep the last
    return out


def queries_plot(env_id: str, agg: dict[str, dict[str, Any]], results: dict[str, list[dict]],
                 runs: str | Path, path: Path) -> Path | None:
    """Objective against queries paid, for the agents that query; offline agents as lines."""
    online = [a for a in agg if agg[a].get("queries_used", {}).get("mean", 0) > 0]
    if not online:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    cmap = plt.get_cmap("tab10")
    for i, a in enumerate(online):
        curves = [_curve(run_dir(runs, env_id, a, r["seed"])) for r in results[a]]
        xs = sorted(set.intersection(*[set(c) for c in curves])) if curves else []
        if not xs:
            continue
        ys = np.array([[c[x] for x in xs] for c in curves])
        mean = ys.mean(0)
        ax.plot(xs, mean, "-o", color=cmap(i % 10), label=f"{a} ({len(curves)} seeds)")
        if len(curves) > 1:
            from agents.zoo.stats import ci95

            half = np.array([ci95(ys[:, j])[1] for j in range(len(xs))])
            ax.fill_between(xs, mean - half, mean + half, color=cmap(i % 10), alpha=0.2)
    offline = sorted((a for a in agg if a not in online and a != "reference"),
                     key=lambda a: -agg[a]["objective"]["mean"])[:3]
    for j, a in enumerate(offline):
        ax.axhline(agg[a]["objective"]["mean"], ls="--", lw=1, color=cmap((len(online) + j) % 10),
                   label=f"{a} (offline, final)")
    any_entry = next(iter(agg.values()))
    if "optimal_objective" in any_entry:
        ax.axhline(any_entry["optimal_objective"]["mean"], color="red", lw=1.5, label="J(pi*)")
    ax.set_xlabel("preference queries paid")
    ax.set_ylabel("objective J (held-out prompts)")
    ax.set_title(f"{env_id}: objective against queries (mean, 95% band)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_all(env_id: str, agg: dict[str, dict[str, Any]], results: dict[str, list[dict]],
             out: Path, runs: str | Path = "runs") -> list[Path]:
    figs = [metrics_plot(env_id, agg, out / "metrics.png"),
            reward_kl_plot(env_id, agg, out / "reward_vs_kl.png")]
    q = queries_plot(env_id, agg, results, runs, out / "objective_vs_queries.png")
    return figs + ([q] if q else [])

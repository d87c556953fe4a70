"""Leaderboard plots (matplotlib, Agg), made to separate agents despite instance variance.

* ``scores.png``: each agent's score per seed (dots) and mean (bar), pi0 at 0 and pi* at 1
  where the score is normalized;
* ``paired.png``: each agent's per-seed difference to pi0 with its 95% t-interval, the IQM
  with its bootstrap interval, and the probability of improving on pi0;
* ``reward_vs_kl.png``: gold reward against KL, per seed *relative to that seed's pi** (exact
  envs) or to pi0 (sampled envs), so instances line up; best-of-n of pi0 and pi* marked;
* ``score_vs_labels.png``: score against the labels used (offline + paid), the online agents'
  curves over their rounds;
* ``metrics.png``: the other metrics per seed;
* ``gold_vs_sqrt_kl.png``: gold reward (solid) and, for agents that learn a reward model,
  their proxy reward (dashed) over training against sqrt(KL) — the axes of Gao et al.
  (2023) on which reward over-optimisation shows as gold rising then falling.

Every agent has its own colour *and* marker, for any number of agents.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from agents.zoo.run import run_dir

__all__ = ["make_all", "style"]

_MARKERS = "osD^vP*Xhp<>"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def style(i: int) -> dict[str, Any]:
    """Colour and marker of the i-th agent: distinct pairs for up to 120 agents."""
    plt = _plt()
    return {"color": plt.get_cmap("tab10")(i % 10), "marker": _MARKERS[(i // 10 + i) % 12]}


def _order(agg: dict[str, dict[str, Any]], key: str) -> list[str]:
    return sorted(agg, key=lambda a: agg[a][key]["mean"])  # best at the top of a barh


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def scores_plot(title: str, agg: dict[str, dict[str, Any]], comp: dict[str, Any],
                path: Path) -> Path:
    plt = _plt()
    key = comp["score"]
    names = _order(agg, key)
    colours = {a: style(i) for i, a in enumerate(sorted(agg))}
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(names) + 1.6))
    for y, a in enumerate(names):
        e = agg[a][key]
        half = 0.0 if math.isnan(e["ci95"]) else e["ci95"]
        ax.barh(y, e["mean"], xerr=half, color=colours[a]["color"], alpha=0.35, capsize=3)
        ax.scatter(e["values"], [y] * len(e["values"]), s=22, zorder=3, edgecolor="black",
                   linewidth=0.5, **colours[a])
    ax.set_yticks(range(len(names)), names)
    if "reference" in agg:  # pi0 where pi0 scores (0 only for the normalized score)
        ax.axvline(agg["reference"][key]["mean"], color="black", lw=1, label="pi0 (mean)")
    if key == "normalized_score":
        ax.axvline(1, color="red", lw=1.5, ls="--", label="pi* (Gibbs optimum)")
    ax.set_xlabel(key.replace("_", " ") + " (dots: seeds; bar: mean ± 95% t-interval)")
    ax.set_title(f"{title}: score per seed")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def paired_plot(title: str, agg: dict[str, dict[str, Any]], comp: dict[str, Any],
                path: Path) -> Path | None:
    names = [a for a in _order(agg, comp["score"]) if "vs_reference" in comp["agents"][a]]
    if not names:
        return None
    plt = _plt()
    colours = {a: style(i) for i, a in enumerate(sorted(agg))}
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.42 * len(names) + 1.8), sharey=True)
    for y, a in enumerate(names):
        c = comp["agents"][a]
        d, q, p = c["vs_reference"], c["iqm"], c["improvement_over_reference"]
        half = 0.0 if math.isnan(d["ci95"]) else d["ci95"]
        axes[0].errorbar(d["mean"], y, xerr=half, capsize=3, linestyle="none", **colours[a])
        axes[1].errorbar(q["iqm"], y, xerr=[[q["iqm"] - q["low"]], [q["high"] - q["iqm"]]],
                         capsize=3, linestyle="none", **colours[a])
        axes[2].errorbar(p["p"], y, xerr=[[p["p"] - p["low"]], [p["high"] - p["p"]]],
                         capsize=3, linestyle="none", **colours[a])
    axes[0].set_yticks(range(len(names)), names)
    axes[0].axvline(0, color="black", lw=1)
    axes[0].set_xlabel(f"{comp['score']} − pi0's, per seed (mean, 95% t)")
    axes[1].set_xlabel(f"IQM of {comp['score']} (95% bootstrap)")
    axes[2].axvline(0.5, color="black", lw=1)
    axes[2].set_xlabel("P(agent > pi0) over runs (95% bootstrap)")
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{title}: paired comparisons")
    return _save(fig, path)


def reward_kl_plot(title: str, agg: dict[str, dict[str, Any]], path: Path) -> Path:
    """Gold reward against KL, per seed relative to that seed's pi* (or pi0)."""
    plt = _plt()
    ref = agg.get("reference") or next(iter(agg.values()))
    exact = "optimal/kl" in ref
    base_kl = ref["optimal/kl"]["by_seed"] if exact else {s: 0.0 for s in ref["gold_reward"]["by_seed"]}
    base_r = (ref["optimal/gold_reward"]["by_seed"] if exact else ref["gold_reward"]["by_seed"])
    fig, ax = plt.subplots(figsize=(8, 5.8))
    ns = sorted(int(k.split("/")[0][8:]) for k in ref if k.startswith("best_of_")
                and k.endswith("/kl"))
    if ns:
        kl = [np.mean([ref[f"best_of_{n}/kl"]["by_seed"][s] - base_kl[s] for s in base_kl])
              for n in ns]
        gr = [np.mean([ref[f"best_of_{n}/gold_reward"]["by_seed"][s] - base_r[s]
                       for s in base_r]) for n in ns]
        ax.plot(kl, gr, "-", color="gray", marker=".", label="best-of-n of pi0 (gold reward)")
        for n, x, y in zip(ns, kl, gr):
            ax.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=(4, -10),
                        fontsize=7, color="gray")
    if exact:
        ax.plot([0], [0], "r*", markersize=18, label="pi* (each seed's)", zorder=6)
    for i, a in enumerate(sorted(agg)):
        e, st = agg[a], style(i)
        seeds = [s for s in e["kl"]["by_seed"] if s in base_kl]
        xs = np.array([e["kl"]["by_seed"][s] - base_kl[s] for s in seeds])
        ys = np.array([e["gold_reward"]["by_seed"][s] - base_r[s] for s in seeds])
        ax.scatter(xs, ys, s=14, alpha=0.35, color=st["color"], marker=st["marker"])
        ax.errorbar(xs.mean(), ys.mean(), xerr=_half(xs), yerr=_half(ys), capsize=3,
                    markersize=8, markeredgecolor="black", label=a, linestyle="none", **st)
    where = "pi*'s" if exact else "pi0's"
    ax.set_xlabel(f"KL(pi || pi0) − {where} on the same seed  [nats]")
    ax.set_ylabel(f"gold reward − {where} on the same seed")
    ax.axhline(0, color="black", lw=0.6)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_title(f"{title}: reward against KL, per seed (small) and mean ± 95% (large)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", ncol=2)
    return _save(fig, path)


def _half(v: np.ndarray) -> float:
    from agents.zoo.stats import ci95

    h = ci95(v)[1]
    return 0.0 if math.isnan(h) else h


def _curve(folder: Path, key: str, offline: float) -> dict[float, float]:
    from agents.files import read_jsonl

    out: dict[float, float] = {}
    for row in read_jsonl(folder / "metrics.jsonl"):
        if f"eval/{key}" in row and "oracle/queries_paid" in row:
            out[offline + row["oracle/queries_paid"]] = row[f"eval/{key}"]  # a resume: the last
    return out


def labels_plot(title: str, agg: dict[str, dict[str, Any]], comp: dict[str, Any],
                results: dict[str, list[dict]], env_id: str, runs: str | Path,
                path: Path) -> Path:
    """Score against labels used: online agents' curves over rounds, the rest as points."""
    plt = _plt()
    key = comp["score"]
    fig, ax = plt.subplots(figsize=(10, 5.2))
    for i, a in enumerate(sorted(agg)):
        st, e = style(i), agg[a]
        labels = e.get("labels", e.get("queries_used"))
        x_end = labels["mean"] if labels else 0.0
        curves = []
        if e.get("queries_used", {}).get("mean", 0) > 0:
            for r in results[a]:
                if r.get("external"):  # trained elsewhere: no curve in the zoo's folders
                    continue
                offline = float(r.get("offline_labels", 0))
                curves.append(_curve(run_dir(runs, env_id, a, r["seed"], r.get("oracle")), key, offline))
        xs = sorted(set.intersection(*[set(c) for c in curves])) if curves and all(curves) else []
        if len(xs) > 1:
            ys = np.array([[c[x] for x in xs] for c in curves])
            ax.plot(xs, ys.mean(0), "-", label=f"{a}", **st)
            if len(curves) > 1:
                half = np.array([_half(ys[:, j]) for j in range(len(xs))])
                ax.fill_between(xs, ys.mean(0) - half, ys.mean(0) + half, color=st["color"],
                                alpha=0.15)
        else:
            ax.errorbar(max(x_end, 1.0), e[key]["mean"], yerr=_half(np.array(e[key]["values"])),
                        capsize=3, linestyle="none", label=a, **st)
    if key == "normalized_score":
        ax.axhline(1, color="red", ls="--", lw=1.2, label="pi*")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(left=0)  # no negative half of the symlog axis
    ax.set_xlabel("labels used (offline pairs learned from + queries paid)")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(f"{title}: {key.replace('_', ' ')} against labels (mean, 95% band)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def metrics_plot(title: str, agg: dict[str, dict[str, Any]], comp: dict[str, Any],
                 path: Path) -> Path:
    plt = _plt()
    cols = [(k, t) for k, t in (("gold_reward", "gold reward"), ("kl", "KL [nats]"),
                                ("objective", "objective J"), ("win_rate", "win rate vs pi0"),
                                ("wall_s", "wall time per run [s, log]"))
            if all(k in e for e in agg.values())]
    names = _order(agg, comp["score"])
    colours = {a: style(i) for i, a in enumerate(sorted(agg))}
    fig, axes = plt.subplots(1, len(cols), figsize=(3.4 * len(cols), 0.38 * len(names) + 1.6),
                             sharey=True, squeeze=False)
    for ax, (key, label) in zip(axes[0], cols):
        for y, a in enumerate(names):
            v = agg[a][key]["values"]
            ax.scatter(v, [y] * len(v), s=16, **colours[a])
            ax.plot([np.mean(v)] * 2, [y - 0.3, y + 0.3], color="black", lw=1.5)
        if key == "wall_s":
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(names)), names)
    fig.suptitle(f"{title}: per seed (dots) and mean (line)")
    return _save(fig, path)


def _trajectory(folder: Path) -> list[tuple[float, float, float]]:
    """(sqrt KL, gold reward, proxy reward or nan) after each evaluated round of a run."""
    from agents.files import read_jsonl

    out = []
    for row in read_jsonl(folder / "metrics.jsonl"):
        if "eval/kl" in row and "eval/gold_reward" in row:
            out.append((math.sqrt(max(row["eval/kl"], 0.0)), row["eval/gold_reward"],
                        row.get("eval/proxy_reward", float("nan"))))
    return out


def overoptimisation_plot(title: str, agg: dict[str, dict[str, Any]],
                          results: dict[str, list[dict]], env_id: str, runs: str | Path,
                          path: Path) -> Path | None:
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12.5, 5.2))
    drawn = proxies = False
    for i, a in enumerate(sorted(agg)):
        trajs = [_trajectory(run_dir(runs, env_id, a, r["seed"], r.get("oracle")))
                 for r in results[a] if not r.get("external")]
        n = min((len(t) for t in trajs), default=0)
        if n < 2:
            continue
        arr = np.array([t[:n] for t in trajs])  # (seeds, rounds, 3)
        st = style(i)
        x = arr[:, :, 0].mean(0)
        ax.plot(x, arr[:, :, 1].mean(0), "-", label=a, **st)
        proxy = arr[:, :, 2]
        keep = np.isfinite(proxy).all(0)  # rounds where the RM existed (not pi0's point)
        if keep.sum() >= 1:
            ax2.plot(x[keep], proxy[:, keep].mean(0), "--", color=st["color"],
                     marker=st["marker"], label=a)
            proxies = True
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("sqrt(KL(pi || pi0))  [sqrt nats]")
    ax.set_ylabel("gold reward of the policy's samples")
    ax.set_title("gold reward over training")
    ax.legend(fontsize=7, loc="best", ncol=2)
    ax2.set_xlabel("sqrt(KL(pi || pi0))  [sqrt nats]")
    ax2.set_ylabel("its learned reward model's score (the RM's own units)")
    ax2.set_title("proxy reward over training" if proxies
                  else "(no agent here learns a reward model)")
    if proxies:
        ax2.legend(fontsize=7, loc="best")
    for a_ in (ax, ax2):
        a_.grid(alpha=0.3)
    fig.suptitle(f"{title}: over-optimisation on Gao et al.'s axes (mean over seeds, one point "
                 "per evaluated round)")
    return _save(fig, path)


def make_all(title: str, env_id: str, agg: dict[str, dict[str, Any]], comp: dict[str, Any],
             results: dict[str, list[dict]], out: Path, runs: str | Path = "runs") -> list[Path]:
    figs = [scores_plot(title, agg, comp, out / "scores.png"),
            paired_plot(title, agg, comp, out / "paired.png"),
            reward_kl_plot(title, agg, out / "reward_vs_kl.png"),
            labels_plot(title, agg, comp, results, env_id, runs, out / "score_vs_labels.png"),
            metrics_plot(title, agg, comp, out / "metrics.png"),
            overoptimisation_plot(title, agg, results, env_id, runs, out / "gold_vs_sqrt_kl.png")]
    return [f for f in figs if f is not None]

"""Leaderboard plots (matplotlib, Agg), made to separate agents despite instance variance.

* ``scores.png``: each agent's score per seed (dots) and mean (bar), pi0 at 0 and pi* at 1
  where the score is normalized;
* ``paired.png``: each agent's per-seed difference to pi0 with its 95% t-interval, the IQM
  with its bootstrap interval, and the probability of improving on pi0;
* ``reward_vs_kl.png``: gold reward against KL, each seed *relative to that seed's pi**
  (exact envs) or to pi0 (sampled envs), so instances line up: each agent's mean with 95%
  intervals both ways, named beside the panel; best-of-n of pi0 and pi* marked; where agents
  crowd, a second panel zooms in on them;
* ``score_vs_labels.png``: score against the labels used (offline + paid, log scale; pi0's
  none at a "0" tick on the left), the online agents' curves over their rounds;
* ``metrics.png``: the other metrics per seed;
* ``gold_vs_sqrt_kl.png``: gold reward (solid) and, for agents that learn a reward model,
  their proxy reward (dashed) over training against sqrt(KL) — the axes of Gao et al.
  (2023) on which reward over-optimisation shows as gold rising then falling.

Every agent of a figure has its own (colour, marker) pair, from a colour-blind-safe palette
(:func:`style`); titles are wrapped to the figure's width.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from agents.zoo.run import run_dir

__all__ = ["make_all", "style"]

# Paul Tol's "muted" scheme (https://personal.sron.nl/~pault/#sec:qualitative), safe for
# colour-blind readers; its pale grey (meant for missing data) is darkened to read on white.
COLOURS = ("#CC6677", "#332288", "#DDCC77", "#117733", "#88CCEE", "#882255", "#44AA99",
           "#999933", "#AA4499", "#777777")
MARKERS = "osD^vP*Xh<>"  # 11 markers, coprime with 10 colours
LINES = ("-", "--", "-.", ":")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def style(i: int, line: bool = False) -> dict[str, Any]:
    """Colour, marker (and with ``line`` the line style) of the i-th agent of a figure.

    Colour i mod 10 and marker i mod 11: as 10 and 11 are coprime, no two of the first 110
    agents share both (Chinese remainder theorem). Agents of one colour also differ in line
    style (i // 10), for curves."""
    out = {"color": COLOURS[i % len(COLOURS)], "marker": MARKERS[i % len(MARKERS)]}
    if line:
        out["linestyle"] = LINES[(i // len(COLOURS)) % len(LINES)]
    return out


def _wrap(text: str, width_in: float, fontsize: float = 12.0) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points (a
    character is at most about 0.6 em wide on average), so no title runs off the figure."""
    return textwrap.fill(text, max(20, int(width_in * 72 / (0.6 * fontsize))))


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
    fig.suptitle(_wrap(f"{title}: score per seed", 7.2))
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
    fig.suptitle(_wrap(f"{title}: paired comparisons", 12.5))
    return _save(fig, path)


def _relative(agg: dict[str, dict[str, Any]]) -> tuple[bool, dict[str, Any], dict, dict]:
    """(exact?, pi0's entry, per-seed KL and gold reward of the point every seed is measured
    from: that seed's pi* on exact envs, its pi0 otherwise)."""
    ref = agg.get("reference") or next(iter(agg.values()))
    exact = "optimal/kl" in ref
    base_kl = ref["optimal/kl"]["by_seed"] if exact else {s: 0.0 for s in ref["gold_reward"]["by_seed"]}
    base_r = ref["optimal/gold_reward"]["by_seed"] if exact else ref["gold_reward"]["by_seed"]
    return exact, ref, base_kl, base_r


def _crowded(pts: dict[str, tuple[float, ...]], span: np.ndarray) -> list[str]:
    """The agents around the most crowded point: those within 5% of the axes' span (each
    way) of the agent with the most such neighbours; none when fewer than 4 crowd there."""
    names = list(pts)
    p = np.array([pts[a][:2] for a in names]) / span
    near = (np.abs(p[:, None] - p[None]) < 0.05).all(-1)
    i = int(near.sum(1).argmax())
    return [names[j] for j in np.flatnonzero(near[i])] if near[i].sum() >= 4 else []


def _label_column(ax: Any, pts: dict[str, tuple[float, ...]], names: list[str],
                  colours: dict[str, dict[str, Any]], aspect: float) -> None:
    """Each name in a column right of ``ax``, joined to its point by a line of the agent's
    colour: no two labels overlap however close the points. Names are matched to the
    column's slots by the shortest total length of line (scipy's assignment solver), which
    in the plane never crosses two lines. ``aspect``: the axes' width over its height."""
    from scipy.optimize import linear_sum_assignment

    if not names:
        return
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    xy = np.array([((pts[a][0] - x0) / (x1 - x0) * aspect, (pts[a][1] - y0) / (y1 - y0))
                   for a in names])  # axes fractions, x scaled to the height's unit
    slots = (np.arange(len(names)) + 0.5) / len(names)
    cost = np.hypot(xy[:, :1] - 1.03 * aspect, xy[:, 1:] - slots[None, :])
    rows, cols = linear_sum_assignment(cost)
    size = min(8.0, 260.0 / len(names))
    for r, c in zip(rows, cols):
        a = names[r]
        ax.annotate(a, xy=pts[a][:2], xytext=(1.03, slots[c]), textcoords="axes fraction",
                    fontsize=size, va="center", annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "lw": 0.7, "shrinkB": 4,
                                "color": colours[a]["color"]})


def reward_kl_plot(title: str, agg: dict[str, dict[str, Any]], path: Path) -> Path:
    """Gold reward against KL: each agent's mean over seeds with 95% t-intervals both ways,
    every seed taken relative to that seed's pi* (or pi0) so instances line up. Agents are
    labelled directly; where four or more crowd, a second panel zooms in on them."""
    from matplotlib.colors import to_rgba

    plt = _plt()
    exact, ref, base_kl, base_r = _relative(agg)
    colours = {a: style(i) for i, a in enumerate(sorted(agg))}
    pts: dict[str, tuple[float, float, float, float]] = {}  # agent: (x, y, x half, y half)
    for a in sorted(agg):
        seeds = [s for s in agg[a]["kl"]["by_seed"] if s in base_kl]
        xs = np.array([agg[a]["kl"]["by_seed"][s] - base_kl[s] for s in seeds])
        ys = np.array([agg[a]["gold_reward"]["by_seed"][s] - base_r[s] for s in seeds])
        pts[a] = (float(xs.mean()), float(ys.mean()), _half(xs), _half(ys))
    ns = sorted(int(k.split("/")[0][8:]) for k in ref if k.startswith("best_of_")
                and k.endswith("/kl"))
    bon = np.array([(np.mean([ref[f"best_of_{n}/kl"]["by_seed"][s] - base_kl[s] for s in base_kl]),
                     np.mean([ref[f"best_of_{n}/gold_reward"]["by_seed"][s] - base_r[s]
                              for s in base_r])) for n in ns]).reshape(-1, 2)
    every = np.array([(x + sx * dx, y + sy * dy) for x, y, dx, dy in pts.values()
                      for sx in (-1, 1) for sy in (-1, 1)] + [(0.0, 0.0)] + bon.tolist())
    crowd = _crowded(pts, np.maximum(np.ptp(every, axis=0), 1e-12))
    fig, axes = plt.subplots(1, 2 if crowd else 1, figsize=(15 if crowd else 8.5, 6.2),
                             squeeze=False)
    aspect = (5.6 if crowd else 6.5) / 5.0  # each panel's width over its height, about
    for ax in axes[0]:
        if ns:
            ax.plot(bon[:, 0], bon[:, 1], ":", color="black", marker=".", lw=1,
                    label="best-of-n of pi0")
            for n, (x, y) in zip(ns, bon):
                ax.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=(4, -10),
                            fontsize=7, color="0.3")
        if exact:
            ax.plot([0], [0], "*", color="#CC3311", markersize=16, label="pi* (each seed's)",
                    zorder=6, markeredgecolor="black", markeredgewidth=0.5)
        for a, (x, y, dx, dy) in pts.items():
            ax.errorbar(x, y, xerr=dx, yerr=dy, capsize=2, markersize=7, linestyle="none",
                        markeredgecolor="black", markeredgewidth=0.6, elinewidth=0.9,
                        ecolor=to_rgba(colours[a]["color"], 0.55), zorder=4, **colours[a])
        ax.axhline(0, color="black", lw=0.6)
        ax.axvline(0, color="black", lw=0.6)
        ax.grid(alpha=0.3)
    where = "pi*'s" if exact else "pi0's"
    for ax in axes[0]:
        ax.set_xlabel(f"KL(pi || pi0) − {where} on the same seed  [nats]")
    axes[0][0].set_ylabel(f"gold reward − {where} on the same seed")
    axes[0][0].legend(fontsize=8, loc="upper left")  # the frontier rises left to right
    if crowd:
        box = np.array([pts[a][:2] for a in crowd])
        lo, hi = box.min(0), box.max(0)
        pad = np.maximum(0.12 * (hi - lo), 0.01 * np.ptp(every, axis=0))
        lo, hi = lo - pad, hi + pad
        zoom = axes[0][1]
        zoom.set_xlim(lo[0], hi[0])
        zoom.set_ylim(lo[1], hi[1])
        zoom.set_title("zoom on the dashed box", fontsize=10)
        inside = [a for a, (x, y, _, _) in pts.items()
                  if lo[0] <= x <= hi[0] and lo[1] <= y <= hi[1]]
        axes[0][0].add_patch(plt.Rectangle(tuple(lo), *(hi - lo), fill=False, ls="--",
                                           ec="0.3", lw=0.8, zorder=7))
        _label_column(zoom, pts, inside, colours, aspect)
        _label_column(axes[0][0], pts, [a for a in pts if a not in inside], colours, aspect)
    else:
        _label_column(axes[0][0], pts, list(pts), colours, aspect)
    fig.suptitle(_wrap(f"{title}: gold reward against KL, per agent: mean over seeds ± 95% "
                       "t-interval both ways", 14 if crowd else 7.8))
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
    """Score against labels used: online agents' curves over rounds, the rest as points.

    The label axis is logarithmic from the smallest positive count; agents that used no
    label (pi0) sit at a "0" tick at its left edge. Nothing is drawn at negative counts."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    plt = _plt()
    key = comp["score"]
    drawn = []  # (agent's index, agent, labels, mean score, its 95% half-width, curve?)
    for i, a in enumerate(sorted(agg)):
        e = agg[a]
        labels = e.get("labels", e.get("queries_used"))
        curves = []
        if e.get("queries_used", {}).get("mean", 0) > 0:
            for r in results[a]:
                if r.get("external"):  # trained elsewhere: no curve in the zoo's folders
                    continue
                offline = float(r.get("offline_labels", 0))
                curves.append(_curve(run_dir(runs, env_id, a, r["seed"], r.get("oracle")), key, offline))
        n = min((len(c) for c in curves), default=0)
        if n > 1:  # round by round (seeds' offline counts may differ: x is their mean)
            rounds = [sorted(c)[:n] for c in curves]
            ys = np.array([[c[x] for x in xs] for c, xs in zip(curves, rounds)])
            half = (np.array([_half(ys[:, j]) for j in range(n)]) if len(curves) > 1
                    else np.zeros(n))
            drawn.append((i, a, np.mean(rounds, axis=0), ys.mean(0), half, True))
        else:
            drawn.append((i, a, np.array([labels["mean"] if labels else 0.0]),
                          np.array([e[key]["mean"]]), np.array([_half(np.array(e[key]["values"]))]),
                          False))
    positive = [x for d in drawn for x in d[2] if x > 0]
    smallest, largest = (min(positive), max(positive)) if positive else (1.0, 1.0)
    zero = smallest / 3  # where "0 labels" is drawn, left of every positive count
    fig, ax = plt.subplots(figsize=(10, 5.2))
    for i, a, xs, ys, half, curve in drawn:
        x = np.where(xs > 0, xs, zero)
        if curve:
            ax.plot(x, ys, label=a, markeredgecolor="black", markeredgewidth=0.4, **style(i, True))
            ax.fill_between(x, ys - half, ys + half, color=style(i)["color"], alpha=0.15)
        else:
            ax.errorbar(x, ys, yerr=half, capsize=3, linestyle="none", label=a,
                        markeredgecolor="black", markeredgewidth=0.4, **style(i))
    if key == "normalized_score":
        ax.axhline(1, color="#CC3311", ls="--", lw=1.2, label="pi*")
        ax.axhline(0, color="black", lw=0.8, label="pi0")
    ax.set_xscale("log")
    ax.set_xlim(zero / 1.7, largest * 1.7)  # margins: no marker touches an edge
    ax.margins(y=0.08)
    decades = range(math.floor(math.log10(zero)), math.floor(math.log10(largest * 1.7)) + 1)
    steps = (1, 2, 5) if largest / smallest < 100 else (1,)  # a narrow range: more ticks
    ticks = [m * 10.0**k for k in decades for m in steps if zero * 2 < m * 10.0**k < largest * 1.7]
    ax.xaxis.set_major_locator(FixedLocator([zero] + ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: "0" if x == zero else f"{x:,.0f}"
                                               if x >= 1 else f"{x:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("labels used (offline pairs learned from + queries paid; log scale, none at "
                  "the left)")
    ax.set_ylabel(key.replace("_", " "))
    fig.suptitle(_wrap(f"{title}: {key.replace('_', ' ')} against labels (mean, 95% band)", 9.5))
    ax.grid(alpha=0.3)
    handles = dict(zip(*ax.get_legend_handles_labels()[::-1]))  # agents by name, then pi*, pi0
    names = sorted(handles, key=lambda n: (n not in agg, n))
    ax.legend([handles[n] for n in names], names, fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
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
    fig.suptitle(_wrap(f"{title}: per seed (dots) and mean (line)", 3.4 * len(cols) - 0.4))
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
    fig.suptitle(_wrap(f"{title}: over-optimisation on Gao et al.'s axes (mean over seeds, one "
                       "point per evaluated round)", 12))
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

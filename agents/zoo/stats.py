"""Statistics over seeds for leaderboards.

A seed changes the whole problem instance (prompts, pi0, theta*), so two agents' means
can differ by instance variance alone. Comparisons are therefore **paired by seed**: for
each agent, the per-seed difference to pi0 (``reference``) and to the best agent, with a
95% Student-t interval (:func:`paired`). Aggregates in the manner of rliable (Agarwal et
al., NeurIPS 2021, "Deep RL at the edge of the statistical precipice"): the interquartile
mean (IQM) with a percentile bootstrap interval over seeds (one task, so the stratified
bootstrap is the plain one), and the probability of improvement P(X > Y) + P(X = Y)/2 over
pairs of runs, with its bootstrap interval (:func:`iqm`, :func:`probability_of_improvement`).

The numbers are scipy's: the t-intervals ``ttest_1samp`` and ``ttest_rel``'s
``confidence_interval()``, the IQM ``trim_mean(x, 0.25)`` (rliable's cut), the probability
of improvement ``mannwhitneyu``'s U over the number of pairs (ties count half), the
intervals ``bootstrap(method="percentile")``, seeded. rliable itself is not a dependency:
it would pull in seaborn and arch for these few lines.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from rlhf_env.errors import InvalidArgumentError

__all__ = ["METRICS", "score_key", "ci95", "paired", "iqm", "probability_of_improvement",
           "aggregate", "comparisons"]

# (key in eval.json, column title, digits)
METRICS = (("normalized_score", "normalized score", 3), ("objective", "objective J", 3),
           ("gold_reward", "gold reward", 3), ("kl", "KL", 3), ("win_rate", "win rate", 3),
           ("rm_agreement", "RM agreement", 3), ("labels", "labels", 0),
           ("queries_used", "queries", 0), ("wall_s", "wall s", 1))
BOOTSTRAP = 2000


def score_key(agg: dict[str, dict[str, Any]]) -> str:
    """The score leaderboards rank by: the normalized score on exact envs (exact J* and J0),
    the objective J elsewhere (a Monte Carlo normalized score divides by a noisy, biased J*
    estimate, so it is reported beside J, not used to rank)."""
    exact = all("optimal/kl" in e and "normalized_score" in e for e in agg.values())
    return "normalized_score" if exact else "objective"


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn`` without scipy's RuntimeWarnings on zero-variance samples (two agents equal on
    every seed, a count such as labels): their interval is the point, which scipy returns."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def ci95(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t interval); the half-width is nan for one value."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    ci = _quiet(sps.ttest_1samp, v, 0.0).confidence_interval(0.95)
    return float(v.mean()), float((ci.high - ci.low) / 2)


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """Mean and 95% t interval of a − b over the seeds both have (by seed)."""
    seeds = sorted(set(a) & set(b))
    diff = [a[s] - b[s] for s in seeds]
    if not diff:
        return {"mean": float("nan"), "ci95": float("nan"), "low": float("nan"),
                "high": float("nan"), "seeds": []}
    mean = float(np.mean(diff))
    if len(diff) < 2:
        low = high = float("nan")
    else:
        ci = _quiet(sps.ttest_rel, [a[s] for s in seeds], [b[s] for s in seeds]
                    ).confidence_interval(0.95)
        low, high = float(ci.low), float(ci.high)
    return {"mean": mean, "ci95": (high - low) / 2, "low": low, "high": high,
            "seeds": seeds, "values": diff}


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Any, seed: int) -> tuple[float, float]:
    """95% percentile-bootstrap interval (``BOOTSTRAP`` resamples of each sample)."""
    ci = sps.bootstrap(data, statistic, n_resamples=BOOTSTRAP, vectorized=True, paired=False,
                       method="percentile", confidence_level=0.95,
                       rng=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


def _iqm(v: np.ndarray, axis: int = -1) -> np.ndarray:
    return sps.trim_mean(v, 0.25, axis=axis)  # int(n/4) values off each end, as rliable


def iqm(values: Sequence[float], seed: int = 0) -> dict[str, float]:
    """Interquartile mean and its 95% percentile-bootstrap interval over seeds (one value:
    the interval is that value)."""
    v = np.asarray(values, dtype=np.float64)
    point = float(_iqm(v))
    low, high = _bootstrap((v,), _iqm, seed) if len(v) > 1 else (point, point)
    return {"iqm": point, "low": low, "high": high}


def _poi(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """P(X > Y) + P(X = Y)/2: the Mann-Whitney U of x over the number of pairs."""
    u = sps.mannwhitneyu(x, y, axis=axis, method="asymptotic").statistic
    return u / (x.shape[axis] * y.shape[axis])


def probability_of_improvement(x: Sequence[float], y: Sequence[float], seed: int = 0
                               ) -> dict[str, float]:
    """P(X > Y) + P(X = Y)/2 over pairs of runs, with a 95% percentile-bootstrap interval
    (x and y resampled independently; a one-run sample is held fixed, scipy resamples only
    samples of two or more)."""
    xv, yv = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    point = float(_poi(xv, yv))
    if len(xv) > 1 and len(yv) > 1:
        low, high = _bootstrap((xv, yv), _poi, seed)
    elif len(xv) > 1:
        low, high = _bootstrap((xv,), lambda s, axis=-1: _poi(s, yv, axis), seed)
    elif len(yv) > 1:
        low, high = _bootstrap((yv,), lambda s, axis=-1: _poi(xv, s, axis), seed)
    else:
        low = high = point
    return {"p": point, "low": low, "high": high}


def aggregate(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per agent and metric: mean, 95% half-width and the per-seed values (and seeds)."""
    out: dict[str, dict[str, Any]] = {}
    for a, rows in results.items():
        if not rows:
            continue
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in rows]}
        keys = {k for r in rows for k, v in r.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for key in sorted(keys - {"seed"}):
            pairs = [(r["seed"], float(r[key])) for r in rows if key in r]
            mean, half = ci95([v for _, v in pairs])
            entry[key] = {"mean": mean, "ci95": half, "values": [v for _, v in pairs],
                          "by_seed": {s: v for s, v in pairs}}
        out[a] = entry
    return out


def comparisons(agg: dict[str, dict[str, Any]], versus: Sequence[str] = ()) -> dict[str, Any]:
    """Paired differences to pi0, to the best agent and to each agent in ``versus``, IQM and
    probability of improvement, on the leaderboard's score (:func:`score_key`).

    ``versus`` names baselines of the reader's choosing (say the offline MLE at equal labels);
    each agent gets ``vs_<name>`` = the per-seed difference to it, over their common seeds."""
    key = score_key(agg)
    best = max(agg, key=lambda a: agg[a][key]["mean"])
    missing = [v for v in versus if v not in agg]
    if missing:
        raise InvalidArgumentError(
            f"cannot compare with {missing}: not on this leaderboard (agents: {sorted(agg)})")
    out: dict[str, Any] = {"score": key, "best": best, "versus": list(versus), "agents": {}}
    for a, e in agg.items():
        by_seed = e[key]["by_seed"]
        row: dict[str, Any] = {"iqm": iqm(e[key]["values"])}
        if "reference" in agg and a != "reference":
            ref = agg["reference"][key]
            row["vs_reference"] = paired(by_seed, ref["by_seed"])
            row["improvement_over_reference"] = probability_of_improvement(
                e[key]["values"], ref["values"])
        if a != best:
            row["vs_best"] = paired(by_seed, agg[best][key]["by_seed"])
            row["improvement_over_best"] = probability_of_improvement(
                e[key]["values"], agg[best][key]["values"])
        for v in versus:
            if a != v:
                row[f"vs_{v}"] = paired(by_seed, agg[v][key]["by_seed"])
        out["agents"][a] = row
    return out

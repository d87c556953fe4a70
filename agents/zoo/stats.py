"""Statistics over seeds for leaderboards: means with 95% t-intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["METRICS", "ci95", "aggregate"]

# (key in eval.json, column title, digits)
METRICS = (("normalized_score", "normalized score", 3), ("objective", "objective J", 3),
           ("gold_reward", "gold reward", 3), ("kl", "KL", 3), ("win_rate", "win rate", 3),
           ("queries_used", "queries", 0), ("wall_s", "wall s", 1))
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086)


def ci95(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t interval); the half-width is nan for one value."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    t = _T975[len(v) - 2] if len(v) - 1 <= len(_T975) else 1.96 + 2.4 / (len(v) - 1)
    return float(v.mean()), float(t * v.std(ddof=1) / math.sqrt(len(v)))


def aggregate(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per agent and metric: mean, 95% half-width and the per-seed values."""
    out: dict[str, dict[str, Any]] = {}
    for a, rows in results.items():
        if not rows:
            continue
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in rows]}
        for key in sorted({k for r in rows for k in r if isinstance(r[k], (int, float))}):
            vals = [float(r[key]) for r in rows if key in r]
            mean, half = ci95(vals)
            entry[key] = {"mean": mean, "ci95": half, "values": vals}
        out[a] = entry
    return out


